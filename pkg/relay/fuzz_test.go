package relay

import (
	"strings"
	"testing"
)

// FuzzParseCreds: any file content gives credentials with exactly one method, or an
// error, never a panic; an error never quotes the content.
func FuzzParseCreds(f *testing.F) {
	f.Add([]byte("user = \"alice\"\npassword = \"pw\"\n"))
	f.Add([]byte("token = \"t\"\nname = \"bob\"\n"))
	f.Add([]byte("nkey_seed = \"SUAOGMF25QOCBQEH3LTLTJRLAXG34JRGYIVT5V2MWYABX363UL2M3AEMEA\"\n"))
	f.Add([]byte("token = \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCreds(data)
		if err != nil {
			if c != nil {
				t.Fatal("credentials with an error")
			}
			return
		}
		methods := 0
		for _, set := range []bool{c.User != "", c.Token != "", c.NkeySeed != ""} {
			if set {
				methods++
			}
		}
		if methods != 1 || (c.User != "") != (c.Password != "") {
			t.Fatalf("accepted %+v", c)
		}
		if err := CheckToken("name", c.OperatorName()); err != nil {
			t.Fatalf("accepted an operator name that is no subject token: %v", err)
		}
	})
}

// FuzzValidDownlink: a reply subject the drone accepts is always one of its own downlinks,
// prefix, name and nonce, with no wildcard or extra token.
func FuzzValidDownlink(f *testing.F) {
	f.Add("dronelink.drone-7.down.alice.1")
	f.Add("dronelink.drone-7.down.alice.1.2")
	f.Add("dronelink.drone-7.down.*.>")
	f.Fuzz(func(t *testing.T, reply string) {
		prefix := DownlinkPrefix("drone-7")
		if !validDownlink(reply, prefix) {
			return
		}
		rest := strings.TrimPrefix(reply, prefix)
		parts := strings.Split(rest, ".")
		if !strings.HasPrefix(reply, prefix) || len(parts) != 2 || strings.ContainsAny(reply, "*> \t\r\n") {
			t.Fatalf("accepted %q", reply)
		}
		for _, p := range parts {
			if CheckToken("token", p) != nil {
				t.Fatalf("accepted %q", reply)
			}
		}
	})
}

// FuzzParseURLs: an accepted --relay value is a list of nats:// or tls:// URLs without
// credentials.
func FuzzParseURLs(f *testing.F) {
	f.Add("nats://127.0.0.1:4222")
	f.Add("nats://a:1,tls://b:2")
	f.Add("nats://u:p@a:1")
	f.Fuzz(func(t *testing.T, s string) {
		urls, err := ParseURLs(s)
		if err != nil {
			return
		}
		if len(urls) == 0 {
			t.Fatal("no URL and no error")
		}
		for _, u := range urls {
			if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") || strings.Contains(u, "@") {
				t.Fatalf("accepted %q from %q", u, s)
			}
		}
	})
}
