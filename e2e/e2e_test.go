// Package e2e runs the real dronelink and dronelinkd binaries on loopback: the command-line
// contract of the brief, every refusal, bad local input, telemetry, forwarding and user
// database reloads. The binaries are built once per test run from this checkout.
package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/relay"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dronelink-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-race", "-o", dir+"/", "../cmd/dronelink", "../cmd/dronelinkd")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	if os.Getenv("DRONELINK_LEAK_SELFTEST") != "" {
		// Shows the scan can fail: the daemon always prints this text.
		transcript.secret("self-test secret", "dronelinkd started")
	}
	code := m.Run()
	os.RemoveAll(dir)
	if leaks := transcript.leaks(); len(leaks) > 0 {
		fmt.Fprintln(os.Stderr, "SECRET LEAK: a secret appeared in the programs' output or logs:")
		for _, l := range leaks {
			fmt.Fprintln(os.Stderr, "  ", l)
		}
		code = 1
	} else if code == 0 {
		fmt.Fprintf(os.Stderr, "secret scan: %d bytes of program output and logs searched for %d secrets, none found\n",
			transcript.size(), transcript.count())
	}
	os.Exit(code)
}

// transcript collects every byte the programs printed in these tests, and every secret the
// tests made, so TestMain can check no secret was ever printed or logged.
var transcript secretScan

type secretScan struct {
	mu      sync.Mutex
	outputs [][]byte
	secrets map[string]string // secret -> what it is
}

func (s *secretScan) output(b []byte) {
	s.mu.Lock()
	s.outputs = append(s.outputs, bytes.Clone(b))
	s.mu.Unlock()
}

func (s *secretScan) secret(what, value string) {
	if len(value) < 8 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.secrets == nil {
		s.secrets = map[string]string{}
	}
	s.secrets[value] = what
}

func (s *secretScan) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, o := range s.outputs {
		n += len(o)
	}
	return n
}

func (s *secretScan) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.secrets)
}

func (s *secretScan) leaks() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for secret, what := range s.secrets {
		for _, o := range s.outputs {
			if bytes.Contains(o, []byte(secret)) {
				out = append(out, what)
				break
			}
		}
	}
	return out
}

// registerSecrets records the PSK (hex and raw), the passwords and the private keys' PEM
// lines of a fleet directory.
func registerSecrets(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		switch {
		case strings.HasSuffix(e.Name(), ".pw"):
			transcript.secret("password "+e.Name(), strings.TrimSpace(string(b)))
		case strings.HasSuffix(e.Name(), "psk"):
			hexPSK := strings.TrimSpace(string(b))
			transcript.secret("PSK "+e.Name(), hexPSK)
			transcript.secret("PSK (upper case) "+e.Name(), strings.ToUpper(hexPSK))
			if raw, err := hex.DecodeString(hexPSK); err == nil {
				transcript.secret("PSK bytes "+e.Name(), string(raw))
				transcript.secret("PSK base64 "+e.Name(), base64.StdEncoding.EncodeToString(raw))
			}
		case strings.HasSuffix(e.Name(), ".creds"): // the relay's NATS credentials
			if c, err := relay.ParseCreds(b); err == nil {
				for what, v := range map[string]string{"NKey seed": c.NkeySeed, "NATS password": c.Password, "NATS token": c.Token} {
					transcript.secret(what+" "+e.Name(), v)
				}
			}
		case strings.HasSuffix(e.Name(), ".key"):
			for _, line := range strings.Split(string(b), "\n") {
				if len(line) >= 40 && !strings.HasPrefix(line, "-----") {
					transcript.secret("private key "+e.Name(), line)
				}
			}
		}
	}
}

// result is a finished command.
type result struct {
	code           int
	stdout, stderr string
}

// run runs a binary to completion (at most 60 s).
func run(t *testing.T, stdin string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	transcript.output(out.Bytes())
	transcript.output(errb.Bytes())
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return result{code, out.String(), errb.String()}
}

// mustRun runs dronelink and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := run(t, "", "dronelink", args...)
	if r.code != 0 {
		t.Fatalf("dronelink %v: exit %d: %s", args, r.code, r.stderr)
	}
	return r
}

