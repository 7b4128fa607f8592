// Command coldsend measures "dronelink send" from a cold start over a lossy link, with the
// real programs: it makes throwaway keys (the default 3072 bits), a PSK and --pilots pilot
// users (argon2id with the default parameters), starts dronelinkd from --bin, puts
// internal/lossproxy (loss each way, delay one way) in front of it, and runs
// "dronelink send ... land" --runs times, the pilots in turn, timing each process from its
// start to its exit. It prints the distribution (deciles, p99, the worst) and how many runs
// were acknowledged within 2 s.
//
//	go run ./tools/coldsend --bin bin [--runs 100] [--loss 0.3] [--delay 20ms] [--pilots 10]
//
// The pilots take turns because a session whose close message is lost stays on the drone
// until its idle timeout (a minute), and the drone holds at most 8 sessions per operator
// key: one key sending back to back over a lossy link would soon be refused as busy.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dronelink/dronelink/internal/lossproxy"
)

func main() {
	bin := flag.String("bin", "bin", "folder with the dronelink and dronelinkd binaries")
	runs := flag.Int("runs", 100, "dronelink send runs")
	loss := flag.Float64("loss", 0.3, "loss probability of the link, each way")
	delay := flag.Duration("delay", 20*time.Millisecond, "one-way delay of the link")
	pilots := flag.Int("pilots", 10, "pilot users (each with its own key), taking turns")
	flag.BoolVar(&verbose, "v", false, "print every run's time")
	flag.Parse()
	if *runs < 1 || *pilots < 1 || *loss < 0 || *loss >= 1 || *delay < 0 {
		fmt.Fprintln(os.Stderr, "coldsend: want --runs and --pilots of at least 1, --loss in [0,1), --delay >= 0")
		os.Exit(2)
	}
	if err := run(*bin, *runs, *loss, *delay, *pilots); err != nil {
		fmt.Fprintf(os.Stderr, "coldsend: %v\n", err)
		os.Exit(1)
	}
}

// verbose: print every run.
var verbose bool

func run(bin string, runs int, loss float64, delay time.Duration, pilots int) error {
	dl, dld := filepath.Join(bin, "dronelink"), filepath.Join(bin, "dronelinkd")
	dir, err := os.MkdirTemp("", "dronelink-coldsend-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := func(name string) string { return filepath.Join(dir, name) }
	cli := func(args ...string) error {
		if out, err := exec.Command(dl, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("dronelink %s: %v: %s", args[0], err, strings.TrimSpace(string(out)))
		}
		return nil
	}

	names := []string{"drone"}
	for i := range pilots {
		names = append(names, fmt.Sprintf("pilot%d", i))
	}
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() { errs[i] = cli("keygen", "--out", path(name+".key")) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	if err := cli("psk", "--out", path("fleet.psk")); err != nil {
		return err
	}
	for _, name := range names[1:] {
		if err := os.WriteFile(path(name+".pw"), []byte(name+" correct horse\n"), 0o600); err != nil {
			return err
		}
		if err := cli("user", "add", "--db", path("users.db"), "--name", name, "--role", "pilot",
			"--pubkey", path(name+".key.pub"), "--password-file", path(name+".pw")); err != nil {
			return err
		}
	}

	droneAddr, err := freeAddr()
	if err != nil {
		return err
	}
	var daemonErr bytes.Buffer
	var daemonMu sync.Mutex
	daemon := exec.Command(dld, "--listen", droneAddr, "--key", path("drone.key"), "--psk", path("fleet.psk"),
		"--users", path("users.db"))
	daemon.Stderr = lockedWriter{&daemonMu, &daemonErr}
	if err := daemon.Start(); err != nil {
		return err
	}
	defer func() {
		daemon.Process.Signal(syscall.SIGTERM)
		daemon.Wait()
	}()
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		daemonMu.Lock()
		started := strings.Contains(daemonErr.String(), "dronelinkd started")
		daemonMu.Unlock()
		if started {
			break
		}
		if time.Since(start) > 10*time.Second {
			return fmt.Errorf("dronelinkd did not start: %s", daemonErr.String())
		}
	}
	proxy, err := lossproxy.Start(lossproxy.Config{Target: droneAddr, Loss: loss, Delay: delay, Seed: uint64(time.Now().UnixNano())})
	if err != nil {
		return err
	}
	defer proxy.Close()

	var times []time.Duration
	failed := 0
	for i := range runs {
		name := names[1+i%pilots]
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, dl, "send", "--drone", proxy.Addr().String(), "--drone-pub", path("drone.key.pub"),
			"--key", path(name+".key"), "--psk", path("fleet.psk"), "--user", name, "--password-file", path(name+".pw"), "land")
		start := time.Now()
		out, err := cmd.Output()
		took := time.Since(start)
		cancel()
		if err != nil || !strings.HasPrefix(string(out), "ack ok:") {
			failed++
			fmt.Fprintf(os.Stderr, "run %d (%s): %v after %v: %q\n", i+1, name, err, took.Round(time.Millisecond), out)
			continue
		}
		times = append(times, took)
		if verbose {
			fmt.Printf("run %d (%s): %v\n", i+1, name, took.Round(time.Millisecond))
		}
	}
	slices.Sort(times)
	within := 0
	for _, t := range times {
		if t <= 2*time.Second {
			within++
		}
	}
	fmt.Printf("coldsend loss=%.0f%% delay=%v runs=%d pilots=%d within-2s=%d/%d failed=%d\n",
		loss*100, delay, runs, pilots, within, runs, failed)
	if len(times) > 0 {
		var parts []string
		for _, p := range []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1} {
			i := min(max(int(p*float64(len(times))+0.5)-1, 0), len(times)-1)
			parts = append(parts, fmt.Sprintf("p%.0f=%dms", p*100, times[i].Milliseconds()))
		}
		fmt.Printf("coldsend %s\n", strings.Join(parts, " "))
	}
	return nil
}

// lockedWriter serialises writes to a buffer that is also read while the daemon runs.
type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// freeAddr returns a loopback UDP address that was free a moment ago.
func freeAddr() (string, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}
