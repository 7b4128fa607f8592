package operator

import (
	"bytes"
	"context"
	"crypto/rsa"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// cheapParams make password hashing fast in tests; one test checks the real default.
var cheapParams = userdb.Params{Time: 1, MemoryKiB: 64, Threads: 1, SaltLen: 16, KeyLen: 32}

// Test keys: 2048 bits (the minimum) to keep the tests fast, generated once per binary.
var (
	keysOnce sync.Once
	testKeys map[string]*rsa.PrivateKey
)

func keys(t *testing.T) map[string]*rsa.PrivateKey {
	t.Helper()
	keysOnce.Do(func() {
		m := map[string]*rsa.PrivateKey{}
		for _, name := range []string{"drone", "alice", "olga", "mallory", "stranger"} {
			k, err := crypto.GenerateRSAKey(nil, 2048)
			if err != nil {
				panic(err)
			}
			m[name] = k
		}
		testKeys = m
	})
	return testKeys
}

// result is what one run of the tool produced.
type result struct {
	code           int
	stdout, stderr string
}

// run runs the tool with args and stdin, with cheap password hashing and no signal
// handling.
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runCtx(t, context.Background(), nil, stdin, args...)
}

// runCtx runs the tool under ctx; adjust may change the app first.
func runCtx(t *testing.T, ctx context.Context, adjust func(*app), stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	a := newApp(strings.NewReader(stdin), &stdout, &stderr)
	a.hashParams = cheapParams
	if adjust != nil {
		adjust(a)
	}
	r := result{code: a.run(ctx, args), stdout: stdout.String(), stderr: stderr.String()}
	checkStderr(t, r, args)
	return r
}

// checkStderr enforces the error contract: on failure exactly one line "dronelink: ..."
// besides warnings and send's stats lines, on success none; never a panic or stack trace.
func checkStderr(t *testing.T, r result, args []string) {
	t.Helper()
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
		t.Fatalf("%v: stack trace on stderr:\n%s", args, r.stderr)
	}
	var errs []string
	for line := range strings.Lines(r.stderr) {
		if !strings.HasSuffix(line, "\n") {
			t.Errorf("%v: stderr does not end in a newline: %q", args, r.stderr)
		}
		if !strings.HasPrefix(line, "dronelink: ") {
			t.Errorf("%v: stderr line without the dronelink: prefix: %q", args, line)
		}
		if !strings.HasPrefix(line, "dronelink: warning: ") && !strings.HasPrefix(line, "dronelink: stats: ") {
			errs = append(errs, line)
		}
	}
	switch {
	case r.code == 0 && len(errs) != 0:
		t.Errorf("%v: exit 0 but error lines on stderr: %q", args, errs)
	case r.code != 0 && len(errs) != 1:
		t.Errorf("%v: exit %d with %d error lines on stderr (want 1): %q", args, r.code, len(errs), r.stderr)
	}
}

// errLine is the error message of a failed run, without the prefix and newline.
func (r result) errLine() string {
	for line := range strings.Lines(r.stderr) {
		if !strings.HasPrefix(line, "dronelink: warning: ") && !strings.HasPrefix(line, "dronelink: stats: ") {
			return strings.TrimSuffix(strings.TrimPrefix(line, "dronelink: "), "\n")
		}
	}
	return ""
}

// want checks the exit code and that the error line contains each of parts.
func (r result) want(t *testing.T, code int, parts ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, p := range parts {
		if !strings.Contains(r.errLine(), p) {
			t.Errorf("error line %q does not contain %q", r.errLine(), p)
		}
	}
}

// writeFile writes a file with mode perm.
func writeFile(t *testing.T, path, content string, perm os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // the umask does not apply
		t.Fatal(err)
	}
	return path
}

// fixture is a directory with key files (NAME.key, NAME.key.pub for every test key), a
// PSK file and password files.
type fixture struct {
	dir string
	psk string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	for name, k := range keys(t) {
		priv, err := crypto.MarshalPrivateKeyPEM(k)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := crypto.MarshalPublicKeyPEM(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, f.key(name), string(priv), 0o600)
		writeFile(t, f.pub(name), string(pub), 0o644)
	}
	psk, err := crypto.GeneratePSK(nil)
	if err != nil {
		t.Fatal(err)
	}
	f.psk = writeFile(t, f.path("psk"), string(crypto.MarshalPSK(psk)), 0o600)
	writeFile(t, f.path("alice.pw"), "alice secret\n", 0o600)
	writeFile(t, f.path("olga.pw"), "olga secret\n", 0o600)
	writeFile(t, f.path("mallory.pw"), "mallory secret\n", 0o600)
	writeFile(t, f.path("bad.pw"), "nope\n", 0o600)
	return f
}

func (f *fixture) path(name string) string { return filepath.Join(f.dir, name) }
func (f *fixture) key(name string) string  { return f.path(name + ".key") }
func (f *fixture) pub(name string) string  { return f.path(name + ".key.pub") }

// readFile returns a file's content ("" and false if it does not exist).
func readFile(t *testing.T, path string) (string, bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

// mode is a file's permission bits.
func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}