// oneLine asserts a failure: the wanted exit code and exactly one line on stderr that
// mentions want.
func oneLine(t *testing.T, r result, code int, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if r.code != code || len(lines) != 1 || !strings.Contains(strings.ToLower(lines[0]), strings.ToLower(want)) {
		t.Fatalf("exit %d (want %d), stderr %q (want one line mentioning %q)", r.code, code, r.stderr, want)
	}
}

// fleet is a set of identities on disk.
type fleet struct {
	dir string
}

func (f *fleet) path(name string) string { return filepath.Join(f.dir, name) }

// newFleet makes a drone key, a PSK, and users alice (pilot), olga (observer) and bob
// (pilot, whose key alice does not hold).
func newFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{dir: t.TempDir()}
	var wg sync.WaitGroup
	for _, name := range []string{"drone", "alice", "olga", "bob", "stranger"} {
		wg.Go(func() { mustRun(t, "keygen", "--out", f.path(name+".key"), "--bits", "2048") })
	}
	wg.Wait()
	mustRun(t, "psk", "--out", f.path("psk"))
	for _, u := range []struct{ name, role string }{{"alice", "pilot"}, {"olga", "observer"}, {"bob", "pilot"}} {
		if err := os.WriteFile(f.path(u.name+".pw"), []byte(u.name+" secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "user", "add", "--db", f.path("users"), "--name", u.name, "--role", u.role,
			"--pubkey", f.path(u.name+".key.pub"), "--password-file", f.path(u.name+".pw"))
	}
	registerSecrets(f.dir)
	t.Cleanup(func() { registerSecrets(f.dir) }) // secrets the test made later
	return f
}

// drone is a running dronelinkd.
type drone struct {
	cmd    *exec.Cmd
	addr   string
	tin    string
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan error
}

