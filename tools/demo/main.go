// Command demo shows dronelink end to end on loopback with throwaway identities: it makes
// keys, a PSK and two users (a pilot and an observer), starts dronelinkd, puts a lossy
// radio link (30% loss, reordering, duplication) between the operators and the drone, sends
// commands, streams telemetry, tunnels MAVLink between a (simulated) autopilot and two
// ground stations through dronelink gcs, and prints what each side sees. `make demo` runs it.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dronelink/dronelink/internal/lossproxy"
)

func main() {
	bin := flag.String("bin", "bin", "folder with the dronelink and dronelinkd binaries")
	loss := flag.Float64("loss", 0.3, "loss probability of the radio link, each way")
	flag.Parse()
	if err := run(*bin, *loss); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

var outMu sync.Mutex

// say prints one line with the speaker's tag.
func say(who, format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf("%-8s %s\n", "["+who+"]", fmt.Sprintf(format, args...))
}

// echo copies r to the terminal line by line with a tag.
func echo(who string, r io.Reader, wg *sync.WaitGroup) {
	wg.Go(func() {
		s := bufio.NewScanner(r)
		for s.Scan() {
			say(who, "%s", s.Text())
		}
	})
}

func run(bin string, loss float64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dl, dld := filepath.Join(bin, "dronelink"), filepath.Join(bin, "dronelinkd")
	dir, err := os.MkdirTemp("", "dronelink-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := func(name string) string { return filepath.Join(dir, name) }
	cli := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, dl, args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("dronelink %s: %v: %s", args[0], err, strings.TrimSpace(string(out)))
		}
		return strings.TrimSpace(string(out)), nil
	}

	say("admin", "throwaway identities in %s", dir)
	for _, name := range []string{"drone", "alice", "olga"} {
		out, err := cli("keygen", "--out", path(name+".key"), "--bits", "2048")
		if err != nil {
			return err
		}
		say("admin", "keygen %s: %s", name, out)
	}
	if _, err := cli("psk", "--out", path("fleet.psk")); err != nil {
		return err
	}
	for _, u := range []struct{ name, role string }{{"alice", "pilot"}, {"olga", "observer"}} {
		if err := os.WriteFile(path(u.name+".pw"), []byte(u.name+" correct horse\n"), 0o600); err != nil {
			return err
		}
		out, err := cli("user", "add", "--db", path("users.db"), "--name", u.name, "--role", u.role,
			"--pubkey", path(u.name+".key.pub"), "--password-file", path(u.name+".pw"))
		if err != nil {
			return err
		}
		say("admin", "%s", out)
	}

	port, err := freePort()
	if err != nil {
		return err
	}
	telemetryPort, err := freePort()
	if err != nil {
		return err
	}
	mavPort, err := freePort()
	if err != nil {
		return err
	}
	mavAddr := fmt.Sprintf("127.0.0.1:%d", mavPort)
	droneAddr := fmt.Sprintf("127.0.0.1:%d", port)
	var wg sync.WaitGroup
	daemon := exec.Command(dld, "--listen", droneAddr, "--key", path("drone.key"), "--psk", path("fleet.psk"),
		"--users", path("users.db"), "--telemetry-in", fmt.Sprintf("127.0.0.1:%d", telemetryPort),
		"--mavlink-listen", mavAddr)
	stdout, _ := daemon.StdoutPipe()
	stderr, _ := daemon.StderrPipe()
	if err := daemon.Start(); err != nil {
		return err
	}
	defer daemon.Process.Kill()
	echo("drone", stdout, &wg)
	echo("drone", stderr, &wg)

	radio, err := lossproxy.Start(lossproxy.Config{Target: droneAddr, Loss: loss, Duplicate: 0.05, Reorder: 0.1, Seed: uint64(time.Now().UnixNano())})
	if err != nil {
		return err
	}
	defer radio.Close()
	say("radio", "lossy link %s -> %s: %.0f%% loss each way, 10%% reordering, 5%% duplication", radio.Addr(), droneAddr, loss*100)
	time.Sleep(300 * time.Millisecond) // let the daemon bind

	common := func(user string) []string {
		return []string{"--drone", radio.Addr().String(), "--drone-pub", path("drone.key.pub"), "--key", path(user + ".key"),
			"--psk", path("fleet.psk"), "--user", user, "--password-file", path(user + ".pw")}
	}
	listen := exec.CommandContext(ctx, dl, append([]string{"listen"}, append(common("olga"), "--count", "5")...)...)
	lout, _ := listen.StdoutPipe()
	lerr, _ := listen.StderrPipe()
	if err := listen.Start(); err != nil {
		return err
	}
	var lwg sync.WaitGroup
	echo("olga", lout, &lwg)
	echo("olga", lerr, &lwg)

	stopTelemetry := make(chan struct{})
	wg.Go(func() {
		c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", telemetryPort))
		if err != nil {
			return
		}
		defer c.Close()
		for n := 1; ; n++ {
			select {
			case <-stopTelemetry:
				return
			case <-time.After(300 * time.Millisecond):
			}
			fmt.Fprintf(c, "telemetry #%d: battery %d%%, altitude %d m", n, 100-n, 10+n%3)
		}
	})

	for _, msg := range []string{"arm", "take off to 10 m", "hold position", "land"} {
		out, err := cli(append([]string{"send"}, append(common("alice"), msg)...)...)
		if err != nil {
			return err
		}
		say("alice", "sent %q -> %s", msg, out)
	}
	say("olga", "an observer may not command:")
	if out, err := exec.CommandContext(ctx, dl, append([]string{"send"}, append(common("olga"), "disarm")...)...).CombinedOutput(); err == nil {
		return errors.New("the observer's command was accepted")
	} else {
		say("olga", "%s", strings.TrimSpace(string(out)))
	}

	if err := listen.Wait(); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	lwg.Wait()
	close(stopTelemetry)
	if err := mavlinkDemo(ctx, dl, mavAddr, common); err != nil {
		return fmt.Errorf("MAVLink: %w", err)
	}
	st := radio.Stats()
	say("radio", "forwarded %d, dropped %d, duplicated %d, reordered %d datagrams", st.Forwarded, st.Dropped, st.Duplicated, st.Reordered)
	daemon.Process.Signal(syscall.SIGTERM)
	if err := daemon.Wait(); err != nil {
		return fmt.Errorf("dronelinkd: %w", err)
	}
	wg.Wait()
	say("demo", "every command executed once and acknowledged over a lossy link, MAVLink tunnelled by role; done")
	return nil
}

// freePort asks the kernel for a free UDP port on loopback.
func freePort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}
