package e2e

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/dronelink/dronelink/internal/lossproxy"
	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/link"
)

// operatorVia is f.operator with the drone reached through addr (a man in the middle).
func (f *fleet) operatorVia(addr, user string) []string {
	return []string{"--drone", addr, "--drone-pub", f.path("drone.key.pub"), "--key", f.path(user + ".key"),
		"--psk", f.path("psk"), "--user", user, "--password-file", f.path(user + ".pw")}
}

// commandDatagramSize is the size of the native data datagram that carries command text.
func commandDatagramSize(text string) int {
	return link.DataOverhead + app.CommandHeaderSize + len(text)
}

// #13 finding 1, end to end: a man in the middle withholds every copy of "arm motors"
// (and, as an attacker would, everything the operator sends after it, so the session is
// not closed); the operator's send exits 5 saying the command will not run; the operator
// sends "land", which runs; then the attacker releases the held copies. The drone refuses
// them as late: "arm motors" never appears on its standard output.
func TestLateCommandNeverRuns(t *testing.T) {
	f := newFleet(t)
	d := startDrone(t, f)
	mitm, err := lossproxy.Start(lossproxy.Config{Target: d.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer mitm.Close()
	armSize := commandDatagramSize("arm motors")
	var mu sync.Mutex
	var victim netip.AddrPort // the operator flow whose traffic is withheld
	mitm.Withhold(func(from netip.AddrPort, toTarget bool, b []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		if toTarget && len(b) == armSize {
			victim = from
		}
		return toTarget && victim.IsValid() && from == victim
	})
	arm := run(t, "", "dronelink", append(append([]string{"send"}, f.operatorVia(mitm.Addr().String(), "alice")...),
		"--timeout", "3s", "arm", "motors")...)
	oneLine(t, arm, 5, "will not execute the command any more")
	if mitm.Withheld() == 0 {
		t.Fatal("the man in the middle held nothing back")
	}
	land := run(t, "", "dronelink", append(append([]string{"send"}, f.operatorVia(mitm.Addr().String(), "alice")...), "land")...)
	if land.code != 0 || !strings.HasPrefix(land.stdout, "ack ok:") {
		t.Fatalf("land: exit %d, %q %q", land.code, land.stdout, land.stderr)
	}
	released := mitm.Release(func(toTarget bool, b []byte) bool { return toTarget && len(b) == armSize })
	t.Logf("released %d copies of arm motors", released)
	waitFor(t, "the drone to refuse the released command", func() bool {
		_, errs := d.output()
		return strings.Contains(errs, "result=late")
	})
	out, errs := d.output()
	if n := d.executed("arm motors"); n != 0 {
		t.Fatalf("arm motors executed %d times after the operator was told it failed:\n%s", n, out)
	}
	if d.executed("land") != 1 {
		t.Fatalf("land not executed once:\n%s", out)
	}
	for _, line := range strings.Split(errs, "\n") {
		if strings.Contains(line, "result=late") {
			t.Logf("drone: %s", line)
		}
	}
	t.Logf("drone standard output:\n%s", out)
}

// At most once across a restart (#13, THREAT-MODEL G15), end to end: the drone executes
// "take off" but its acknowledgement is withheld; the daemon is killed with SIGKILL and
// started again on the same address; the operator, still retransmitting, sets up a new
// session and logs in again, and its retransmission is refused as issued before the
// restart. send exits 5 with "outcome unknown"; "take off" is printed once in all.
func TestAtMostOnceAcrossRestart(t *testing.T) {
	f := newFleet(t)
	d := startDrone(t, f)
	mitm, err := lossproxy.Start(lossproxy.Config{Target: d.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer mitm.Close()
	var mu sync.Mutex
	seen := false
	size := commandDatagramSize("take off")
	mitm.Withhold(func(_ netip.AddrPort, toTarget bool, b []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		if toTarget && len(b) == size {
			seen = true
		}
		return !toTarget && seen // every answer once the command went out
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "dronelink"), append(append([]string{"send"},
		f.operatorVia(mitm.Addr().String(), "alice")...), "--timeout", "30s", "take", "off")...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the drone to execute take off", func() bool { return d.executed("take off") == 1 })
	firstOut, _ := d.output()
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
	mitm.Release(func(bool, []byte) bool { return false }) // the acknowledgement is lost for good
	d2 := startDrone(t, f, "--listen", d.addr)
	err = cmd.Wait()
	transcript.output([]byte(stdout.String()))
	transcript.output([]byte(stderr.String()))
	code := cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatal(err)
	}
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	oneLine(t, r, 5, "outcome unknown")
	if n := d2.executed("take off"); n != 0 {
		out, _ := d2.output()
		t.Fatalf("take off executed again after the restart (%d times):\n%s", n, out)
	}
	_, errs := d2.output()
	if !strings.Contains(errs, "result=restarted") {
		t.Fatalf("the restarted drone did not refuse the retransmission as restarted:\n%s", errs)
	}
	out2, _ := d2.output()
	t.Logf("first run's output:\n%ssecond run's output:\n%s", firstOut, out2)
}
