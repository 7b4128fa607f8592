package relay_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/dronelink/dronelink/pkg/relay"
)

// TestParseCredsNeverQuotesSecret: the refusals of a credentials file name the line or the
// key, never a value, for the mistakes people make writing one.
func TestParseCredsNeverQuotesSecret(t *testing.T) {
	seed, _ := newNkey(t)
	const token = "tok-s3cr3t-value"
	for name, content := range map[string]string{
		"unquoted seed":         "nkey_seed = " + seed + "\n",
		"seed alone":            seed + "\n",
		"unterminated string":   "token = \"" + token + "\n",
		"key spelled with dash": "nkey-seed = \"" + seed + "\"\n",
		"token twice":           "token = \"" + token + "\"\ntoken = \"" + token + "\"\n",
		"token as a number":     "token = 1234\npassword = \"" + token + "\"\n",
		"password without user": "password = \"" + token + "\"\n",
		"token and seed":        "token = \"" + token + "\"\nnkey_seed = \"" + seed + "\"\n",
		"seed of an account":    "nkey_seed = \"SA" + seed[2:] + "\"\n",
		"seed cut short":        "nkey_seed = \"" + seed[:20] + "\"\n",
		"user with a dot":       "user = \"a.b\"\npassword = \"" + token + "\"\n",
	} {
		_, err := relay.ParseCreds([]byte(content))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, secret := range []string{seed, seed[2:22], token} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error quotes a secret: %v", name, err)
			}
		}
	}
}

// TestCredsNeverPrint: credentials print without their secrets in every fmt verb and in
// slog, as a pointer or as a value (a Creds copied into a struct or a log call).
func TestCredsNeverPrint(t *testing.T) {
	c := relay.Creds{User: "alice", Password: "pw-s3cr3t", Token: "tok-s3cr3t", NkeySeed: "SU-s3cr3t"}
	var b strings.Builder
	logger := slog.New(slog.NewTextHandler(&b, nil))
	logger.Info("x", "creds", c, "ptr", &c)
	logger = slog.New(slog.NewJSONHandler(&b, nil))
	logger.Info("x", "creds", c, "ptr", &c)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		fmt.Fprintf(&b, verb+" "+verb+"\n", c, &c)
	}
	fmt.Fprintf(&b, "%v\n", struct{ C relay.Creds }{c})
	if strings.Contains(b.String(), "s3cr3t") {
		t.Errorf("credentials printed with a secret:\n%s", b.String())
	}
}
