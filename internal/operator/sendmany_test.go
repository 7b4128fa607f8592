package operator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

// send without MESSAGE reads commands from standard input, one session for all: each
// acknowledged in order; the first failure stops the run with its exit code.
func TestSendManyFromStdin(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	alice := append([]string{"send"}, linkArgs(f, d.addr, "alice", "alice", "alice.pw")...)
	olga := append([]string{"send"}, linkArgs(f, d.addr, "olga", "olga", "olga.pw")...)
	long := strings.Repeat("x", link.MaxCommandPayload+1)
	for _, tc := range []struct {
		name     string
		args     []string
		stdin    string
		code     int
		stdout   string
		executed []string
		err      string
	}{
		{"all ok, blanks and comments skipped", alice, "take off\n\n# a comment\n   hover 10 s  \r\nland", 0,
			"ack ok: done: take off\nack ok: done: hover 10 s\nack ok: done: land\n", []string{"take off", "hover 10 s", "land"}, ""},
		{"stops at the first failure", alice, "one\nfail\nnever\n", 4,
			"ack ok: done: one\nack failed: motor 3 not responding\n", []string{"one", "fail"}, "line 2: command failed on the drone: motor 3 not responding"},
		{"role refused on the first", olga, "arm\nnever\n", 4, "ack not_permitted:\n", nil, "line 1: command refused: user role may not command (observer)"},
		{"nothing to send", alice, "\n# only a comment\n", 2, "", nil, "no message: give the command text after the flags, or commands one per line"},
		{"too long, before anything is sent", alice, long + "\nnever\n", 2, "", nil, "line 1: command too long"},
		{"too long after a command", alice, "first\n" + long + "\nnever\n", 2, "ack ok: done: first\n", []string{"first"}, "line 2: command too long"},
		{"password first, then the commands", append(alice[:len(alice)-2:len(alice)-2], "--password-stdin"), "alice secret\ngo\n", 0,
			"ack ok: done: go\n", []string{"go"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(d.commands())
			r := run(t, tc.stdin, tc.args...)
			if tc.err != "" {
				r.want(t, tc.code, tc.err)
			} else {
				r.want(t, tc.code)
			}
			if r.stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", r.stdout, tc.stdout)
			}
			var got []string
			for _, c := range d.commands()[before:] {
				got = append(got, c[strings.Index(c, ": ")+2:])
			}
			if strings.Join(got, "|") != strings.Join(tc.executed, "|") {
				t.Errorf("executed %q, want %q", got, tc.executed)
			}
		})
	}
}

// Between commands the tool waits for the next line with the session up; an interruption
// or the drone ending the session while it waits ends the run.
func TestSendManyBetweenCommands(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	args := append([]string{"send"}, linkArgs(f, d.addr, "alice", "alice", "alice.pw")...)
	start := func(ctx context.Context) (*io.PipeWriter, <-chan result) {
		pr, pw := io.Pipe()
		ch := make(chan result, 1)
		go func() {
			var stdout, stderr bytes.Buffer
			a := newApp(pr, &stdout, &stderr)
			ch <- result{a.run(ctx, args), stdout.String(), stderr.String()}
		}()
		return pw, ch
	}
	executed := func(n int) func() bool { return func() bool { return len(d.commands()) >= n } }

	ctx, cancel := context.WithCancel(context.Background())
	pw, ch := start(ctx)
	io.WriteString(pw, "first\n")
	waitFor(t, "the first command", executed(1))
	io.WriteString(pw, "second\n")
	waitFor(t, "the second command", executed(2))
	cancel()
	r := waitResult(t, ch)
	pw.Close()
	r.want(t, ExitNoAnswer, "interrupted: the commands after line 2 were not sent")
	if r.stdout != "ack ok: done: first\nack ok: done: second\n" {
		t.Errorf("stdout %q", r.stdout)
	}

	pw, ch = start(context.Background())
	io.WriteString(pw, "third\n")
	waitFor(t, "the third command", executed(3))
	if n := d.server.Revoke(func(link.SessionInfo) bool { return true }); n != 1 {
		t.Fatalf("revoked %d sessions, want 1", n)
	}
	r = waitResult(t, ch)
	pw.Close()
	r.want(t, ExitClosed, "revoked")
}

