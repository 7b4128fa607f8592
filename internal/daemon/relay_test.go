package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRelayURLCredentialsNotEchoed: --relay (flag or config file key) with a password in the
// URL is refused, and the refusal, which goes to the terminal or the journal, must not
// repeat the password. On 0a207a1 validate quoted the whole value.
func TestRelayURLCredentialsNotEchoed(t *testing.T) {
	keyPath, pskPath, usersPath := droneFiles(t)
	const secret = "s3cr3tpw"
	value := "nats://drone-7:" + secret + "@relay.example:4222"
	base := []string{"--key", keyPath, "--psk", pskPath, "--users", usersPath, "--drone-id", "drone-7", "--check-config"}
	code, stdout, stderr := runMain(t, append([]string{"--relay", value}, base...)...)
	if code == 0 {
		t.Fatalf("--relay with a password accepted: %s", stdout)
	}
	if strings.Contains(stderr, secret) || strings.Contains(stdout, secret) {
		t.Errorf("the refusal of --relay repeats the password:\n%s%s", stdout, stderr)
	}

	conf := filepath.Join(t.TempDir(), "dronelinkd.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "relay = %q\n", value), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runMain(t, append([]string{"--config", conf}, base...)...)
	if code == 0 {
		t.Fatalf("relay with a password in the config file accepted: %s", stdout)
	}
	if strings.Contains(stderr, secret) || strings.Contains(stdout, secret) {
		t.Errorf("the refusal of the config file's relay repeats the password:\n%s%s", stdout, stderr)
	}
}
