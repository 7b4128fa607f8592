package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/internal/release"
)

// The release binaries (issue #14): the daemon cross-built as `make release` builds it, for
// the drones' ARM computers, run under qemu-user against the amd64 operator tool; and the
// daemon's resident memory through three simultaneous logins.

// buildRelease builds cmd/program for tg as `make release` does (CGO_ENABLED=0, -trimpath,
// -s -w, stamped with version) and returns its path. No race detector: these binaries are
// the ones that ship, and the memory test measures one.
func buildRelease(t *testing.T, program string, tg release.Target, version string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), release.FileName(program, tg))
	args := append(append([]string{"build"}, release.BuildFlags(version)...), "-o", out, "../cmd/"+program)
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), tg.Env()...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s (%s): %v\n%s", strings.Join(args, " "), strings.Join(tg.Env(), " "), err, b)
	}
	return out
}

// The arm64 and armv7 daemons, built as released (and checked: static, stripped, stamped,
// at most 15 MB), run under qemu-user on loopback: the amd64 dronelink sends a command that
// is executed and acknowledged "ok", and receives telemetry fed to the daemon's
// --telemetry-in. binfmt_misc is not needed: the emulator is called by name. Without
// qemu-user the test is skipped, on CI (CI set) it fails: .ci/run installs it.
func TestCrossArchDaemons(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("qemu-user runs Linux binaries")
	}
	f := newFleet(t)
	const version = "v0.0.0-e2e-qemu"
	for _, tc := range []struct {
		target release.Target
		qemu   string
	}{
		{release.Target{GOOS: "linux", GOARCH: "arm64"}, "qemu-aarch64"},
		{release.Target{GOOS: "linux", GOARCH: "arm", GOARM: "7"}, "qemu-arm"},
	} {
		t.Run(tc.target.Name(), func(t *testing.T) {
			emu, err := exec.LookPath(tc.qemu)
			if err != nil {
				if os.Getenv("CI") != "" {
					t.Fatalf("%s not found on CI (.ci/run installs Debian's qemu-user): %v", tc.qemu, err)
				}
				t.Skipf("SKIPPED the %s daemon: %s not found (apt-get install qemu-user)", tc.target.Name(), tc.qemu)
			}
			bin := buildRelease(t, "dronelinkd", tc.target, version)
			if errs := release.Verify(bin, tc.target, version, release.MaxSize); errs != nil {
				t.Fatalf("the %s daemon is no release binary: %v", tc.target.Name(), errors.Join(errs...))
			}
			fi, _ := os.Stat(bin)
			t.Logf("dronelinkd-%s: %d bytes", tc.target.Name(), fi.Size())
			out, err := exec.Command(emu, bin, "--version").CombinedOutput()
			if err != nil || !strings.Contains(string(out), version) {
				t.Fatalf("%s dronelinkd --version: %v: %q, want the stamp %s", tc.qemu, err, out, version)
			}

			d := startDroneCmd(t, f, []string{emu, bin})
			msg := "take off on " + tc.target.Name()
			start := time.Now()
			// Everything is slow under emulation (RSA, argon2id): a generous deadline.
			r := f.send(t, d, "alice", "alice", "alice.pw", "--timeout", "50s", msg)
			if r.code != 0 || r.stdout != "ack ok: executed: "+msg+"\n" {
				t.Fatalf("send to the %s daemon: exit %d, stdout %q, stderr %q", tc.target.Name(), r.code, r.stdout, r.stderr)
			}
			t.Logf("command acknowledged by the %s daemon in %v", tc.target.Name(), time.Since(start).Round(time.Millisecond))
			if n := d.executed(msg); n != 1 {
				out, _ := d.output()
				t.Fatalf("the %s daemon printed the command %d times:\n%s", tc.target.Name(), n, out)
			}
			telemetry := "battery 91% on " + tc.target.Name()
			got := listenOnce(t, d, f.operator(d, "olga", "olga", "olga.pw"), telemetry)
			if got != telemetry+"\n" {
				t.Fatalf("listen printed %q, want %q", got, telemetry+"\n")
			}
		})
	}
}

