package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// The daemon memory mode (--daemon-memory N) runs the real dronelinkd as its own process
// and reads its resident memory (VmRSS, and the peak VmHWM, from /proc/PID/status): idle,
// at the peak of N simultaneous logins (the larger of VmHWM and VmRSS sampled every 20 ms),
// and while it settles afterwards. The operators are link.Clients in this process, each with its own key and
// user, whose passwords are argon2id hashes with --argon2 parameters.

// daemonMemOptions are the flags of the daemon memory mode.
type daemonMemOptions struct {
	logins int           // simultaneous logins; 0: mode off
	bin    string        // dronelinkd to run; "": build ./cmd/dronelinkd
	flags  []string      // extra daemon flags
	watch  time.Duration // how long to watch after the logins
	settle time.Duration // idle time before the idle reading
	argon2 userdb.Params // the users' password hashes
}

// notWatched is memResult.under30 when no sample came after the logins.
const notWatched = -2

// rssSampleEvery is the sampling period of the resident memory.
const rssSampleEvery = 20 * time.Millisecond

// parseArgon2 parses "m=65536,t=1,p=2" (m in KiB) into hash parameters.
func parseArgon2(s string) (userdb.Params, error) {
	p := userdb.DefaultParams
	for f := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil {
			return p, fmt.Errorf("%q: want m=KiB,t=N,p=N", f)
		}
		switch k {
		case "m":
			p.MemoryKiB = uint32(n)
		case "t":
			p.Time = uint32(n)
		case "p":
			if n > 255 {
				return p, fmt.Errorf("%q: p too large", f)
			}
			p.Threads = uint8(n)
		default:
			return p, fmt.Errorf("%q: want m=KiB,t=N,p=N", f)
		}
	}
	return p, nil
}

// memResult is one run of the daemon memory mode, in KiB.
type memResult struct {
	o                 daemonMemOptions
	idle, peak, hwm   int64
	after1s, after10s int64
	end               int64
	under30           time.Duration // from the last login's answer to VmRSS under 30 MB; -1: never
	loginTime         time.Duration // first login sent to the last one answered
}

// mb formats KiB as megabytes (10^6 bytes, as the figures); "-" if not measured.
func mb(kib int64) string {
	if kib <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fMB", float64(kib)*1024/1e6)
}

func (r memResult) line() string {
	under := "never"
	if r.under30 == notWatched {
		under = "-"
	} else if r.under30 >= 0 {
		under = r.under30.Round(10 * time.Millisecond).String()
	}
	flags := strings.Join(r.o.flags, " ")
	if flags == "" {
		flags = "(defaults)"
	}
	return fmt.Sprintf("daemon-memory logins=%d argon2=m=%d,t=%d,p=%d flags=%q idle=%s peak=%s hwm=%s after1s=%s after10s=%s end=%s under30MB=%s logins_took=%s",
		r.o.logins, r.o.argon2.MemoryKiB, r.o.argon2.Time, r.o.argon2.Threads, flags,
		mb(r.idle), mb(r.peak), mb(r.hwm), mb(r.after1s), mb(r.after10s), mb(r.end), under,
		r.loginTime.Round(time.Millisecond))
}

// readStatus reads VmRSS and VmHWM of pid, in KiB.
func readStatus(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %q", pid, name, rest)
		}
		if name == "VmRSS" {
			rss = n
		} else {
			hwm = n
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
	}
	return rss, hwm, nil
}

// buildDaemon builds ./cmd/dronelinkd as a release build would (no race detector) into dir.
func buildDaemon(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "dronelinkd")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "github.com/dronelink/dronelink/cmd/dronelinkd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building dronelinkd: %v\n%s", err, b)
	}
	return out, nil
}

