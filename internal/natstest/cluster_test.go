package natstest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

// binDir holds the nats-server binary BuildServer builds once for this test binary.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dronelink-natstest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(code)
	}))
}

// TestStartCluster: a client of any one node learns every other node when it connects;
// a frozen node answers nothing; a killed node's clients move to another node; Close
// leaves no process and no goroutine behind (TestMain checks the goroutines).
func TestStartCluster(t *testing.T) {
	bin, err := BuildServer(binDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := StartCluster(ctx, bin, t.TempDir(), 3, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	for i, n := range c.Nodes {
		nc, err := nats.Connect(n.URL)
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		if got := c.Index(nc.ConnectedUrl()); got != i {
			t.Errorf("%s: connected to %q, node %d", n.Name, nc.ConnectedUrl(), got)
		}
		// The first INFO of the connection lists the others.
		discovered := nc.DiscoveredServers()
		nc.Close()
		for j, o := range c.Nodes {
			if j != i && !slices.Contains(discovered, o.URL) {
				t.Errorf("a client of %s did not learn %s (%s) on connecting: %v", n.Name, o.Name, o.URL, discovered)
			}
		}
	}

	reconnected := make(chan string, 1)
	nc, err := nats.Connect(c.Nodes[0].URL, nats.ReconnectWait(10*time.Millisecond), nats.MaxReconnects(-1),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			select {
			case reconnected <- nc.ConnectedUrl():
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	if err := c.Freeze(0); err != nil {
		t.Fatal(err)
	}
	// The kernel stops the process a moment after the signal: wait until /proc says so
	// (another process's state, with nothing to wait on), then a frozen server cannot
	// answer a ping, however long the flush waits.
	for !stopped(t, c.Nodes[0].cmd.Process.Pid) {
		select {
		case <-ctx.Done():
			t.Fatal("node 0 not stopped")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := nc.FlushTimeout(100 * time.Millisecond); err == nil {
		t.Error("a frozen node answered a ping")
	}

	c.Kill(0)
	select {
	case url := <-reconnected:
		if i := c.Index(url); i != 1 && i != 2 {
			t.Errorf("reconnected to %q, node %d", url, i)
		}
	case <-ctx.Done():
		t.Fatalf("the client did not reconnect to another node\n%s", c.Logs())
	}
	if !strings.Contains(c.Logs(), "--- n1") {
		t.Error("the logs do not name n1")
	}
}

// stopped reports whether process pid is stopped by a signal (state T in /proc).
func stopped(t *testing.T, pid int) bool {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ...: comm may hold spaces, the state follows the last ')'.
	rest := string(data[strings.LastIndexByte(string(data), ')')+1:])
	return strings.HasPrefix(strings.TrimSpace(rest), "T")
}