func (d *drone) output() (string, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stdout.String(), d.stderr.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	transcript.output(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func freePort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// startDrone runs dronelinkd for f with extra flags and waits until it serves.
func startDrone(t *testing.T, f *fleet, extra ...string) *drone {
	t.Helper()
	return startDroneCmd(t, f, []string{filepath.Join(binDir, "dronelinkd")}, extra...)
}

// startDroneCmd is startDrone running the daemon as argv (the program, or an emulator and
// the program) and the flags.
func startDroneCmd(t *testing.T, f *fleet, argv []string, extra ...string) *drone {
	t.Helper()
	d := &drone{addr: freePort(t), tin: freePort(t), done: make(chan error, 1)}
	return launchDrone(t, d, argv, append([]string{"--listen", d.addr}, droneFlags(f, d, extra...)...))
}

// droneFlags are the daemon's flags for f and d (but --listen), then extra.
func droneFlags(f *fleet, d *drone, extra ...string) []string {
	return append([]string{"--key", f.path("drone.key"), "--psk", f.path("psk"),
		"--users", f.path("users"), "--telemetry-in", d.tin, "--reload-interval", "200ms"}, extra...)
}

// launchDrone runs the daemon as argv with args for d and waits until it serves.
func launchDrone(t *testing.T, d *drone, argv, args []string) *drone {
	t.Helper()
	d.cmd = exec.Command(argv[0], append(argv[1:len(argv):len(argv)], args...)...)
	d.cmd.Stdout = lockedWriter{&d.mu, &d.stdout}
	d.cmd.Stderr = lockedWriter{&d.mu, &d.stderr}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	waitFor(t, "dronelinkd to start", func() bool {
		_, errs := d.output()
		return strings.Contains(errs, "dronelinkd started")
	})
	return d
}

// stop shuts the daemon down with SIGTERM and checks it exits cleanly.
func (d *drone) stop(t *testing.T) {
	if d.cmd.Process == nil || d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			_, errs := d.output()
			t.Errorf("dronelinkd exit: %v\n%s", err, errs)
		}
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		t.Errorf("dronelinkd did not stop on SIGTERM")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// operator returns the common flags of send and listen for user with key.
func (f *fleet) operator(d *drone, user, key, password string) []string {
	return []string{"--drone", d.addr, "--drone-pub", f.path("drone.key.pub"), "--key", f.path(key + ".key"),
		"--psk", f.path("psk"), "--user", user, "--password-file", f.path(password)}
}

func (f *fleet) send(t *testing.T, d *drone, user, key, password string, extra ...string) result {
	t.Helper()
	args := append(append([]string{"send"}, f.operator(d, user, key, password)...), extra...)
	return run(t, "", "dronelink", args...)
}

// executed counts the daemon's output lines for a message.
func (d *drone) executed(message string) int {
	out, _ := d.output()
	return strings.Count(out, ": "+message+"\n")
}

func TestContractStory(t *testing.T) {
	f := newFleet(t)
	// keygen: private 0600 and public 0644, fingerprint printed.
	r := mustRun(t, "keygen", "--out", f.path("extra.key"), "--bits", "2048")
	if !regexp.MustCompile(`SHA256:[A-Za-z0-9+/]{43}`).MatchString(r.stdout) {
		t.Errorf("keygen printed no fingerprint: %q", r.stdout)
	}
	for name, mode := range map[string]os.FileMode{"extra.key": 0o600, "extra.key.pub": 0o644, "psk": 0o600, "users": 0o600} {
		fi, err := os.Stat(f.path(name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v (%v)", name, fi.Mode().Perm(), mode, err)
		}
	}
	psk, _ := os.ReadFile(f.path("psk"))
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).Match(psk) {
		t.Errorf("psk file %q is not 64 hex digits and a newline", psk)
	}
	list := mustRun(t, "user", "list", "--db", f.path("users")).stdout
	for _, want := range []string{"alice", "pilot", "olga", "observer"} {
		if !strings.Contains(list, want) {
			t.Errorf("user list lacks %q:\n%s", want, list)
		}
	}

	d := startDrone(t, f)
	r = f.send(t, d, "alice", "alice", "alice.pw", "take", "off", "to", "10", "m")
	if r.code != 0 || !strings.Contains(r.stdout, "ok") {
		t.Fatalf("send: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if n := d.executed("take off to 10 m"); n != 1 {
		out, _ := d.output()
		t.Fatalf("daemon printed the command %d times:\n%s", n, out)
	}
	out, _ := d.output()
	if !strings.Contains(out, "alice: take off to 10 m") {
		t.Errorf("daemon output lacks the user name: %q", out)
	}

	// passwd while running: the new password works, the old one no longer does.
	os.WriteFile(f.path("alice2.pw"), []byte("a new secret\n"), 0o600)
	mustRun(t, "user", "passwd", "--db", f.path("users"), "--name", "alice", "--password-file", f.path("alice2.pw"))
	waitFor(t, "the reload", func() bool { _, e := d.output(); return strings.Contains(e, "user database reloaded") })
	oneLine(t, f.send(t, d, "alice", "alice", "alice.pw", "old password"), 3, "wrong password")
	if r := f.send(t, d, "alice", "alice", "alice2.pw", "new password"); r.code != 0 {
		t.Fatalf("new password: %d %s", r.code, r.stderr)
	}
}

func TestRefusals(t *testing.T) {
	f := newFleet(t)
	d := startDrone(t, f)
	os.WriteFile(f.path("wrong.pw"), []byte("nope\n"), 0o600)
	mustRun(t, "psk", "--out", f.path("other.psk"))
	cases := []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{"wrong password", f.operator(d, "alice", "alice", "wrong.pw"), 3, "wrong password"},
		{"unknown user", f.operator(d, "mallory", "alice", "alice.pw"), 3, "unknown user"},
		{"key not authorised for the user", f.operator(d, "bob", "alice", "bob.pw"), 3, "not authorised"},
		{"key unknown to the drone", f.operator(d, "alice", "stranger", "alice.pw"), 3, "not authorised"},
		{"observer command", f.operator(d, "olga", "olga", "olga.pw"), 4, "observer"},
		{"pinned another drone key", append(f.operator(d, "alice", "alice", "alice.pw"), "--drone-pub", f.path("stranger.key.pub")), 3, "drone key"},
		{"PSK mismatch", append(f.operator(d, "alice", "alice", "alice.pw"), "--psk", f.path("other.psk"), "--timeout", "2s"), 5, "no answer"},
		{"unreachable daemon", append(f.operator(d, "alice", "alice", "alice.pw"), "--drone", freePort(t), "--timeout", "2s"), 5, "nothing listens at"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := run(t, "", "dronelink", append(append([]string{"send"}, tc.args...), "refused "+tc.name)...)
			oneLine(t, r, tc.code, tc.message)
			t.Logf("%s (%v): %s", tc.name, time.Since(start).Round(time.Millisecond), strings.TrimSpace(r.stderr))
		})
	}
	out, _ := d.output()
	if strings.Contains(out, "refused ") {
		t.Fatalf("a refused command was executed:\n%s", out)
	}
}

func TestBadLocalInput(t *testing.T) {
	f := newFleet(t)
	garbled := f.path("garbled.key")
	os.WriteFile(garbled, []byte("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"), 0o600)
	short := f.path("short.psk")
	os.WriteFile(short, []byte("abcdef\n"), 0o600)
	corrupt := f.path("corrupt.db")
	os.WriteFile(corrupt, []byte("{\"version\":1,\"users\":[{\"name\":"), 0o600)
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	daemon := func(extra ...string) []string {
		args := []string{"--listen", freePort(t), "--key", f.path("drone.key"), "--psk", f.path("psk"), "--users", f.path("users")}
		return append(args, extra...)
	}
	snapshot := func() map[string][]byte {
		m := map[string][]byte{}
		entries, _ := os.ReadDir(f.dir)
		for _, e := range entries {
			b, _ := os.ReadFile(f.path(e.Name()))
			m[e.Name()] = b
		}
		return m
	}
	before := snapshot()
	cases := []struct {
		name    string
		bin     string
		args    []string
		code    int
		message string
	}{
		{"daemon: missing key file", "dronelinkd", daemon("--key", f.path("missing.key")), 1, "missing.key"},
		{"daemon: garbled key", "dronelinkd", daemon("--key", garbled), 1, "garbled.key"},
		{"daemon: short PSK", "dronelinkd", daemon("--psk", short), 1, "short.psk"},
		{"daemon: corrupt user database", "dronelinkd", daemon("--users", corrupt), 1, "corrupt.db"},
		{"daemon: port in use", "dronelinkd", daemon("--listen", busy.LocalAddr().String()), 1, "address already in use"},
		{"daemon: bad flag", "dronelinkd", daemon("--frobnicate"), 2, "frobnicate"},
		{"send: missing key file", "dronelink", []string{"send", "--drone", "127.0.0.1:1", "--drone-pub", f.path("drone.key.pub"), "--key", f.path("missing.key"), "--psk", f.path("psk"), "--user", "alice", "--password-file", f.path("alice.pw"), "x"}, 1, "missing.key"},
		{"send: garbled key", "dronelink", []string{"send", "--drone", "127.0.0.1:1", "--drone-pub", f.path("drone.key.pub"), "--key", garbled, "--psk", f.path("psk"), "--user", "alice", "--password-file", f.path("alice.pw"), "x"}, 1, "garbled.key"},
		{"send: short PSK", "dronelink", []string{"send", "--drone", "127.0.0.1:1", "--drone-pub", f.path("drone.key.pub"), "--key", f.path("alice.key"), "--psk", short, "--user", "alice", "--password-file", f.path("alice.pw"), "x"}, 1, "short.psk"},
		{"user add: corrupt database", "dronelink", []string{"user", "add", "--db", corrupt, "--name", "zed", "--role", "pilot", "--pubkey", f.path("stranger.key.pub"), "--password-file", f.path("alice.pw")}, 1, "corrupt.db"},
		{"user list: corrupt database", "dronelink", []string{"user", "list", "--db", corrupt}, 1, "corrupt.db"},
		{"user add: existing user", "dronelink", []string{"user", "add", "--db", f.path("users"), "--name", "alice", "--role", "pilot", "--pubkey", f.path("stranger.key.pub"), "--password-file", f.path("alice.pw")}, 1, "exists"},
		{"keygen: would overwrite", "dronelink", []string{"keygen", "--out", f.path("alice.key"), "--bits", "2048"}, 1, "exists"},
		{"keygen: too small", "dronelink", []string{"keygen", "--out", f.path("tiny.key"), "--bits", "1024"}, 2, "2048"},
		{"psk: would overwrite", "dronelink", []string{"psk", "--out", f.path("psk")}, 1, "exists"},
		{"bad flag", "dronelink", []string{"send", "--frobnicate"}, 2, "frobnicate"},
		{"password on the command line", "dronelink", []string{"user", "passwd", "--db", f.path("users"), "--name", "alice", "--password", "hunter2"}, 2, "password"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			oneLine(t, run(t, "", tc.bin, tc.args...), tc.code, tc.message)
		})
	}
	after := snapshot()
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("%s changed", name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s appeared", name)
		}
	}
}