// runDaemonMemory is the daemon memory mode.
func runDaemonMemory(ctx context.Context, o daemonMemOptions) (memResult, error) {
	r := memResult{o: o, under30: -1}
	dir, err := os.MkdirTemp("", "dronelink-bench-mem-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	bin := o.bin
	if bin == "" {
		if bin, err = buildDaemon(ctx, dir); err != nil {
			return r, err
		}
	}
	ids, err := newIdentities(linkKeyBits, o.logins)
	if err != nil {
		return r, err
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	if err := crypto.SavePrivateKey(path("drone.key"), ids.drone); err != nil {
		return r, err
	}
	if err := crypto.SavePSK(path("psk"), ids.psk); err != nil {
		return r, err
	}
	passwords := make([][]byte, o.logins)
	err = userdb.Update(path("users"), true, func(db *userdb.DB) (*userdb.DB, error) {
		for i, k := range ids.operators {
			passwords[i] = []byte(fmt.Sprintf("bench password %d", i))
			hash, err := userdb.HashPassword(passwords[i], o.argon2)
			if err != nil {
				return nil, err
			}
			if db, err = db.WithUser(fmt.Sprintf("pilot%d", i), link.RolePilot, hash, &k.PublicKey); err != nil {
				return nil, err
			}
		}
		return db, nil
	})
	if err != nil {
		return r, err
	}

	addr, err := freeUDPPort()
	if err != nil {
		return r, err
	}
	args := append([]string{"--listen", addr.String(), "--key", path("drone.key"), "--psk", path("psk"),
		"--users", path("users")}, o.flags...)
	daemon := exec.CommandContext(ctx, bin, args...)
	stderr, err := daemon.StderrPipe()
	if err != nil {
		return r, err
	}
	daemon.Stdout = io.Discard
	if err := daemon.Start(); err != nil {
		return r, err
	}
	defer func() {
		daemon.Process.Signal(os.Interrupt)
		daemon.Wait()
	}()
	started := make(chan struct{})
	go func() { // the log is read to the end, so the daemon never blocks on it
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "dronelinkd started") {
				once.Do(func() { close(started) })
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		return r, errors.New("dronelinkd did not start within 30 s")
	}
	pid := daemon.Process.Pid
	time.Sleep(o.settle) // the measurement's idle period, not synchronisation
	if r.idle, _, err = readStatus(pid); err != nil {
		return r, err
	}

	// Sample from now until the end of the watch.
	type sample struct {
		at  time.Time
		rss int64
	}
	var mu sync.Mutex
	var samples []sample
	stop := make(chan struct{})
	sampled := make(chan error, 1)
	go func() {
		t := time.NewTicker(rssSampleEvery)
		defer t.Stop()
		for {
			rss, _, err := readStatus(pid)
			if err != nil {
				sampled <- err
				return
			}
			mu.Lock()
			samples = append(samples, sample{time.Now(), rss})
			mu.Unlock()
			select {
			case <-stop:
				sampled <- nil
				return
			case <-t.C:
			}
		}
	}()

	start := time.Now()
	clients := make([]*link.Client, o.logins)
	errs := make([]error, o.logins)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				errs[i] = err
				return
			}
			clients[i], errs[i] = link.Dial(dctx, link.ClientConfig{
				Conn: link.NewUDPConn(uc), Drone: addr, PSK: ids.psk, OperatorKey: ids.operators[i],
				DronePublic: &ids.drone.PublicKey, User: fmt.Sprintf("pilot%d", i), Password: passwords[i],
			})
			if errs[i] != nil {
				uc.Close()
			}
		})
	}
	wg.Wait()
	loggedIn := time.Now()
	r.loginTime = loggedIn.Sub(start)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	if err := errors.Join(errs...); err != nil {
		close(stop)
		<-sampled
		return r, fmt.Errorf("login: %w", err)
	}
	time.Sleep(o.watch) // the watch period, not synchronisation
	close(stop)
	if err := <-sampled; err != nil {
		return r, err
	}
	if _, r.hwm, err = readStatus(pid); err != nil {
		return r, err
	}
	r.peak = r.hwm // the kernel's high-water mark catches a peak between two samples
	mu.Lock()
	defer mu.Unlock()
	at := func(d time.Duration) int64 { // the last sample at or before loggedIn+d
		var v int64
		for _, s := range samples {
			if s.at.After(loggedIn.Add(d)) {
				break
			}
			v = s.rss
		}
		return v
	}
	if last := samples[len(samples)-1]; last.at.Before(loggedIn) {
		r.under30 = notWatched
	}
	for _, s := range samples {
		r.peak = max(r.peak, s.rss)
		if r.under30 < 0 && !s.at.Before(loggedIn) && s.rss*1024 < 30e6 {
			r.under30 = s.at.Sub(loggedIn)
		}
	}
	if o.watch >= time.Second {
		r.after1s = at(time.Second)
	}
	if o.watch >= 10*time.Second {
		r.after10s = at(10 * time.Second)
	}
	r.end = samples[len(samples)-1].rss
	return r, nil
}

// freeUDPPort returns a loopback UDP address that was free a moment ago.
func freeUDPPort() (netip.AddrPort, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort(), nil
}
