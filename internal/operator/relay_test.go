package operator

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestRelayURLCredentialsNotEchoed: a password in --relay, or in a profile's relay key, is
// refused without repeating it. On 0a207a1 the profile's error quoted the whole value, and
// --relay quoted the forms url.Parse reads without a user part ("alice:pw@relay:4222").
func TestRelayURLCredentialsNotEchoed(t *testing.T) {
	const secret = "s3cr3tpw"
	for _, value := range []string{"nats://alice:" + secret + "@relay:4222", "alice:" + secret + "@relay:4222"} {
		r := run(t, "", "pin", "--relay", value, "--drone-id", "drone-7", "--psk", "nowhere.psk", "--out", filepath.Join(t.TempDir(), "d.pub"), "--expect", "SHA256:x")
		if r.code == 0 {
			t.Fatalf("--relay %s accepted", value)
		}
		if strings.Contains(r.stderr+r.stdout, secret) {
			t.Errorf("the refusal of --relay repeats the password: %s", r.stderr)
		}
		conf := writeFile(t, filepath.Join(t.TempDir(), "profile.toml"),
			fmt.Sprintf("[drone.bravo]\nrelay = %q\ndrone-id = \"bravo\"\n", value), 0o600)
		r = run(t, "", "send", "--config", conf, "--drone", "bravo", "x")
		if r.code == 0 {
			t.Fatalf("profile relay %s accepted", value)
		}
		if strings.Contains(r.stderr+r.stdout, secret) {
			t.Errorf("the refusal of the profile's relay repeats the password: %s", r.stderr)
		}
	}
}