// listen as an observer prints telemetry fed into --telemetry-in; deleting the user ends
// the session and refuses the next login.
func TestTelemetryAndUserDeletion(t *testing.T) {
	f := newFleet(t)
	d := startDrone(t, f)
	listenUntilDeleted(t, d, f.operator(d, "olga", "olga", "olga.pw"), nil,
		func() { mustRun(t, "user", "del", "--db", f.path("users"), "--name", "olga") })
	oneLine(t, f.send(t, d, "olga", "olga", "olga.pw", "after deletion"), 3, "not authorised")
}

// A burst fed into --telemetry-in (read and broadcast in batches) reaches a listening
// operator whole and in order; a datagram too large for one telemetry packet is dropped
// with one warning and does not hold up the rest.
func TestTelemetryBurst(t *testing.T) {
	f := newFleet(t)
	d := startDrone(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	listen := exec.CommandContext(ctx, filepath.Join(binDir, "dronelink"), append([]string{"listen"}, f.operator(d, "olga", "olga", "olga.pw")...)...)
	var mu sync.Mutex
	var lout, lerr bytes.Buffer
	listen.Stdout, listen.Stderr = lockedWriter{&mu, &lout}, lockedWriter{&mu, &lerr}
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); listen.Wait() }()
	feed, err := net.Dial("udp", d.tin)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	printed := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(lout.String(), s)
	}
	waitFor(t, "the observer's session", func() bool { feed.Write([]byte("ready")); return printed("ready\n") })
	const burst = 3 * 32
	var want strings.Builder
	for i := range burst {
		if i == burst/2 {
			feed.Write(bytes.Repeat([]byte{'X'}, 1177)) // one byte over the limit
		}
		line := fmt.Sprintf("burst %03d", i)
		feed.Write([]byte(line))
		want.WriteString(line + "\n")
	}
	waitFor(t, "the whole burst", func() bool { return printed(fmt.Sprintf("burst %03d\n", burst-1)) })
	mu.Lock()
	out := lout.String()
	mu.Unlock()
	if got := out[strings.Index(out, "burst 000"):]; got != want.String() {
		t.Fatalf("the observer printed\n%s\nwant the %d lines in order", got, burst)
	}
	if strings.Contains(out, "XXXX") {
		t.Fatal("an oversize telemetry datagram was delivered")
	}
	if _, stderr := d.output(); strings.Count(stderr, "telemetry datagram too large") != 1 {
		t.Fatalf("want one warning about the oversize datagram; daemon log:\n%s", stderr)
	}
}

