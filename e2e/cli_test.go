package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// need returns the path of a program the test needs; without it the test is skipped, or
// fails when CI is set (.ci/run installs it).
func need(t *testing.T, program, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found and CI is set: .ci/run must install it (apt-get install %s)", program, pkg)
		}
		t.Skipf("%s not installed (apt-get install %s)", program, pkg)
	}
	return path
}

// shell runs script with the shell at path, the binaries first on PATH, and returns its
// standard output.
func shell(t *testing.T, path string, args ...string) string {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %v: %v\n%s", filepath.Base(path), args, err, stderr)
	}
	return string(out)
}

// TestShellCompletion loads each program's completion script into a real shell and asks
// the shell for candidates, as a user pressing Tab does.
func TestShellCompletion(t *testing.T) {
	wantCandidates := map[string][]string{
		"dronelink se":           {"send"},
		"dronelink user ":        {"add", "del", "key", "list", "passwd", "role"},
		"dronelink send --indep": {"--independent"},
		"dronelink completion ":  {"bash", "fish", "powershell", "zsh"},
		"dronelinkd --check":     {"--check-config"},
		"dronelinkd ver":         {"version"},
	}
	check := func(t *testing.T, line string, got []string) {
		t.Helper()
		for _, w := range wantCandidates[line] {
			found := false
			for _, g := range got {
				found = found || strings.TrimSpace(strings.SplitN(g, "\t", 2)[0]) == w
			}
			if !found {
				t.Errorf("%q: no candidate %q in %q", line, w, got)
			}
		}
	}
	t.Run("bash", func(t *testing.T) {
		bash := need(t, "bash", "bash")
		const helpers = "/usr/share/bash-completion/bash_completion"
		if _, err := os.Stat(helpers); err != nil {
			need(t, "no-bash-completion-helpers", "bash-completion") // the scripts use its helpers
		}
		script := "source " + helpers + `
source <(dronelink completion bash)
source <(dronelinkd completion bash)
for line in "$@"; do
  read -r -a COMP_WORDS <<<"$line"
  [[ $line == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_LINE=$line; COMP_POINT=${#line}; COMPREPLY=()
  "__start_${COMP_WORDS[0]}" 2>/dev/null
  printf '%s\n' "${COMPREPLY[*]}"
done`
		var lines []string
		for line := range wantCandidates {
			lines = append(lines, line)
		}
		out := strings.Split(shell(t, bash, append([]string{"-c", script, "bash"}, lines...)...), "\n")
		for i, line := range lines {
			check(t, line, strings.Fields(out[i]))
		}
	})
	t.Run("fish", func(t *testing.T) {
		fish := need(t, "fish", "fish")
		for line := range wantCandidates {
			program := strings.Fields(line)[0]
			out := shell(t, fish, "--no-config", "-c", program+" completion fish | source; complete -C '"+line+"'")
			check(t, line, strings.Split(strings.TrimSpace(out), "\n"))
		}
	})
	t.Run("zsh", func(t *testing.T) {
		zsh := need(t, "zsh", "zsh")
		for _, program := range []string{"dronelink", "dronelinkd"} {
			script := filepath.Join(t.TempDir(), "_"+program)
			if err := os.WriteFile(script, []byte(shell(t, zsh, "-f", "-c", program+" completion zsh")), 0o644); err != nil {
				t.Fatal(err)
			}
			shell(t, zsh, "-f", "-n", script) // it parses
			data, _ := os.ReadFile(script)
			if !strings.Contains(string(data), "compdef _"+program+" "+program) {
				t.Errorf("the zsh script does not register completion for %s", program)
			}
		}
	})
}

// TestMakeStampsTheVersion builds the programs and their man pages with make, as a user
// does, with the toolchain's VCS stamping off: both programs name the version make
// stamped, with "version" and with --version alike.
func TestMakeStampsTheVersion(t *testing.T) {
	makePath := need(t, "make", "make")
	bin, manDir := t.TempDir(), t.TempDir()
	build := exec.Command(makePath, "-C", "..", "-s", "man", "BIN="+bin, "MANDIR="+manDir, "VERSION=v9.8.7-e2e")
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make man: %v\n%s", err, out)
	}
	for _, program := range []string{"dronelink", "dronelinkd"} {
		want := program + " v9.8.7-e2e (" + runtime.Version() + ")\n"
		for _, arg := range []string{"version", "--version"} {
			out, err := exec.Command(filepath.Join(bin, program), arg).Output()
			if err != nil || string(out) != want {
				t.Errorf("%s %s: %q, %v; want %q", program, arg, out, err, want)
			}
		}
	}
	for _, page := range []string{"dronelink.1", "dronelink-user-add.1", "dronelinkd.1", "dronelinkd-version.1"} {
		if _, err := os.Stat(filepath.Join(manDir, page)); err != nil {
			t.Errorf("make man wrote no %s: %v", page, err)
		}
	}
	if man, err := exec.LookPath("man"); err == nil {
		cmd := exec.Command(man, "-l", filepath.Join(manDir, "dronelink-psk.1"))
		cmd.Env = append(os.Environ(), "MANWIDTH=100")
		out, err := cmd.Output()
		text := regexp.MustCompile(".\x08").ReplaceAll(out, nil) // bold and underline by overstriking
		if err != nil || !strings.Contains(string(text), "dronelink psk --out PATH") {
			t.Errorf("man -l dronelink-psk.1: %v\n%s", err, out)
		}
	}

	// Without VERSION, make stamps what git describes.
	if _, err := exec.LookPath("git"); err != nil {
		return
	}
	described, err := exec.Command("git", "-C", "..", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		t.Logf("not a git checkout (%v): the default VERSION is not checked", err)
		return
	}
	dry, err := exec.Command(makePath, "-C", "..", "-n", "build").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "buildinfo.version=" + strings.TrimSpace(string(described)) + "'"
	if !strings.Contains(string(dry), want) {
		t.Errorf("make build does not stamp %q:\n%s", want, dry)
	}
}

func TestPSKToStandardOutput(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(filepath.Join(binDir, "dronelink"), "psk", "--out", "-")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{64}\n$`).Match(out) {
		t.Fatalf("psk --out -: %v, %d bytes of output", err, len(out))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("psk --out - wrote files: %v", entries)
	}
}
