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
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	// Without symbol table and DWARF the link takes half the time (stack traces stay).
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", path, "github.com/nats-io/nats-server/v2")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("natstest: go build nats-server: %v\n%s", err, out)
	}
	buildPath = path
	return path, nil
}

// Node is one nats-server process of a Cluster.
type Node struct {
	Name    string
	URL     string // nats://127.0.0.1:PORT for clients, as a client reports it
	route   string // nats-route://127.0.0.1:PORT for the other nodes
	monitor string // http://127.0.0.1:PORT
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	log     *lockedBuffer
}

// Cluster is a cluster of nats-server processes on loopback.
type Cluster struct {
	Nodes []*Node
}

// checkAuth parses the auth text of StartCluster and refuses what StartCluster writes
// itself into each node's configuration (a listen address of the auth text's own would
// move a node, or clash on every node but the first).
func checkAuth(dir, auth string) error {
	if auth == "" {
		return nil
	}
	path := filepath.Join(dir, "auth.conf")
	if err := os.WriteFile(path, []byte(auth), 0o600); err != nil {
		return err
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return fmt.Errorf("natstest: auth text: %w", err)
	}
	var owned []string
	if opts.Host != "" || opts.Port != 0 {
		owned = append(owned, "listen")
	}
	if opts.ServerName != "" {
		owned = append(owned, "server_name")
	}
	if opts.HTTPHost != "" || opts.HTTPPort != 0 || opts.HTTPSPort != 0 {
		owned = append(owned, "http")
	}
	if opts.Cluster.Name != "" || opts.Cluster.Host != "" || opts.Cluster.Port != 0 || len(opts.Routes) > 0 {
		owned = append(owned, "cluster")
	}
	if len(owned) > 0 {
		return fmt.Errorf("natstest: the auth text sets %s, which StartCluster sets for each node: remove it", strings.Join(owned, ", "))
	}
	return nil
}

// StartCluster starts n nats-server processes of bin (BuildServer) with configuration
// files in dir, each routing to all the others, and waits until every node has a route to
// every other and tells its clients about every other (so a client that connects to one
// node can move to the others when it fails). auth is configuration text added to every
// node (accounts, users and their permissions, limits; "" for none); it must not set what
// StartCluster sets: listen, server_name, http, cluster. Every node listens on ports the
// system chooses (no port is reserved and freed, which another process could take
// meanwhile). Close stops them.
func StartCluster(ctx context.Context, bin, dir string, n int, auth string) (*Cluster, error) {
	if err := checkAuth(dir, auth); err != nil {
		return nil, err
	}
	c := &Cluster{}
	var routes []string
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		// Each node routes to the ones started before it: with n nodes, every pair has a
		// route that one of them configured.
		var routesConf string
		if len(routes) > 0 {
			routesConf = fmt.Sprintf("  routes: [%s]\n", strings.Join(routes, ", "))
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:-1
http: 127.0.0.1:-1
cluster {
  name: dronelink-test
  listen: 127.0.0.1:-1
%s}
%s
`, name, routesConf, auth)
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			c.Close()
			return nil, err
		}
		node := &Node{
			Name: name,
			cmd:  exec.Command(bin, "-c", path),
			done: make(chan struct{}),
			log:  &lockedBuffer{},
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
		routes = append(routes, node.route)
	}
	if err := c.waitRoutes(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Log lines that give a node's addresses (the system chose the ports).
const (
	logClients = "Listening for client connections on "
	logRoutes  = "Listening for route connections on "
	logMonitor = "Starting http monitor on "
)

// readLog copies the node's log (nats-server logs to standard error), sets the node's
// addresses from it and closes ready once it has all three (the route listener starts
// after "Server is ready"), and closes done when the process has exited.
func (n *Node) readLog(r io.Reader, ready chan struct{}) {
	sc := bufio.NewScanner(r)
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		n.log.Write([]byte(line + "\n"))
		if signalled {
			continue
		}
		if _, addr, ok := strings.Cut(line, logClients); ok {
			n.URL = "nats://" + addr
		} else if _, addr, ok := strings.Cut(line, logRoutes); ok {
			n.route = "nats-route://" + addr
		} else if _, addr, ok := strings.Cut(line, logMonitor); ok {
			n.monitor = "http://" + addr
		}
		if n.URL != "" && n.route != "" && n.monitor != "" {
			close(ready) // the addresses are written before: the reader of ready sees them
			signalled = true
		}
	}
	_, _ = io.Copy(io.Discard, r) // a line too long for the scanner: keep the pipe flowing
	_ = n.cmd.Wait()
	close(n.done)
}

// monitorClient asks the nodes' monitoring endpoints; it keeps no idle connection (nor its
// goroutines) to a node after the question, and shares no pool with the caller's.
var monitorClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// waitRoutes waits until every node reports a route to every other and lists every other
// node's client URL among those it gives its clients. Both are state of other processes
// with no notification to wait on, so this asks each node's monitoring endpoints (/routez,
// /varz) every 20 ms until ctx ends.
func (c *Cluster) waitRoutes(ctx context.Context) error {
	want := len(c.Nodes) - 1
	for _, n := range c.Nodes {
		for {
			names, err := n.routeNames(ctx)
			var missing []string
			if err == nil && len(names) >= want {
				missing, err = c.missingURLs(ctx, n)
				if err == nil && len(missing) == 0 {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("natstest: %s has routes to %v (want %d others) and does not advertise %v: %w (last error: %v)\n%s",
					n.Name, names, want, missing, ctx.Err(), err, c.Logs())
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

// missingURLs are the client URLs of the other nodes that n does not yet give its clients
// (INFO's connect_urls, which /varz shows).
func (c *Cluster) missingURLs(ctx context.Context, n *Node) ([]string, error) {
	var vz server.Varz
	if err := n.Monitor(ctx, "/varz", &vz); err != nil {
		return nil, err
	}
	advertised := map[string]bool{}
	for _, u := range vz.ClientConnectURLs {
		advertised[u] = true
	}
	var missing []string
	for _, o := range c.Nodes {
		if hostPort := strings.TrimPrefix(o.URL, "nats://"); o != n && !advertised[hostPort] {
			missing = append(missing, hostPort)
		}
	}
	return missing, nil
}

// Monitor asks the node's HTTP monitoring endpoint for path ("/varz", "/connz?state=any",
// "/routez") and decodes its JSON answer into v (server.Varz, server.Connz, ...).
func (n *Node) Monitor(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.monitor+path, nil)
	if err != nil {
		return err
	}
	resp, err := monitorClient.Do(req)
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
// exited. Its clients and routes see their connections reset.
func (c *Cluster) Kill(i int) {
	n := c.Nodes[i]
	if n.cmd.Process != nil {
		_ = n.cmd.Process.Kill()
	}
	<-n.done
}

// Freeze stops node i with SIGSTOP, as a hung server or a machine that stopped answering
// would: its connections stay open and nothing they carry is read or answered any more.
// Kill ends it.
func (c *Cluster) Freeze(i int) error {
	n := c.Nodes[i]
	if n.cmd.Process == nil {
		return fmt.Errorf("natstest: %s is not running", n.Name)
	}
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("natstest: freeze %s: %w", n.Name, err)
	}
	return nil
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
