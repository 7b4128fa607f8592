package operator

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
)

func TestPSKToStandardOutput(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // a file named "-" would land here
	first := run(t, "", "psk", "--out", "-")
	first.want(t, 0)
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(first.stdout) {
		t.Fatalf("stdout is not 64 hex digits and a newline: %d bytes", len(first.stdout))
	}
	if first.stderr != "" {
		t.Errorf("stderr %q", first.stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files written: %v", entries)
	}
	// What it printed is a PSK file's content, and each run prints a fresh key.
	path := writeFile(t, dir+"/fleet.psk", first.stdout, 0o600)
	if _, err := crypto.LoadPSK(path); err != nil {
		t.Fatal(err)
	}
	if second := run(t, "", "psk", "--out", "-"); second.stdout == first.stdout {
		t.Error("the same PSK twice")
	}
}

// failingWriter refuses every write, like a closed pipe.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestPSKToStandardOutputFails(t *testing.T) {
	var stderr strings.Builder
	a := newApp(strings.NewReader(""), failingWriter{}, &stderr)
	code := a.run(t.Context(), []string{"psk", "--out", "-"})
	if code != ExitLocal || stderr.String() != "dronelink: cannot write the PSK to standard output: broken pipe\n" {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}
