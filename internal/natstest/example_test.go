package natstest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleConfig: the shipped example gets a fresh key per user and loses its listen
// line; a file without a placeholder or the listen line is refused, so the tests built on
// it cannot silently test something else.
func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "relay", "nats-server.conf")
	conf, seeds, err := ExampleConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(conf, "_NKEY\"") || strings.Contains(conf, exampleListen) || len(seeds) != len(ExampleUsers) {
		t.Fatalf("placeholders or the listen line left, or %d seeds", len(seeds))
	}
	for user, seed := range seeds {
		if !strings.HasPrefix(seed, "SU") || strings.Contains(conf, seed) {
			t.Errorf("%s: seed %.4s..., or the seed is in the config", user, seed)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, broken := range []string{
		strings.Replace(string(data), `"BOB_NKEY"`, `"UB"`, 1),
		strings.Replace(string(data), exampleListen, "\n", 1),
	} {
		p := filepath.Join(t.TempDir(), "broken.conf")
		if err := os.WriteFile(p, []byte(broken), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ExampleConfig(p); err == nil {
			t.Error("a broken example was taken")
		}
	}
}
