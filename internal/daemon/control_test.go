package daemon

import (
	"bytes"
	"context"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/internal/control"
	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

func TestDefaultControl(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"", ""},
		{"/run/dronelinkd", "/run/dronelinkd/control.sock"},
		{"/run/dronelinkd:/run/other", "/run/dronelinkd/control.sock"},
	} {
		t.Setenv("RUNTIME_DIRECTORY", tc.env)
		if got := defaultControl(); got != tc.want {
			t.Errorf("RUNTIME_DIRECTORY=%q: default %q, want %q", tc.env, got, tc.want)
		}
		c, err := parse(t, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if c.Control != tc.want {
			t.Errorf("RUNTIME_DIRECTORY=%q: --control %q, want %q", tc.env, c.Control, tc.want)
		}
	}
	// An explicit empty value turns the default off, on the command line and in the file.
	t.Setenv("RUNTIME_DIRECTORY", "/run/dronelinkd")
	for _, c := range []struct {
		args []string
		file string
	}{{[]string{"--control", ""}, ""}, {nil, `control = ""`}} {
		cfg, err := parse(t, c.args, c.file)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Control != "" {
			t.Errorf("%v %q: control %q, want off", c.args, c.file, cfg.Control)
		}
	}
}

// The running daemon answers on its control socket (mode 0600) with the logged-in
// operator's session, and removes the socket when it stops.
func TestControlSocketStatus(t *testing.T) {
	keyPath, pskPath, usersPath := droneFiles(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var stdout, stderr lockedBuffer
	go func() {
		done <- Main(ctx, []string{"--listen", "127.0.0.1:0", "--key", keyPath, "--psk", pskPath, "--users", usersPath,
			"--control", sock}, &stdout, &stderr)
	}()
	var st control.Status
	waitUntil(t, "the control socket", func() bool {
		var err error
		st, err = control.Fetch(context.Background(), sock)
		return err == nil
	})
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v, want a socket with mode 0600", fi.Mode(), err)
	}
	if st.Program != control.ProgramDaemon || st.Transport != TransportNative || len(st.Sessions) != 0 || !strings.HasPrefix(st.Key, "SHA256:") {
		t.Fatalf("status before any operator: %+v", st)
	}
	key, err := crypto.LoadPrivateKey(keyPath) // alice's key is the drone's in droneFiles
	if err != nil {
		t.Fatal(err)
	}
	psk, err := crypto.LoadPSK(pskPath)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := link.ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dialCtx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	client, err := link.Dial(dialCtx, link.ClientConfig{Conn: conn, Drone: netip.MustParseAddrPort(st.Listen), PSK: psk,
		OperatorKey: key, DronePublic: &key.PublicKey, User: "alice", Password: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if ack, err := client.Command(dialCtx, []byte("hover")); err != nil || ack.Status != link.AckOK {
		t.Fatalf("command: %v %v", ack.Status, err)
	}
	if st, err = control.Fetch(context.Background(), sock); err != nil {
		t.Fatal(err)
	}
	if len(st.Sessions) != 1 {
		t.Fatalf("%d sessions, want 1: %+v", len(st.Sessions), st.Sessions)
	}
	s := st.Sessions[0]
	if s.User != "alice" || s.Role != "pilot" || s.Key != crypto.Fingerprint(&key.PublicKey) || s.Peer != conn.LocalAddr().String() ||
		s.State != link.StateActive || s.RTTSeconds <= 0 || s.Traffic == nil || s.Traffic.RxPackets < 3 || s.Since.IsZero() {
		t.Errorf("session %+v traffic %+v", s, s.Traffic)
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}

// --control at a path that holds something else is refused in one line naming the
// setting, by --check-config and at start, and the file is left alone.
func TestControlPathRefused(t *testing.T) {
	keyPath, pskPath, usersPath := droneFiles(t)
	file := filepath.Join(t.TempDir(), "not-a-socket")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, extra := range [][]string{{"--check-config"}, nil} {
		args := append([]string{"--listen", "127.0.0.1:0", "--key", keyPath, "--psk", pskPath, "--users", usersPath, "--control", file}, extra...)
		code, _, stderr := runMain(t, args...)
		if code != ExitError || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "--control") || !strings.Contains(stderr, "not a socket") {
			t.Errorf("%v: exit %d, %q", extra, code, stderr)
		}
		if b, _ := os.ReadFile(file); string(b) != "keep" {
			t.Fatal("the file was replaced")
		}
	}
}

// lockedBuffer is a bytes.Buffer the daemon's goroutines may write while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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

// waitUntil polls cond until it holds (the deadline only bounds a broken build).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
