package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// netnsTools reports why the real-kernel-loss test cannot run here, or "".
func netnsTools() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not installed (apt-get install iproute2 nftables)"
		}
	}
	return ""
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The drone and an operator in two network namespaces joined by a veth pair, with the
// kernel dropping a random 20% of their UDP datagrams each way (nftables numgen): every
// command is acknowledged and executed exactly once, and telemetry gets through.
func TestRealKernelLoss(t *testing.T) {
	if why := netnsTools(); why != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("the real-kernel-loss test cannot run on CI: %s", why)
		}
		t.Skipf("SKIPPED real kernel loss test: %s", why)
	}
	id := strconv.Itoa(os.Getpid() % 10000)
	droneNS, opNS := "dl-drone-"+id, "dl-op-"+id
	vd, vo := "vd"+id, "vo"+id
	sh(t, "ip", "netns", "add", droneNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", droneNS).Run() })
	sh(t, "ip", "netns", "add", opNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", opNS).Run() })
	sh(t, "ip", "link", "add", vd, "type", "veth", "peer", "name", vo)
	sh(t, "ip", "link", "set", vd, "netns", droneNS)
	sh(t, "ip", "link", "set", vo, "netns", opNS)
	// Test hosts in namespaces this test made: these addresses exist only inside them.
	droneIP, opIP := "10.200.0.1", "10.200.0.2"
	sh(t, "ip", "-n", droneNS, "addr", "add", droneIP+"/24", "dev", vd)
	sh(t, "ip", "-n", opNS, "addr", "add", opIP+"/24", "dev", vo)
	for _, ns := range []string{droneNS, opNS} {
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "-n", droneNS, "link", "set", vd, "up")
	sh(t, "ip", "-n", opNS, "link", "set", vo, "up")
	ruleset := `table inet lossy {
	chain in { type filter hook input priority 0; udp dport 5000 numgen random mod 100 < 20 counter drop; }
	chain out { type filter hook output priority 0; udp sport 5000 numgen random mod 100 < 20 counter drop; }
}`
	rules := filepath.Join(t.TempDir(), "lossy.nft")
	writeFile(t, rules, ruleset)
	sh(t, "ip", "netns", "exec", droneNS, "nft", "-f", rules)

	f := newFleet(t)
	daemon := exec.Command("ip", "netns", "exec", droneNS, filepath.Join(binDir, "dronelinkd"), "--listen", droneIP+":5000",
		"--key", f.path("drone.key"), "--psk", f.path("psk"), "--users", f.path("users"), "--telemetry-in", "127.0.0.1:14601")
	var mu sync.Mutex
	var dout, derr strings.Builder
	daemon.Stdout, daemon.Stderr = lockedBuilder{&mu, &dout}, lockedBuilder{&mu, &derr}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { daemon.Process.Signal(syscall.SIGTERM); daemon.Wait() })
	waitFor(t, "the daemon in its namespace", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(derr.String(), "dronelinkd started")
	})

	const commands = 10
	for i := range commands {
		args := []string{"netns", "exec", opNS, filepath.Join(binDir, "dronelink"), "send", "--drone", droneIP + ":5000",
			"--drone-pub", f.path("drone.key.pub"), "--key", f.path("alice.key"), "--psk", f.path("psk"), "--user", "alice",
			"--password-file", f.path("alice.pw"), "--timeout", "60s", fmt.Sprintf("kernel-loss command %d", i)}
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("command %d over 20%% kernel loss: %v\n%s", i, err, out)
		}
	}
	mu.Lock()
	printed := dout.String()
	mu.Unlock()
	for i := range commands {
		if n := strings.Count(printed, fmt.Sprintf(": kernel-loss command %d\n", i)); n != 1 {
			t.Errorf("command %d executed %d times", i, n)
		}
	}
	listing := sh(t, "ip", "netns", "exec", droneNS, "nft", "list", "ruleset")
	dropped := 0
	for _, m := range regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(listing, -1) {
		n, _ := strconv.Atoi(m[1])
		dropped += n
	}
	if dropped == 0 {
		t.Fatalf("the kernel dropped nothing:\n%s", listing)
	}
	t.Logf("%d commands, each executed once, while the kernel dropped %d datagrams", commands, dropped)
}

type lockedBuilder struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedBuilder) Write(p []byte) (int, error) {
	transcript.output(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
