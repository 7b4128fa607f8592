package operator

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
)

func TestKeygenWritesKeyPairAndPrintsFingerprint(t *testing.T) {
	dir := t.TempDir()
	out := dir + "/op.key"
	r := run(t, "", "keygen", "--out", out, "--bits", "2048")
	r.want(t, 0)
	key, err := crypto.LoadPrivateKey(out)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := crypto.LoadPublicKey(out + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if key.N.Cmp(pub.N) != 0 || key.N.BitLen() != 2048 {
		t.Fatalf("public key does not match the private key, or wrong size %d", key.N.BitLen())
	}
	if m := mode(t, out); m != 0o600 {
		t.Errorf("private key mode %04o, want 0600", m)
	}
	if m := mode(t, out+".pub"); m != 0o644 {
		t.Errorf("public key mode %04o, want 0644", m)
	}
	if want := crypto.Fingerprint(pub) + "  " + out + ".pub\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	data, _ := readFile(t, out)
	if !strings.HasPrefix(data, "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("private key is not PKCS#8 PEM: %.40q", data)
	}
	data, _ = readFile(t, out+".pub")
	if !strings.HasPrefix(data, "-----BEGIN PUBLIC KEY-----") {
		t.Errorf("public key is not PKIX PEM: %.40q", data)
	}
}

func TestKeygenRefusesToOverwrite(t *testing.T) {
	for _, existing := range []string{"k", "k.pub"} {
		t.Run(existing, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir+"/"+existing, "precious\n", 0o640)
			r := run(t, "", "keygen", "--out", dir+"/k", "--bits", "2048")
			r.want(t, 1, existing, "already exists")
			if got, _ := readFile(t, dir+"/"+existing); got != "precious\n" || mode(t, dir+"/"+existing) != 0o640 {
				t.Errorf("existing file changed: %q", got)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("keygen left files behind: %v", entries)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
		})
	}
}

func TestKeygenBadBits(t *testing.T) {
	for _, tc := range []struct{ bits, want string }{
		{"1024", "RSA key too small: 1024 bits, minimum 2048"},
		{"8192", "RSA key too large: 8192 bits, maximum 4096"},
		{"many", "invalid argument"},
	} {
		dir := t.TempDir()
		r := run(t, "", "keygen", "--out", dir+"/k", "--bits", tc.bits)
		r.want(t, 2, tc.want, "(see dronelink keygen --help)")
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("--bits %s: files written: %v", tc.bits, entries)
		}
	}
}

func TestKeygenMissingDirectory(t *testing.T) {
	run(t, "", "keygen", "--out", t.TempDir()+"/no/such/dir/k", "--bits", "2048").want(t, 1, "does not exist")
}

func TestPSK(t *testing.T) {
	path := t.TempDir() + "/fleet.psk"
	r := run(t, "", "psk", "--out", path)
	r.want(t, 0)
	data, _ := readFile(t, path)
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(data) {
		t.Fatalf("PSK file is not 64 hex digits and a newline: %d bytes", len(data))
	}
	if m := mode(t, path); m != 0o600 {
		t.Errorf("PSK mode %04o, want 0600", m)
	}
	if r.stdout != "wrote PSK to "+path+"\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if strings.Contains(r.stdout+r.stderr, strings.TrimSpace(data)) || strings.Contains(r.stdout+r.stderr, strings.TrimSpace(data)[:16]) {
		t.Fatal("the PSK was printed")
	}
	if _, err := crypto.LoadPSK(path); err != nil {
		t.Fatal(err)
	}

	// A second run must not replace it.
	r = run(t, "", "psk", "--out", path)
	r.want(t, 1, "already exists")
	if again, _ := readFile(t, path); again != data {
		t.Fatal("existing PSK overwritten")
	}
}

