package control

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serve starts a server on a fresh socket in dir and stops it at the end of the test.
func serve(t *testing.T, path string, status func() Status) {
	t.Helper()
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		NewServer(l, status, nil).Serve(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func sample() Status {
	return Status{Program: ProgramDaemon, Transport: "native", Listen: "127.0.0.1:5000", Started: time.Unix(1_800_000_000, 0).UTC(),
		Sessions: []Session{{Index: 7, User: "alice", Role: "pilot", Peer: "127.0.0.1:4000", State: "active", RTTSeconds: 0.002,
			Traffic: &Traffic{RxPackets: 10, RxBytes: 400, TxPackets: 9, TxBytes: 380, LostPackets: 1, Loss: 1.0 / 11}}}}
}

func TestListenFetchAndCleanUp(t *testing.T) {
	old := syscall.Umask(0) // the socket must be 0600 whatever the umask
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "control.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want only the socket (the temporary directory removed)", len(entries))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		NewServer(l, sample, nil).Serve(ctx)
		close(done)
	}()
	st, err := Fetch(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	want := sample()
	if st.Version != ProtocolVersion || st.Program != want.Program || len(st.Sessions) != 1 ||
		st.Sessions[0].User != "alice" || *st.Sessions[0].Traffic != *want.Sessions[0].Traffic || st.Sessions[0].RTT() != 2*time.Millisecond {
		t.Fatalf("fetched %+v", st)
	}
	cancel()
	<-done
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the socket file is still there after the server stopped: %v", err)
	}
}

// What may already be at the path: nothing, a stale socket (replaced), a live socket, a
// file or a directory (refused, left alone).
func TestListenWhatIsThere(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr string
	}{
		{"nothing", func(*testing.T, string) {}, ""},
		{"stale socket", func(t *testing.T, path string) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			ln.Close()
		}, ""},
		{"socket in use", func(t *testing.T, path string) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}, "in use"},
		{"regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a socket"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "not a socket"},
		{"symbolic link", func(t *testing.T, path string) {
			if err := os.Symlink("/dev/null", path); err != nil {
				t.Fatal(err)
			}
		}, "not a socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "control.sock")
			tc.prepare(t, path)
			before, _ := os.Lstat(path)
			l, err := Listen(path)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				l.Close()
				return
			}
			if err == nil {
				l.Close()
				t.Fatal("Listen succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) || strings.Count(err.Error(), "\n") != 0 {
				t.Errorf("error %q, want one line mentioning %q", err, tc.wantErr)
			}
			if after, _ := os.Lstat(path); before == nil || after == nil || !os.SameFile(before, after) {
				t.Error("what was at the path was replaced")
			}
		})
	}
}

func TestListenPathTooLong(t *testing.T) {
	path := "/tmp/" + strings.Repeat("x", MaxPath)
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("Listen(%d bytes): %v", len(path), err)
	}
}

// Hostile or broken requests get an error answer and never hold the server.
func TestRequests(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	serve(t, path, sample)
	for _, tc := range []struct {
		name, request string
		closeWrite    bool
		wantError     string
	}{
		{"status", "status\n", false, ""},
		{"status with CRLF", "status\r\n", false, ""},
		{"unknown", "pin alpha\n", false, "unknown request"},
		{"empty line", "\n", false, "unknown request"},
		{"no newline", "status", true, "without a newline"},
		{"too long", strings.Repeat("s", MaxRequest+10) + "\n", false, "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tc.request); err != nil {
				t.Fatal(err)
			}
			if tc.closeWrite {
				c.(*net.UnixConn).CloseWrite()
			}
			data, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.wantError == "" && (!strings.Contains(string(data), `"program":"dronelinkd"`) || strings.Contains(string(data), `"error"`)):
				t.Errorf("answer %s", data)
			case tc.wantError != "" && (!strings.Contains(string(data), tc.wantError) || strings.Contains(string(data), "sessions\":[{")):
				t.Errorf("answer %s, want an error mentioning %q and no status", data, tc.wantError)
			}
		})
	}
}

// At most MaxConns connections are served at once; one more is closed at once, and the
// server serves again when they are gone.
func TestBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(l, sample, nil)
	released := make(chan struct{}, MaxConns)
	srv.released = func() { released <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		srv.Serve(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var idle []net.Conn
	for range MaxConns {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	if _, err := Fetch(context.Background(), path); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("fetch beside %d idle connections: %v, want busy", MaxConns, err)
	}
	for _, c := range idle {
		c.Close()
	}
	guard := time.NewTimer(20 * time.Second) // bounds a broken build only
	defer guard.Stop()
	for range MaxConns { // the server frees each slot as it sees its connection closed
		select {
		case <-released:
		case <-guard.C:
			t.Fatal("the server did not free the slots of the closed connections")
		}
	}
	if _, err := Fetch(context.Background(), path); err != nil {
		t.Fatalf("fetch after the idle connections closed: %v", err)
	}
}

// Fetch says in one line what is wrong with the socket or its answer.
func TestFetchErrors(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	fake := func(answer string) string {
		path := filepath.Join(t.TempDir(), "fake.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				readRequest(c)
				io.WriteString(c, answer)
				c.Close()
			}
		}()
		return path
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "none.sock"), "no control socket"},
		{"stale", stale, "nothing answers"},
		{"not a socket", file, "not a socket"},
		{"garbage", fake("hello\n"), "not a status answer"},
		{"newer version", fake(`{"version":99}` + "\n"), "version 99"},
		{"error answer", fake(`{"version":1,"error":"unknown request"}` + "\n"), "unknown request"},
		{"closed at once", fake(""), "busy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Fetch(context.Background(), tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line mentioning %q", err, tc.want)
			}
		})
	}
}
