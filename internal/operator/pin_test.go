package operator

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// runPin runs pin with stdin, as if standard input were a terminal when terminal is set.
// The prompt's lines go to stderr; on failure its last line is the one error line.
func runPin(t *testing.T, terminal bool, stdin string, args ...string) result {
	t.Helper()
	if !terminal {
		return run(t, stdin, append([]string{"pin"}, args...)...)
	}
	var stdout, stderr bytes.Buffer
	a := newApp(strings.NewReader(stdin), &stdout, &stderr)
	a.stdinTerminal = 0
	r := result{code: a.run(context.Background(), append([]string{"pin"}, args...)), stdout: stdout.String(), stderr: stderr.String()}
	// On a terminal the answer typed is echoed, ending the prompt's line; here it is not.
	i := strings.Index(r.stderr, "dronelink: ")
	if (i >= 0) != (r.code != 0) || (i >= 0 && (strings.Count(r.stderr[i:], "\n") != 1 || !strings.HasSuffix(r.stderr, "\n"))) {
		t.Fatalf("exit %d, stderr %q: want one error line at the end exactly when it fails", r.code, r.stderr)
	}
	if i >= 0 {
		r.stderr = r.stderr[i:] // errLine reads it
	}
	return r
}

// pin asks the drone for its key, checks the fingerprint against --expect or the answer
// typed at the terminal, and writes the key only when it is the one expected or confirmed;
// the written file works as --drone-pub.
func TestPin(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	k := keys(t)
	drone, stranger := &k["drone"].PublicKey, &k["stranger"].PublicKey
	dronePEM, _ := readFile(t, f.pub("drone"))
	otherPSK, err := crypto.GeneratePSK(nil)
	if err != nil {
		t.Fatal(err)
	}
	wrongPSK := writeFile(t, f.path("other.psk"), string(crypto.MarshalPSK(otherPSK)), 0o600)
	closed := func() string { // a loopback port where nothing listens
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}()
	existing := writeFile(t, f.path("existing.pub"), "keep me\n", 0o644)

	tests := []struct {
		name     string
		terminal bool
		stdin    string
		out      string // default: a new file
		args     []string
		code     int
		errParts []string
	}{
		{name: "expect SHA256 form", args: []string{"--expect", crypto.Fingerprint(drone)}},
		{name: "expect readable form, hyphens", args: []string{"--expect", strings.ReplaceAll(crypto.DigitFingerprint(drone), " ", "-")}},
		{name: "expect readable form, no separators", args: []string{"--expect", strings.ReplaceAll(crypto.DigitFingerprint(drone), " ", "")}},
		{name: "expect another key", args: []string{"--expect", crypto.Fingerprint(stranger)}, code: ExitRefused,
			errParts: []string{"refused", crypto.Fingerprint(drone), crypto.Fingerprint(stranger), "nothing written"}},
		{name: "expect another key, readable form", args: []string{"--expect", crypto.DigitFingerprint(stranger)}, code: ExitRefused,
			errParts: []string{crypto.DigitFingerprint(drone), crypto.DigitFingerprint(stranger)}},
		{name: "expect garbage", args: []string{"--expect", "SHA256:nope"}, code: ExitUsage, errParts: []string{"--expect", "not a key fingerprint"}},
		{name: "no expect, no terminal", code: ExitUsage, errParts: []string{"not a terminal", "--expect"}},
		{name: "terminal: yes", terminal: true, stdin: "yes\n"},
		{name: "terminal: YES without a newline", terminal: true, stdin: "YES"},
		{name: "terminal: the fingerprint pasted", terminal: true, stdin: crypto.DigitFingerprint(drone) + "\n"},
		{name: "terminal: no", terminal: true, stdin: "no\n", code: ExitRefused, errParts: []string{"not pinned", "nothing written"}},
		{name: "terminal: end of input", terminal: true, stdin: "", code: ExitRefused, errParts: []string{"not pinned"}},
		{name: "terminal: y", terminal: true, stdin: "y\n", code: ExitRefused, errParts: []string{"not pinned"}},
		{name: "terminal: another fingerprint pasted", terminal: true, stdin: crypto.Fingerprint(stranger) + "\n", code: ExitRefused,
			errParts: []string{"refused", crypto.Fingerprint(stranger)}},
		{name: "terminal: --expect wins, no question", terminal: true, stdin: "no\n", args: []string{"--expect", crypto.Fingerprint(drone)}},
		{name: "out exists", out: existing, args: []string{"--expect", crypto.Fingerprint(drone)}, code: ExitLocal,
			errParts: []string{existing, "already exists", "nothing was sent"}},
		{name: "out's directory missing", out: f.path("nowhere/drone.pub"), args: []string{"--expect", crypto.Fingerprint(drone)}, code: ExitLocal,
			errParts: []string{"does not exist"}},
		{name: "wrong PSK", args: []string{"--expect", crypto.Fingerprint(drone), "--psk", wrongPSK, "--timeout", "1s"}, code: ExitNoAnswer,
			errParts: []string{"no answer from the drone", "same PSK", "nothing written"}},
		{name: "nothing listens", args: []string{"--expect", crypto.Fingerprint(drone), "--drone", closed}, code: ExitNoAnswer,
			errParts: []string{"nothing listens at " + closed}},
		{name: "zero timeout", args: []string{"--expect", crypto.Fingerprint(drone), "--timeout", "0s"}, code: ExitUsage, errParts: []string{"--timeout"}},
		{name: "no transport flag", args: []string{"--expect", crypto.Fingerprint(drone), "--transport", "dtls"}, code: ExitUsage, errParts: []string{"transport"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := tt.out
			if out == "" {
				out = f.path("pinned" + string(rune('a'+i)) + ".pub")
			}
			before, existed := readFile(t, out)
			args := append([]string{"--drone", d.addr, "--psk", f.psk, "--out", out}, tt.args...)
			r := runPin(t, tt.terminal, tt.stdin, args...)
			r.want(t, tt.code, tt.errParts...)
			after, exists := readFile(t, out)
			if tt.code != 0 {
				if exists != existed || after != before {
					t.Fatalf("a refused pin changed %s: %q", out, after)
				}
				return
			}
			if after != dronePEM || mode(t, out) != 0o644 {
				t.Fatalf("%s: mode %v, content %q, want the drone's .pub", out, mode(t, out), after)
			}
			shown := r.stdout + r.stderr
			if !strings.Contains(shown, crypto.Fingerprint(drone)) || !strings.Contains(shown, crypto.DigitFingerprint(drone)) ||
				!strings.Contains(r.stdout, "pinned:") {
				t.Fatalf("fingerprints or result not shown: stdout %q stderr %q", r.stdout, r.stderr)
			}
			if tt.terminal && strings.Contains(r.stderr, "Type yes to pin it") != (len(tt.args) == 0) {
				t.Fatalf("question asked %v, want %v: %q", strings.Contains(r.stderr, "Type yes"), len(tt.args) == 0, r.stderr)
			}
		})
	}

	// The pinned file is a working --drone-pub.
	pinned := f.path("pinned-for-send.pub")
	runPin(t, false, "", "--drone", d.addr, "--psk", f.psk, "--out", pinned, "--expect", crypto.Fingerprint(drone)).want(t, 0)
	args := linkArgs(f, d.addr, "alice", "alice", "alice.pw")
	args[3] = pinned // --drone-pub
	run(t, "", append(append([]string{"send"}, args...), "hover")...).want(t, 0)
}