// listenOnce runs dronelink listen --count 1 with args and feeds payload to the daemon's
// --telemetry-in until listen has printed one payload and exited; it returns what listen
// printed. Generous deadlines: the daemon may run under emulation.
func listenOnce(t *testing.T, d *drone, args []string, payload string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	listen := exec.CommandContext(ctx, filepath.Join(binDir, "dronelink"),
		append(append([]string{"listen"}, args...), "--count", "1", "--timeout", "50s")...)
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
	// Telemetry is fire-and-forget and goes only to operators already logged in: send it
	// until listen has one (a poll of the external programs, 50 ms apart).
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		feed.Write([]byte(payload))
		select {
		case err := <-done:
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Fatalf("listen: %v; stderr %q", err, lerr.String())
			}
			return lout.String()
		case <-tick.C:
		}
	}
}

// readStatus reads VmRSS and VmHWM of pid from /proc, in bytes.
func readStatus(t *testing.T, pid int) (rss, hwm int64) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		name, rest, _ := strings.Cut(line, ":")
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		switch {
		case name != "VmRSS" && name != "VmHWM":
		case err != nil:
			t.Fatalf("/proc/%d/status: %q", pid, line)
		case name == "VmRSS":
			rss = kb * 1024
		default:
			hwm = kb * 1024
		}
	}
	if rss == 0 || hwm == 0 {
		t.Fatalf("/proc/%d/status has no VmRSS or VmHWM", pid)
	}
	return rss, hwm
}

// The memory goals of issue #14 for a 512 MB companion computer, on the release build of
// the daemon with default settings and users hashed with the default cost (64 MiB): at
// most 20 MB resident idle, at most 100 MB at the peak of three simultaneous logins (VmHWM,
// the kernel's own high-water mark, and samples every 20 ms), and under 30 MB once the
// daemon has returned the password checks' memory (it logs that, at debug level, after
// each check). Measured about 11, 81 and 15 MB (BENCHMARKS.md): the bounds leave a margin
// without letting the old behaviour (214 MB) or two checks' worth at once (145 MB) pass.
// How soon the memory goes back is measured by `go run ./bench --daemon-memory 3`, not
// asserted here.
func TestDaemonMemory(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc/PID/status to read the daemon's resident memory from")
	}
	const (
		idleMax  = 20e6
		peakMax  = 100e6
		afterMax = 30e6
	)
	bin := buildRelease(t, "dronelinkd", release.Target{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH}, "v0.0.0-e2e-memory")
	f := newFleet(t)
	d := startDroneCmd(t, f, []string{bin}, "--log-level", "debug")
	pid := d.cmd.Process.Pid
	idle, _ := readStatus(t, pid)

	var peak int64
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
				for line := range strings.Lines(string(data)) {
					if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
						kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
						peak = max(peak, kb*1024)
					}
				}
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	users := []string{"alice", "bob", "olga"}
	results := make([]result, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() { results[i] = f.send(t, d, u, u, u+".pw", "--timeout", "50s", "memory test by "+u) })
	}
	wg.Wait()
	close(stop)
	<-sampled
	for i, u := range users {
		want := 0
		if u == "olga" {
			want = 4 // logged in, then refused: an observer
		}
		if results[i].code != want {
			t.Fatalf("%s: exit %d, want %d; stderr %q", u, results[i].code, want, results[i].stderr)
		}
	}
	rss, hwm := readStatus(t, pid)
	peak = max(peak, hwm, rss)

	// All three checks done: the daemon says it gave the memory back after the third.
	waitFor(t, "the daemon to return the password checks' memory", func() bool {
		_, stderr := d.output()
		for line := range strings.Lines(stderr) {
			if strings.Contains(line, "returned the password checks' memory to the operating system") &&
				strings.Contains(line, "checks=3") {
				return true
			}
		}
		return false
	})
	after, _ := readStatus(t, pid)
	t.Logf("dronelinkd resident memory: idle %.1f MB, peak of 3 simultaneous logins %.1f MB, after %.1f MB",
		float64(idle)/1e6, float64(peak)/1e6, float64(after)/1e6)
	if idle > idleMax {
		t.Errorf("idle: %.1f MB resident, want at most %.0f MB", float64(idle)/1e6, idleMax/1e6)
	}
	if peak > peakMax {
		t.Errorf("three simultaneous logins: %.1f MB resident at the peak, want at most %.0f MB", float64(peak)/1e6, peakMax/1e6)
	}
	if after > afterMax {
		t.Errorf("after the logins: %.1f MB resident, want under %.0f MB", float64(after)/1e6, afterMax/1e6)
	}
}
