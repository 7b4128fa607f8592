package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// FuzzConfigFile feeds arbitrary bytes to the TOML config loader: it must never panic,
// and every error it returns is one line.
func FuzzConfigFile(f *testing.F) {
	f.Add([]byte("listen = \"127.0.0.1:5000\"\nkey = \"/k\"\npsk = \"/p\"\nusers = \"/u\"\n"))
	f.Add([]byte("replay-window = 4096\nreload-interval = \"2s\"\nlog-format = \"json\"\n"))
	f.Add([]byte("transport = \"dtls\"\nmetrics = \":9500\"\n"))
	f.Add([]byte("[table]\nlisten = 1\n"))
	f.Add([]byte("listen = [1, 2]\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.toml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var c Config
		fs := pflag.NewFlagSet("fuzz", pflag.ContinueOnError)
		c.bindFlags(fs)
		err := c.applyFile(fs, path)
		if err == nil {
			err = c.validate()
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("multi-line error: %q", err)
		}
	})
}
