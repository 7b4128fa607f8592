package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// fingerprints returns the two fingerprint lines "dronelink fingerprint" prints for a key
// file: the SHA256: form and the readable form.
func fingerprints(t *testing.T, path string) (sha, digits string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(mustRun(t, "fingerprint", path).stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("fingerprint printed %q", lines)
	}
	return strings.TrimSuffix(lines[0], "  "+path), strings.TrimSuffix(lines[1], "  "+path)
}

// pin with --expect, through the real binaries: the drone's key is written only when its
// fingerprint (either form) is the expected one, never over an existing file, not at all
// with a wrong PSK; the written file works as --drone-pub; the drone counts what it got.
func TestPinExpect(t *testing.T) {
	f := newFleet(t)
	d, scrape := hostileDrone(t, f)
	sha, digits := fingerprints(t, f.path("drone.key.pub"))
	strangerSHA, _ := fingerprints(t, f.path("stranger.key.pub"))
	wantPEM, err := os.ReadFile(f.path("drone.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pin := func(out string, extra ...string) result {
		return run(t, "", "dronelink", append([]string{"pin", "--drone", d.addr, "--psk", f.path("psk"), "--out", out}, extra...)...)
	}

	// A match, in the readable form as read aloud: written, and usable by send.
	pinned := f.path("pinned.pub")
	r := pin(pinned, "--expect", digits)
	if r.code != 0 || !strings.Contains(r.stdout, sha) || !strings.Contains(r.stdout, digits) || !strings.Contains(r.stdout, "pinned:") {
		t.Fatalf("pin --expect: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	if got, err := os.ReadFile(pinned); err != nil || !bytes.Equal(got, wantPEM) {
		t.Fatalf("pinned file %q (%v), want the drone's .pub", got, err)
	}
	if fi, err := os.Stat(pinned); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("pinned file mode: %v %v", fi, err)
	}
	args := f.operator(d, "alice", "alice", "alice.pw")
	args[3] = pinned // --drone-pub
	if r := run(t, "", "dronelink", append(append([]string{"send"}, args...), "pinned hello")...); r.code != 0 || !strings.HasPrefix(r.stdout, "ack ok") {
		t.Fatalf("send with the pinned key: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}

	// A mismatch: exit 3, one line naming both fingerprints, nothing written.
	refused := f.path("refused.pub")
	r = pin(refused, "--expect", strangerSHA)
	oneLine(t, r, 3, "refused")
	if !strings.Contains(r.stderr, sha) || !strings.Contains(r.stderr, strangerSHA) {
		t.Fatalf("the refusal does not name both fingerprints: %q", r.stderr)
	}
	if _, err := os.Lstat(refused); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused pin wrote %s: %v", refused, err)
	}

	// An existing file: exit 1 before anything is sent, the file unchanged.
	before := scrape()
	r = pin(pinned, "--expect", sha)
	oneLine(t, r, 1, "already exists")
	if got, _ := os.ReadFile(pinned); !bytes.Equal(got, wantPEM) {
		t.Fatalf("existing file changed: %q", got)
	}
	requests := func(s map[string]float64) float64 {
		return sum(s, "dronelink_packets_received_total", `kind="key_request"`)
	}
	if sent := requests(scrape()) - requests(before); sent != 0 {
		t.Fatalf("pin sent %v key requests for a file it may not write", sent)
	}

	// Another PSK: the drone drops the requests (bad_mac), the operator times out, exit 5.
	other := f.path("other-psk")
	mustRun(t, "psk", "--out", other)
	registerSecrets(f.dir)
	wrong := f.path("wrong-psk.pub")
	r = run(t, "", "dronelink", "pin", "--drone", d.addr, "--psk", other, "--out", wrong, "--expect", sha, "--timeout", "2s")
	oneLine(t, r, 5, "no answer from the drone")
	if _, err := os.Lstat(wrong); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a pin with a wrong PSK wrote %s: %v", wrong, err)
	}
	after := scrape()
	if got := drops(after, "bad_mac") - drops(before, "bad_mac"); got < 1 {
		t.Errorf("the wrong-PSK key requests were not counted as bad_mac (%v)", got)
	}
	if got := sum(after, "dronelink_packets_sent_total", `kind="key_answer"`); got < 2 || got != sum(before, "dronelink_packets_sent_total", `kind="key_answer"`) {
		t.Errorf("key answers sent: %v, want at least 2 (the match and the mismatch), none to the wrong PSK", got)
	}
	if work(after) != work(before) {
		t.Error("key requests cost the drone RSA or X25519 work")
	}
}

// ptyOutput collects what a program writes to its terminal and tells when it grows.
type ptyOutput struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (o *ptyOutput) read(f *os.File) {
	b := make([]byte, 4096)
	for {
		n, err := f.Read(b)
		if n > 0 {
			transcript.output(b[:n])
			o.mu.Lock()
			o.buf.Write(b[:n])
			o.mu.Unlock()
			select {
			case o.changed <- struct{}{}:
			default:
			}
		}
		if err != nil { // EIO once the program has exited and closed the terminal
			close(o.changed)
			return
		}
	}
}

func (o *ptyOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor waits until the output contains s; false if the terminal closed first.
func (o *ptyOutput) waitFor(t *testing.T, s string) bool {
	t.Helper()
	timeout := time.After(60 * time.Second) // only bounds a broken build
	for !strings.Contains(o.String(), s) {
		select {
		case _, open := <-o.changed:
			if !open {
				return strings.Contains(o.String(), s)
			}
		case <-timeout:
			t.Fatalf("no %q on the terminal; got %q", s, o.String())
		}
	}
	return true
}

// waitClosed waits until the program's end closed the terminal: all its output is in.
func (o *ptyOutput) waitClosed(t *testing.T) {
	t.Helper()
	timeout := time.After(60 * time.Second) // only bounds a broken build
	for {
		select {
		case _, open := <-o.changed:
			if !open {
				return
			}
		case <-timeout:
			t.Fatalf("the terminal stayed open; got %q", o.String())
		}
	}
}

// pin without --expect on a terminal (a pseudo-terminal here), as a person runs it: the
// fingerprint is shown with the question; yes pins, no writes nothing and exits 3.
func TestPinPrompt(t *testing.T) {
	f := newFleet(t)
	d := startDrone(t, f)
	sha, digits := fingerprints(t, f.path("drone.key.pub"))
	wantPEM, err := os.ReadFile(f.path("drone.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		answer string
		code   int
	}{
		{"yes", 0},
		{"no", 3},
	} {
		t.Run(tt.answer, func(t *testing.T) {
			out := f.path("prompt-" + tt.answer + ".pub")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(binDir, "dronelink"), "pin", "--drone", d.addr, "--psk", f.path("psk"), "--out", out)
			cmd.Env = fastEnv()
			tty, err := pty.Start(cmd)
			if err != nil {
				t.Skipf("no pseudo-terminal: %v", err)
			}
			defer tty.Close()
			o := &ptyOutput{changed: make(chan struct{}, 1)}
			go o.read(tty)
			if !o.waitFor(t, "Type yes to pin it") {
				t.Fatalf("no question; the terminal showed %q", o.String())
			}
			shown := o.String()
			if !strings.Contains(shown, sha) || !strings.Contains(shown, digits) || !strings.Contains(shown, d.addr) {
				t.Fatalf("the question does not show the drone and both fingerprints: %q", shown)
			}
			if _, err := tty.Write([]byte(tt.answer + "\n")); err != nil {
				t.Fatal(err)
			}
			err = cmd.Wait()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			o.waitClosed(t)
			got, readErr := os.ReadFile(out)
			switch {
			case code != tt.code:
				t.Fatalf("exit %d, want %d; the terminal showed %q", code, tt.code, o.String())
			case tt.code == 0 && (readErr != nil || !bytes.Equal(got, wantPEM)):
				t.Fatalf("answered yes, file %q (%v)", got, readErr)
			case tt.code == 0 && !strings.Contains(o.String(), "pinned:"):
				t.Fatalf("no result line: %q", o.String())
			case tt.code != 0 && !errors.Is(readErr, os.ErrNotExist):
				t.Fatalf("answered no, yet %s exists (%v)", out, readErr)
			case tt.code != 0 && !strings.Contains(o.String(), "dronelink: not pinned"):
				t.Fatalf("no refusal line: %q", o.String())
			}
		})
	}
}
