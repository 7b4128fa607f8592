package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: the test holds the master, the program gets the
// slave as its terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatalf("open the slave: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// screen collects what the program writes to the terminal.
type screen struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *screen) Write(p []byte) (int, error) {
	transcript.output(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// send on a real terminal is interactive: a prompt named after the profile's drone, line
// editing, history, commands over one session, Ctrl-D to end; the terminal is restored.
func TestInteractiveSendOnTerminal(t *testing.T) {
	f := newFleet(t)
	d := startDrone(t, f)
	conf := f.profile(t, d)
	master, slave := openPTY(t)
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 100}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "dronelink"), "send", "--config", conf, "--drone", "alpha")
	cmd.Env = fastEnv()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var scr screen
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			scr.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	shows := func(what string, n int) {
		t.Helper()
		waitFor(t, "the terminal to show "+strconv.Quote(what), func() bool {
			select {
			case err := <-done:
				t.Fatalf("dronelink send exited: %v\n%s", err, scr.String())
			default:
			}
			return strings.Count(scr.String(), what) >= n
		})
	}
	typeKeys := func(s string) {
		t.Helper()
		if _, err := master.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	shows("alpha> ", 1)
	typeKeys("take of\x01\x05f\r") // Ctrl-A, Ctrl-E: edited, then completed to "take off"
	shows("ack ok: executed: take off", 1)
	typeKeys("\x1b[A\r") // up: the previous command again
	shows("ack ok: executed: take off", 2)
	typeKeys("land\r")
	shows("ack ok: executed: land", 1)
	shows("alpha> ", 4)
	typeKeys("\x04") // Ctrl-D at the prompt
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit %v\n%s", err, scr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Ctrl-D did not end the session\n%s", scr.String())
	}
	if n := d.executed("take off"); n != 2 {
		t.Errorf("the drone ran take off %d times, want 2", n)
	}
	if h, l := d.logLines("handshake"), d.logLines("login"); h != 1 || l != 1 {
		t.Errorf("%d handshakes and %d logins, want one of each", h, l)
	}
	after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
		t.Errorf("the terminal was not restored: lflag %#x iflag %#x oflag %#x, was %#x %#x %#x",
			after.Lflag, after.Iflag, after.Oflag, before.Lflag, before.Iflag, before.Oflag)
	}
}