func TestFingerprint(t *testing.T) {
	f := newFixture(t)
	pub := &keys(t)["alice"].PublicKey
	want, digits := crypto.Fingerprint(pub), crypto.DigitFingerprint(pub)
	r := run(t, "", "fingerprint", f.pub("alice"), f.key("alice"))
	r.want(t, 0)
	lines := func(path string) string { return want + "  " + path + "\n" + digits + "  " + path + "\n" }
	if r.stdout != lines(f.pub("alice"))+lines(f.key("alice")) {
		t.Errorf("stdout %q, want fingerprints %s and %s for both files", r.stdout, want, digits)
	}
	run(t, "", "fingerprint", f.psk).want(t, 1, "bad key file", f.psk)
	run(t, "", "fingerprint", f.path("missing")).want(t, 1, "cannot read key file", "no such file")
	run(t, "", "fingerprint").want(t, 2, "missing key file")
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var stdout, stderr bytes.Buffer
		code := Main(args, strings.NewReader(""), &stdout, &stderr)
		if code != 0 || !strings.HasPrefix(stdout.String(), "dronelink ") || stderr.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout.String(), stderr.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	f := newFixture(t)
	link := []string{"--drone", "127.0.0.1:9", "--drone-pub", f.pub("drone"), "--key", f.key("alice"),
		"--psk", f.psk, "--user", "alice", "--password-file", f.path("alice.pw")}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"missing command", "(see dronelink --help)"}},
		{[]string{"sned"}, []string{`unknown command "sned"`, `did you mean "send"?`}},
		{[]string{"keygen"}, []string{`required flag(s) "out" not set`, "(see dronelink keygen --help)"}},
		{[]string{"keygen", "--out", f.path("x"), "extra"}, []string{`unexpected argument "extra"`}},
		{[]string{"user"}, []string{"missing command: one of add, del, key, list, passwd, role"}},
		{[]string{"user", "frobnicate"}, []string{`unknown command "frobnicate" for "dronelink user"`}},
		{[]string{"user", "list"}, []string{`required flag(s) "db" not set`, "(see dronelink user list --help)"}},
		// There is no way to give a password on the command line.
		{[]string{"user", "add", "--db", f.path("db"), "--name", "a", "--role", "pilot", "--pubkey", f.pub("alice"), "--password", "x"},
			[]string{"unknown flag: --password", "(see dronelink user add --help)"}},
		{append([]string{"send", "--password", "alice secret"}, append(link, "hi")...), []string{"unknown flag: --password"}},
		{append([]string{"send"}, link...), []string{"no message"}},
		{append(append([]string{"send"}, link...), strings.Repeat("x", 2000)), []string{"message too long: 2000 bytes"}},
		{append(append([]string{"send"}, link...), "--timeout", "0s", "hi"), []string{"--timeout must be positive"}},
		{append(append([]string{"send"}, link...), "--drone", "nohostport", "hi"), []string{`bad --drone "nohostport": want HOST:PORT`}},
		{append(append([]string{"send"}, link...), "--password-stdin", "hi"), []string{"password-file", "password-stdin"}},
		{append([]string{"listen", "--count", "-1"}, link...), []string{"--count must not be negative"}},
		{append([]string{"listen"}, append(link, "extra")...), []string{`unexpected argument "extra"`}},
	} {
		r := run(t, "", tc.args...)
		r.want(t, 2, tc.want...)
		if r.stdout != "" {
			t.Errorf("%v: stdout %q", tc.args, r.stdout)
		}
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                     "plain",
		"two\nlines\n":              "two lines",
		"unknown\n\nDid you mean\t": "unknown Did you mean",
		"bell\x07":                  `bell\x07`,
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRender(t *testing.T) {
	for in, want := range map[string]string{
		"battery 87%":           "battery 87%",
		"":                      "",
		"line\nbreak\r\tx":      `line\nbreak\r\tx`,
		"esc \x1b[2J clear":     `esc \x1b[2J clear`,
		"höhe 10 m ✓":           "höhe 10 m ✓",
		"rtl \u202eevil":        `rtl \u202eevil`,
		"\x00\x01\x02\x03":      "hex:00010203",
		"\xff\xfe binary":       "hex:fffe2062696e617279",
		`{"alt":10,"s":"a\"b"}`: `{"alt":10,"s":"a\"b"}`,
	} {
		if got := render([]byte(in)); got != want {
			t.Errorf("render(%q) = %q, want %q", in, got, want)
		}
	}
}
