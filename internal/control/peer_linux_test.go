package control

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// peerEnv makes the test binary the peer of TestOtherUsersRefused: it asks the socket
// named there for the status and prints what it got.
const peerEnv = "DRONELINK_CONTROL_TEST_PEER"

func TestMain(m *testing.M) {
	if path := os.Getenv(peerEnv); path != "" {
		c, err := net.Dial("unix", path)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(0)
		}
		io.WriteString(c, RequestStatus+"\n")
		data, err := io.ReadAll(c)
		fmt.Printf("answer %q err %v\n", data, err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Even with the socket's mode widened by someone, a peer of another user (not root) gets
// no answer. Needs root, to run the peer (this test binary) as nobody.
func TestOtherUsersRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a peer as another user")
	}
	self, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // nobody must reach the peer
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "peer")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "c.sock")
	serve(t, path, sample)
	if err := os.Chmod(path, 0o666); err != nil { // the mistake the check guards against
		t.Fatal(err)
	}
	peer := func(uid uint32) string {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), peerEnv+"="+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("peer as uid %d: %v\n%s", uid, err, out)
		}
		return string(out)
	}
	if out := peer(0); !strings.Contains(out, `\"program\":\"dronelinkd\"`) {
		t.Errorf("root got %s, want the status", out)
	}
	if out := peer(65534); strings.Contains(out, "program") || strings.Contains(out, "alice") || !strings.HasPrefix(out, "answer \"\"") {
		t.Errorf("another user got %s, want nothing", out)
	}
}
