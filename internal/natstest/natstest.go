// Package natstest runs real NATS servers for the relay's tests and benchmark: one embedded
// in the test process (package server of nats-server, the same code as the binary), or a
// cluster of nats-server processes on loopback, built from the module this repository pins,
// whose nodes a test can kill.
package natstest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartEmbedded starts an in-process NATS server on a free loopback port. conf is the text
// of a nats-server configuration (accounts, users, permissions; "" for none); its listen
// address is overridden. Shutdown stops it.
func StartEmbedded(dir, conf string) (*server.Server, error) {
	opts := &server.Options{}
	if conf != "" {
		path := filepath.Join(dir, "embedded.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		var err error
		if opts, err = server.ProcessConfigFile(path); err != nil {
			return nil, fmt.Errorf("natstest: config: %w", err)
		}
	}
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.HTTPPort = 0
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natstest: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("natstest: the embedded server did not start within 10 s")
	}
	return s, nil
}

var (
	buildMu   sync.Mutex
	buildPath string // the last binary built, if any
)

// BuildServer builds the nats-server binary of the version go.mod pins into dir and
// returns its path. Later calls return the same binary while it exists, and build again
// into their own dir once it is gone (the dir of the first call may have been a test's
// t.TempDir(), removed when that test ended). The go build cache makes a build quick after
// the first on a machine.
func BuildServer(dir string) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildPath != "" {
		if _, err := os.Stat(buildPath); err == nil {
			return buildPath, nil
		}
	}
	path := filepath.Join(dir, "nats-server")
	cmd := exec.Command("go", "build", "-o", path, "github.com/nats-io/nats-server/v2")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("natstest: go build nats-server: %v\n%s", err, out)
	}
	buildPath = path
	return path, nil
}

// Node is one nats-server process of a Cluster.
type Node struct {
	Name    string
	URL     string // nats://127.0.0.1:PORT for clients
	monitor string // http://127.0.0.1:PORT
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	log     *lockedBuffer
}

// Cluster is a cluster of nats-server processes on loopback.
type Cluster struct {
	Nodes []*Node
}

// StartCluster starts n nats-server processes of bin (BuildServer) with configuration
// files in dir, each routing to all the others, and waits until every node has a route to
// every other. auth is configuration text added to every node (accounts, users and their
// permissions; "" for none). Close stops them.
func StartCluster(ctx context.Context, bin, dir string, n int, auth string) (*Cluster, error) {
	ports, err := freePorts(3 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+1]))
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
cluster {
  name: dronelink-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
%s
`, name, ports[3*i], ports[3*i+2], ports[3*i+1], strings.Join(routes, ", "), auth)
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			c.Close()
			return nil, err
		}
		node := &Node{
			Name:    name,
			URL:     fmt.Sprintf("nats://127.0.0.1:%d", ports[3*i]),
			monitor: fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+2]),
			cmd:     exec.Command(bin, "-c", path),
			done:    make(chan struct{}),
			log:     &lockedBuffer{},
		}
		node.cmd.Stdout = node.log
		stderr, err := node.cmd.StderrPipe()
		if err != nil {
			c.Close()
			return nil, err
		}
		if err := node.cmd.Start(); err != nil {
			c.Close()
			return nil, fmt.Errorf("natstest: start %s: %w", name, err)
		}
		ready := make(chan struct{})
		go node.readLog(stderr, ready)
		c.Nodes = append(c.Nodes, node)
		select {
		case <-ready:
		case <-node.done:
			c.Close()
			return nil, fmt.Errorf("natstest: %s exited at start:\n%s", name, node.log.String())
		case <-ctx.Done():
			c.Close()
			return nil, fmt.Errorf("natstest: %s not ready: %w\n%s", name, ctx.Err(), node.log.String())
		}
	}
	if err := c.waitRoutes(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// readLog copies the node's log (nats-server logs to standard error) and closes ready at
// "Server is ready", and done when the process has exited.
func (n *Node) readLog(r io.Reader, ready chan struct{}) {
	sc := bufio.NewScanner(r)
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		n.log.Write([]byte(line + "\n"))
		if !signalled && strings.Contains(line, "Server is ready") {
			close(ready)
			signalled = true
		}
	}
	_ = n.cmd.Wait()
	close(n.done)
}

// waitRoutes waits until every node reports a route to every other. The routes are state
// of other processes with no notification to wait on, so this asks each node's monitoring
// endpoint (/routez) every 20 ms until ctx ends.
func (c *Cluster) waitRoutes(ctx context.Context) error {
	want := len(c.Nodes) - 1
	for _, n := range c.Nodes {
		for {
			names, err := n.routeNames(ctx)
			if err == nil && len(names) >= want {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("natstest: %s has routes to %v, want %d others: %w", n.Name, names, want, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// routeNames are the distinct servers the node has a route to.
func (n *Node) routeNames(ctx context.Context) ([]string, error) {
	var rz server.Routez
	if err := n.Monitor(ctx, "/routez", &rz); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var names []string
	for _, r := range rz.Routes {
		if !seen[r.RemoteName] {
			seen[r.RemoteName] = true
			names = append(names, r.RemoteName)
		}
	}
	return names, nil
}

// Monitor asks the node's HTTP monitoring endpoint for path ("/varz", "/connz?state=any",
// "/routez") and decodes its JSON answer into v (server.Varz, server.Connz, ...).
func (n *Node) Monitor(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.monitor+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("natstest: %s%s: %s", n.monitor, path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("natstest: %s%s: %w", n.monitor, path, err)
	}
	return nil
}

// PID is the node's process id (its CPU time is in /proc/PID/stat).
func (n *Node) PID() int { return n.cmd.Process.Pid }

// URLs are the client URLs of every node.
func (c *Cluster) URLs() []string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL
	}
	return urls
}

// Index is the index of the node whose client URL is url (as a client reports it), or -1.
func (c *Cluster) Index(url string) int {
	for i, n := range c.Nodes {
		if n.URL == url {
			return i
		}
	}
	return -1
}

// Kill kills node i with SIGKILL, as a crash or power loss would, and waits until it has
// exited.
func (c *Cluster) Kill(i int) {
	n := c.Nodes[i]
	if n.cmd.Process != nil {
		_ = n.cmd.Process.Kill()
	}
	<-n.done
}

// Logs are the nodes' logs, for a failing test's message.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "--- %s (%s)\n%s", n.Name, n.URL, n.log.String())
	}
	return b.String()
}

// Close kills every node still running.
func (c *Cluster) Close() {
	for i, n := range c.Nodes {
		if n.cmd.Process != nil {
			c.Kill(i)
		}
	}
}

// freePorts reserves n distinct loopback ports by listening on port 0, then frees them for
// the servers. Another process could take one in between; the server would then fail to
// start and say so.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// lockedBuffer is a log buffer written by the reader goroutine and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