// outBuffer is what the prompt wrote, safe to read while it writes.
type outBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *outBuffer) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *outBuffer) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// interactiveRig is alice's session with the drone and a prompt driven by the test's
// keystrokes, as sendInteractive sets it up on a terminal.
type interactiveRig struct {
	keys chan []byte
	out  *outBuffer
	done chan error
}

func startInteractive(t *testing.T, f *fixture, d *drone) *interactiveRig {
	t.Helper()
	k := keys(t)
	psk, err := crypto.LoadPSK(f.psk)
	if err != nil {
		t.Fatal(err)
	}
	s := &linkSetup{transport: transportNative, drone: netip.MustParseAddrPort(d.addr), droneName: "alpha (" + d.addr + ")",
		operatorKey: k["alice"], dronePublic: &k["drone"].PublicKey, psk: psk, user: "alice", password: []byte("alice secret"),
		timeout: 15 * time.Second, profileName: "alpha"}
	a := newApp(strings.NewReader(""), io.Discard, io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sess, err := a.dial(ctx, s, nil, dialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.client.Close() })
	r := &interactiveRig{keys: make(chan []byte), out: &outBuffer{}, done: make(chan error, 1)}
	p := newPrompt(r.keys, r.out, promptFor(s))
	go func() { r.done <- a.interact(ctx, p, sess, s, link.CommandOptions{}) }()
	return r
}

// typeKeys sends keystrokes to the prompt.
func (r *interactiveRig) typeKeys(t *testing.T, s string) {
	t.Helper()
	select {
	case r.keys <- []byte(s):
	case <-time.After(20 * time.Second):
		t.Fatalf("the prompt does not read %q", s)
	}
}

// shows waits until the output holds want n times.
func (r *interactiveRig) shows(t *testing.T, want string, n int) {
	t.Helper()
	waitFor(t, "the prompt to show "+want, func() bool { return strings.Count(r.out.String(), want) >= n })
}

// The interactive prompt: line editing, history, a failure that does not end the
// session, Ctrl-C during a wait, type-ahead, and "exit" with the first failure's code.
func TestInteractivePrompt(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	r := startInteractive(t, f, d)
	r.shows(t, "alpha> ", 1)
	r.typeKeys(t, "take of\x01\x05f\r") // Ctrl-A, Ctrl-E: edited to "take off"
	r.shows(t, "ack ok: done: take off", 1)
	r.typeKeys(t, "\x1b[A\r") // the previous line from the history
	r.shows(t, "ack ok: done: take off", 2)
	r.typeKeys(t, "fail\r")
	r.shows(t, "dronelink: command failed on the drone: motor 3 not responding", 1)
	r.typeKeys(t, "hang\r") // never acknowledged
	waitFor(t, "the drone to run hang", func() bool { return len(d.commands()) == 4 })
	r.typeKeys(t, "exit\r") // type-ahead while waiting
	r.typeKeys(t, "\x03")   // Ctrl-C: stop waiting
	var err error
	select {
	case err = <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the prompt did not end")
	}
	out := r.out.String()
	if !strings.Contains(out, "dronelink: interrupted: no acknowledgement from the drone at alpha") {
		t.Errorf("no interruption message:\n%s", out)
	}
	ee, ok := errors.AsType[*exitError](err)
	if !ok || ee.code != ExitNotExecuted || !strings.Contains(ee.msg, "2 of 4 commands failed; the first: command failed on the drone") {
		t.Errorf("result %v, want exit 4 and a summary", err)
	}
	if got := strings.Join(d.commands(), "|"); got != "alice: take off|alice: take off|alice: fail|alice: hang" {
		t.Errorf("executed %q", got)
	}
	if strings.Contains(out, "\n") && strings.Count(out, "\r\n") != strings.Count(out, "\n") {
		t.Errorf("a bare newline in raw mode:\n%q", out)
	}
}

// Ctrl-D at the prompt ends it; with nothing failed, that is success.
func TestInteractiveEndOfInput(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	for _, key := range []string{"\x04", "\x03"} {
		r := startInteractive(t, f, d)
		r.typeKeys(t, "land\r")
		r.shows(t, "ack ok: done: land", 1)
		r.typeKeys(t, key)
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("%q at the prompt: %v", key, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%q at the prompt did not end it", key)
		}
	}
}
