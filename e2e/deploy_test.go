package e2e

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const unitFile = "../deploy/dronelinkd.service"

// unitSettings returns the [Service] settings of the unit file, each with its values in
// order.
func unitSettings(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string][]string{}
	section := ""
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			key, value, _ := strings.Cut(line, "=")
			settings[key] = append(settings[key], value)
		}
	}
	return settings
}

// TestServiceUnitSecurity checks the unit's hardening with systemd's own rating.
func TestServiceUnitSecurity(t *testing.T) {
	settings := unitSettings(t)
	for key, want := range map[string]string{
		"User": "dronelink", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
		"ProtectClock": "yes", "ProtectKernelLogs": "yes", "RestrictSUIDSGID": "yes",
		"RestrictRealtime": "yes", "ProtectHostname": "yes", "ProtectProc": "invisible",
		"SystemCallArchitectures": "native", "SystemCallErrorNumber": "EPERM", "UMask": "0077",
		"ProtectSystem": "strict",
	} {
		if got := settings[key]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	if len(settings["SystemCallFilter"]) == 0 {
		t.Error("no SystemCallFilter")
	}

	analyze := need(t, "systemd-analyze", "systemd")
	out, err := exec.Command(analyze, "security", "--no-pager", "--offline=true", unitFile).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for dronelinkd\.service: (\d+\.\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %.1f", score)
	if score > 2.0 {
		t.Errorf("exposure %.1f, want at most 2.0:\n%s", score, out)
	}
}

// syscallGroup expands a systemd system-call group, with the groups it names, into calls.
func syscallGroup(t *testing.T, analyze, group string) map[string]bool {
	t.Helper()
	out, err := exec.Command(analyze, "syscall-filter", "--no-pager", group).Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter %s: %v", group, err)
	}
	calls := map[string]bool{}
	for i, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case i == 0 || line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "@"):
			for c := range syscallGroup(t, analyze, line) {
				calls[c] = true
			}
		default:
			calls[line] = true
		}
	}
	return calls
}

// TestServiceSyscallFilter runs the daemon under strace through a session, a command, a
// forward, a metrics scrape, telemetry and user database reloads, and checks that the unit's
// SystemCallFilter allows every system call it made.
func TestServiceSyscallFilter(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	strace := need(t, "strace", "strace")
	allowed := map[string]bool{}
	for i, filter := range unitSettings(t)["SystemCallFilter"] {
		deny := strings.HasPrefix(filter, "~")
		if i == 0 && deny {
			t.Fatal("the filter starts with a deny list; this test reads allow lists first")
		}
		for _, item := range strings.Fields(strings.TrimPrefix(filter, "~")) {
			calls := map[string]bool{item: true}
			if strings.HasPrefix(item, "@") {
				calls = syscallGroup(t, analyze, item)
			}
			for c := range calls {
				if deny {
					delete(allowed, c)
				} else {
					allowed[c] = true
				}
			}
		}
	}

	f := newFleet(t)
	trace := filepath.Join(t.TempDir(), "trace")
	d := &drone{addr: freePort(t), tin: freePort(t)}
	metricsAddr := freePort(t) // a free TCP port too, on loopback, almost surely
	d.cmd = exec.Command(strace, "-f", "-qq", "-o", trace, filepath.Join(binDir, "dronelinkd"),
		"--listen", d.addr, "--key", f.path("drone.key"), "--psk", f.path("psk"), "--users", f.path("users"),
		"--telemetry-in", d.tin, "--reload-interval", "200ms", "--metrics", metricsAddr, "--forward", freePort(t))
	d.cmd.Stdout = lockedWriter{&d.mu, &d.stdout}
	d.cmd.Stderr = lockedWriter{&d.mu, &d.stderr}
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // strace and the daemon: one group to kill
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { d.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	waitFor(t, "dronelinkd to start under strace", func() bool {
		_, errs := d.output()
		return strings.Contains(errs, "dronelinkd started")
	})
	straceTask := "/proc/" + strconv.Itoa(d.cmd.Process.Pid) + "/task/" + strconv.Itoa(d.cmd.Process.Pid)
	children, err := os.ReadFile(straceTask + "/children")
	if err != nil {
		t.Fatal(err)
	}
	daemonPID, err := strconv.Atoi(strings.TrimSpace(string(children)))
	if err != nil {
		t.Fatalf("the daemon's pid under strace: %q %v", children, err)
	}

	// A forwarded command (refused: nobody listens), telemetry to a listener, a scrape, reloads.
	if r := f.send(t, d, "alice", "alice", "alice.pw", "take off"); r.code != 4 || !strings.Contains(r.stderr, "forward refused") {
		t.Errorf("send: exit %d, %s", r.code, r.stderr)
	}
	listened := make(chan result, 1)
	go func() {
		listened <- run(t, "", "dronelink", append([]string{"listen", "--count", "1"}, f.operator(d, "olga", "olga", "olga.pw")...)...)
	}()
	telemetry, err := net.Dial("udp", d.tin)
	if err != nil {
		t.Fatal(err)
	}
	defer telemetry.Close()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for r := (result{code: -1}); r.code == -1; {
		select {
		case r = <-listened:
			if r.code != 0 || r.stdout != "battery 87%\n" {
				t.Errorf("listen: exit %d, %q %s", r.code, r.stdout, r.stderr)
			}
		case <-tick.C:
			telemetry.Write([]byte("battery 87%")) // until the listener, logged in, got one
		}
	}
	scrape(t, "http://"+metricsAddr+"/metrics")
	syscall.Kill(daemonPID, syscall.SIGHUP)
	mustRun(t, "user", "del", "--db", f.path("users"), "--name", "bob")
	waitFor(t, "the reload", func() bool {
		_, errs := d.output()
		return strings.Count(errs, "user database reloaded") >= 2
	})
	syscall.Kill(daemonPID, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("dronelinkd under strace did not stop on SIGTERM")
	}

	data, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	execved := false
	for _, m := range regexp.MustCompile(`(?m)^\d+ +([a-z0-9_]+)\(`).FindAllStringSubmatch(string(data), -1) {
		if m[1] == "execve" && !execved {
			execved = true // strace's own exec of the daemon, before systemd's filter would apply
			continue
		}
		used[m[1]] = true
	}
	if len(used) < 20 {
		t.Fatalf("only %d system calls traced: %v", len(used), used)
	}
	for c := range used {
		if !allowed[c] {
			t.Errorf("dronelinkd calls %s, which the unit's SystemCallFilter denies", c)
		}
	}
	t.Logf("%d distinct system calls, all allowed", len(used))
}

// TestServiceUser creates the service user from the sysusers.d file in a scratch root: a
// system user without a login shell.
func TestServiceUser(t *testing.T) {
	sysusers := need(t, "systemd-sysusers", "systemd")
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	conf, err := filepath.Abs("../deploy/dronelinkd.sysusers") // a relative one would be under root
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sysusers, "--root", root, conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Split(strings.TrimSpace(string(passwd)), ":")
	if len(fields) != 7 || fields[0] != "dronelink" || fields[5] != "/var/lib/dronelink" || fields[6] != "/usr/sbin/nologin" {
		t.Fatalf("passwd entry %q: want user dronelink, home /var/lib/dronelink, shell /usr/sbin/nologin", passwd)
	}
	if uid, _ := strconv.Atoi(fields[2]); uid == 0 || uid >= 1000 {
		t.Errorf("uid %d is not a system user's", uid)
	}
}