// listenUntilDeleted runs dronelink listen with operator args (and env, if not nil) until
// telemetry fed into the daemon's --telemetry-in is printed, then runs del (which deletes
// the listening user) and checks that listen ends with exit code 6 naming the revocation.
func listenUntilDeleted(t *testing.T, d *drone, args, env []string, del func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	listen := exec.CommandContext(ctx, filepath.Join(binDir, "dronelink"), append([]string{"listen"}, args...)...)
	listen.Env = env
	var mu sync.Mutex
	var lout, lerr bytes.Buffer
	listen.Stdout, listen.Stderr = lockedWriter{&mu, &lout}, lockedWriter{&mu, &lerr}
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- listen.Wait() }()
	feed, err := net.Dial("udp", d.tin)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	waitFor(t, "telemetry at the observer", func() bool {
		feed.Write([]byte("battery 87%"))
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(lout.String(), "battery 87%\n")
	})
	del()
	select {
	case err := <-done:
		mu.Lock()
		stderr := lerr.String()
		mu.Unlock()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 6 {
			t.Fatalf("listen exit: %v (want code 6); stderr %q", err, stderr)
		}
		if !strings.Contains(stderr, "revoked") {
			t.Errorf("listen said %q, want it to mention the revocation", stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the deleted user's session did not end")
	}
}

func TestForwardAndCheckConfig(t *testing.T) {
	f := newFleet(t)
	sink, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	conf := f.path("dronelinkd.toml")
	os.WriteFile(conf, fmt.Appendf(nil, "key = %q\npsk = %q\nusers = %q\nforward = %q\n",
		f.path("drone.key"), f.path("psk"), f.path("users"), sink.LocalAddr().String()), 0o600)
	r := run(t, "", "dronelinkd", "--config", conf, "--listen", "127.0.0.1:0", "--check-config")
	if r.code != 0 || !strings.Contains(r.stdout, "configuration ok") {
		t.Fatalf("check-config: %d %q %q", r.code, r.stdout, r.stderr)
	}
	d := startDrone(t, f, "--config", conf)
	if r := f.send(t, d, "alice", "alice", "alice.pw", "waypoint 47.1 8.5"); r.code != 0 {
		t.Fatalf("send: %d %s", r.code, r.stderr)
	}
	buf := make([]byte, 2048)
	sink.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := sink.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "waypoint 47.1 8.5" {
		t.Fatalf("forwarded %q, %v", buf[:n], err)
	}
}

// #13: with --forward, "ack ok" means the forward was not refused. Towards a port where
// nothing listens every command is acknowledged "failed", three times in a row (a
// connected socket used to report the previous datagram's ICMP refusal on the next write,
// so the acknowledgements alternated ok, failed, ok); with a listener every one is "ok"
// and arrives.
func TestForwardAcknowledgement(t *testing.T) {
	f := newFleet(t)
	for _, tc := range []struct {
		name     string
		listener bool
	}{{"nothing listens", false}, {"a listener", true}} {
		t.Run(tc.name, func(t *testing.T) {
			target := freePort(t) // bound and closed: nothing listens there
			var sink net.PacketConn
			if tc.listener {
				var err error
				if sink, err = net.ListenPacket("udp", target); err != nil {
					t.Fatal(err)
				}
				defer sink.Close()
			}
			d := startDrone(t, f, "--forward", target)
			for i := range 3 {
				msg := fmt.Sprintf("waypoint %d", i)
				r := f.send(t, d, "alice", "alice", "alice.pw", msg)
				if !tc.listener {
					if r.code != 4 || r.stdout != "ack failed: forward refused: connection refused\n" {
						t.Fatalf("command %d: exit %d, stdout %q, stderr %q; want exit 4 and ack failed", i+1, r.code, r.stdout, r.stderr)
					}
					continue
				}
				if r.code != 0 || r.stdout != "ack ok: executed: "+msg+"\n" {
					t.Fatalf("command %d: exit %d, stdout %q, stderr %q", i+1, r.code, r.stdout, r.stderr)
				}
				buf := make([]byte, 2048)
				sink.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, _, err := sink.ReadFrom(buf)
				if err != nil || string(buf[:n]) != msg {
					t.Fatalf("forwarded %q, %v; want %q", buf[:n], err, msg)
				}
			}
		})
	}
}

// SIGHUP reloads the user database at once, without waiting for the change poll.
func TestSIGHUPReload(t *testing.T) {
	f := newFleet(t)
	d := startDrone(t, f, "--reload-interval", "1h")
	if r := f.send(t, d, "bob", "bob", "bob.pw", "before"); r.code != 0 {
		t.Fatalf("send: %d %s", r.code, r.stderr)
	}
	mustRun(t, "user", "role", "--db", f.path("users"), "--name", "bob", "--role", "observer")
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the reload", func() bool { _, e := d.output(); return strings.Contains(e, "user database reloaded") })
	oneLine(t, f.send(t, d, "bob", "bob", "bob.pw", "after demotion"), 4, "observer")
	if d.executed("after demotion") != 0 {
		t.Fatal("a demoted pilot's command was executed")
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
