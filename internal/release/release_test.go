package release

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// build cross-builds testdata/hello for t with extra go build flags and env.
func build(tb testing.TB, t Target, env []string, flags ...string) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), FileName("hello", t))
	args := append(append([]string{"build"}, flags...), "-o", out, "./testdata/hello")
	cmd := exec.Command("go", args...)
	cmd.Env = append(append(os.Environ(), t.Env()...), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go %v: %v\n%s", args, err, b)
	}
	return out
}

// A binary built with BuildFlags passes for every target; the checks name each way a
// binary built otherwise falls short.
func TestVerify(t *testing.T) {
	for _, tg := range Targets {
		t.Run(tg.Name(), func(t *testing.T) {
			path := build(t, tg, nil, BuildFlags("v1.2.3-test")...)
			if errs := VerifyFile(path, "v1.2.3-test", MaxSize); errs != nil {
				t.Fatalf("a release build fails: %v", errs)
			}
		})
	}
	arm64 := Targets[1]
	good := build(t, arm64, nil, BuildFlags("v1.2.3-test")...)
	plain := build(t, arm64, nil)
	for _, tc := range []struct {
		name, path, version string
		target              Target
		maxSize             int64
		want                []string
	}{
		{"unstripped, unstamped, no -trimpath", plain, "v1.2.3-test", arm64, MaxSize,
			[]string{"symbol table", "DWARF", "-trimpath", "not stamped"}},
		{"other version", good, "v9", arm64, MaxSize, []string{`not stamped with version "v9"`}},
		{"other target", good, "v1.2.3-test", Targets[2], MaxSize, []string{"ELF machine", `GOARCH="arm64", want "arm"`}},
		{"too large", good, "v1.2.3-test", arm64, 1000, []string{"more than the limit of 1000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := Verify(tc.path, tc.target, tc.version, tc.maxSize)
			all := errors.Join(errs...)
			if all == nil {
				t.Fatal("no problem found")
			}
			for _, w := range tc.want {
				if !strings.Contains(all.Error(), w) {
					t.Errorf("problems %q do not mention %q", all, w)
				}
			}
		})
	}
	if errs := VerifyFile(filepath.Join(t.TempDir(), "hello-plan9-mips"), "", MaxSize); len(errs) != 1 || !errors.Is(errs[0], ErrUnknownTarget) {
		t.Errorf("unknown target: %v", errs)
	}
}

// The file names of dist/ and their targets.
func TestNames(t *testing.T) {
	for _, tc := range []struct{ name, target string }{
		{"dist/dronelinkd-linux-amd64", "linux-amd64"},
		{"dronelink-linux-arm64", "linux-arm64"},
		{"dronelinkd-linux-armv7", "linux-armv7"},
	} {
		tg, ok := TargetOf(tc.name)
		if !ok || tg.Name() != tc.target {
			t.Errorf("TargetOf(%q) = %v, %v; want %s", tc.name, tg, ok, tc.target)
		}
	}
	for _, name := range []string{"dronelinkd", "-linux-arm64", "dronelinkd-linux-arm", "dronelinkd-linux-armv6"} {
		if tg, ok := TargetOf(name); ok {
			t.Errorf("TargetOf(%q) = %v, want none", name, tg)
		}
	}
	if got := strings.Join(Targets[2].Env(), " "); got != "CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7" {
		t.Errorf("armv7 env %q", got)
	}
}
