package relay_test

import (
	"strings"
	"testing"

	"github.com/dronelink/dronelink/pkg/relay"
)

// TestParseURLsNeverQuotesCredentials: credentials do not belong in --relay (the process
// list shows it; the daemon's config file is world-readable by default), and ParseURLs
// refuses them; its error must not repeat them either, since it goes to the terminal, the
// journal and CI logs. On 0a207a1 the forms that url.Parse reads without a user part (no
// "//", or no scheme, which is what a typo gives) and those it cannot parse at all were
// quoted in full.
func TestParseURLsNeverQuotesCredentials(t *testing.T) {
	const secret = "s3cr3tpw"
	for _, in := range []string{
		"nats://alice:" + secret + "@relay:4222",
		"tls://alice:" + secret + "@relay:4222",
		"nats:alice:" + secret + "@relay:4222",
		"alice:" + secret + "@relay:4222",
		"//alice:" + secret + "@relay:4222",
		"nats://alice:" + secret + " @relay:4222",
		"tls://alice:" + secret + "%zz@relay:4222",
		"nats://" + secret + "@relay:4222/x",
		"nats://relay-1:4222, nats://alice:" + secret + "@relay-2:4222",
		"ws://token:" + secret + "@relay:4222",
	} {
		_, err := relay.ParseURLs(in)
		if err == nil {
			t.Errorf("%q accepted", in)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("ParseURLs(%q): the error quotes the secret: %v", in, err)
		}
	}
}

// TestRedactURLs: RedactURLs keeps what an error needs to name a URL, never a password or
// token, whatever the form.
func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://relay:4222":                         "nats://relay:4222",
		"nats://alice:pw@relay:4222":                "nats://REDACTED@relay:4222",
		"alice:pw@relay:4222":                       "REDACTED@relay:4222",
		"nats:alice:pw@relay:4222":                  "nats:REDACTED@relay:4222",
		"nats://a:pw@r1:4222,tls://tok@r2:4222/x?y": "nats://REDACTED@r1:4222,tls://REDACTED@r2:4222/x?y",
		"nats://a:p@w@relay:4222":                   "nats://REDACTED@relay:4222",
		"nats://r1:4222, NATS:tok@r2:4222":          "nats://r1:4222, NATS:REDACTED@r2:4222",
	} {
		if got := relay.RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}
