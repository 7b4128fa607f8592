package relay

import (
	"strings"
	"testing"
)

func TestCheckToken(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"drone-7", true},
		{"Drone_07", true},
		{strings.Repeat("a", MaxTokenLength), true},
		{"", false},
		{strings.Repeat("a", MaxTokenLength+1), false},
		{"drone.7", false}, // a second subject token
		{"drone*", false},  // wildcards
		{">", false},
		{"drone 7", false},
		{"dröne", false},
		{"drone\x00", false},
	} {
		err := CheckToken("drone id", tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("CheckToken(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if validToken(tc.in) != tc.ok {
			t.Errorf("validToken(%q) != %v", tc.in, tc.ok)
		}
	}
}

func TestSubjects(t *testing.T) {
	if got := UplinkSubject("drone-7"); got != "dronelink.drone-7.up" {
		t.Errorf("UplinkSubject = %q", got)
	}
	down := DownlinkSubject("drone-7", "alice", "n0nce")
	if down != "dronelink.drone-7.down.alice.n0nce" {
		t.Errorf("DownlinkSubject = %q", down)
	}
	if !validDownlink(down, DownlinkPrefix("drone-7")) {
		t.Errorf("%q is not a valid downlink of drone-7", down)
	}
}

func TestValidDownlink(t *testing.T) {
	prefix := DownlinkPrefix("drone-7")
	long := strings.Repeat("n", MaxTokenLength)
	for _, tc := range []struct {
		reply string
		ok    bool
	}{
		{"dronelink.drone-7.down.alice.1", true},
		{"dronelink.drone-7.down." + long + "." + long, true},
		{"", false},
		{"dronelink.drone-7.down.alice", false},               // no nonce
		{"dronelink.drone-7.down.alice.", false},              // empty nonce
		{"dronelink.drone-7.down..1", false},                  // empty name
		{"dronelink.drone-7.down.alice.1.2", false},           // a token too many
		{"dronelink.drone-8.down.alice.1", false},             // another drone's
		{"dronelink.drone-70.down.alice.1", false},            // a prefix of the id is not the id
		{"dronelink.drone-7.up", false},                       // the uplink itself
		{"dronelink.drone-7.down.*.1", false},                 // wildcards
		{"dronelink.drone-7.down.alice.>", false},             //
		{"_INBOX.drone-7.down.alice.1", false},                // elsewhere
		{"dronelink.drone-7.down.al ce.1", false},             //
		{"dronelink.drone-7.down.alice." + long + "x", false}, // too long a nonce
	} {
		if got := validDownlink(tc.reply, prefix); got != tc.ok {
			t.Errorf("validDownlink(%q) = %v, want %v", tc.reply, got, tc.ok)
		}
	}
}

func TestParseURLs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"nats://127.0.0.1:4222", []string{"nats://127.0.0.1:4222"}, ""},
		{"nats://a:4222, tls://b:4222 ,nats://[::1]:4222", []string{"nats://a:4222", "tls://b:4222", "nats://[::1]:4222"}, ""},
		{"nats://relay.example", []string{"nats://relay.example"}, ""},
		{"", nil, "no NATS server URL"},
		{" , ", nil, "is not a URL"},
		{"nats://a:4222,", nil, "is not a URL"},
		{"http://a:4222", nil, "nats:// or tls://"},
		{"a:4222", nil, "nats:// or tls://"},
		{"nats://alice:s3cret@a:4222", nil, "holds credentials"},
		{"nats://token@a:4222", nil, "holds credentials"},
		{"nats://a:4222/path", nil, "want nats://HOST:PORT"},
		{"nats://a:4222?x=1", nil, "want nats://HOST:PORT"},
		{"nats://", nil, "want nats://HOST:PORT"},
		{"nats://a b:4222", nil, "is not a URL"},
	} {
		got, err := ParseURLs(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseURLs(%q): %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseURLs(%q) = %v, %v; want an error saying %q", tc.in, got, err, tc.err)
		case tc.err == "" && strings.Join(got, ",") != strings.Join(tc.want, ","):
			t.Errorf("ParseURLs(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseURLs(%q) error quotes the password: %v", tc.in, err)
		}
	}
}
