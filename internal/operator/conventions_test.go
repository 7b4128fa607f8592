package operator

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/internal/cli"
)

// commandTree is the tool's command tree as a run builds it.
func commandTree() *cobra.Command {
	return newApp(strings.NewReader(""), new(strings.Builder), new(strings.Builder)).newRootCmd()
}

func TestHelpIsConventional(t *testing.T) {
	cases := []struct {
		args []string
		// want are whole lines of the flag list, as GNU tools print them.
		want []string
	}{
		{[]string{"--help"}, []string{
			"  -h, --help      help for dronelink",
			"  -v, --version   version for dronelink",
		}},
		{[]string{"psk", "--help"}, []string{
			"  -h, --help       help for psk",
		}},
		{[]string{"send", "--help"}, []string{
			"  -h, --help                    help for send",
			"      --independent             do not order this command after your other commands (the drone runs it even if a later one ran first)",
			"      --password-stdin          read the password from one line of standard input",
			"      --timeout DURATION        give up when no acknowledgement came within this DURATION (default 15s)",
		}},
		{[]string{"user", "add", "--help"}, []string{
			"  -h, --help                 help for add",
			"      --password-stdin       read the password from one line of standard input",
		}},
		{[]string{"help", "user", "key"}, []string{
			"  -h, --help   help for key",
		}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, "", tc.args...)
			r.want(t, 0)
			if strings.Contains(r.stdout, "[=") {
				t.Errorf("help shows a flag with an optional value:\n%s", r.stdout)
			}
			// The column of the descriptions follows the longest flag of each list (which
			// grows with every flag a command gains), so lines are compared with the gap
			// between flag and description reduced to one tab.
			var lines []string
			for _, l := range strings.Split(r.stdout, "\n") {
				lines = append(lines, helpColumns(l))
			}
			for _, w := range tc.want {
				if !slices.Contains(lines, helpColumns(w)) {
					t.Errorf("no line %q in:\n%s", w, r.stdout)
				}
			}
		})
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		t.Run(shell, func(t *testing.T) {
			r := run(t, "", "completion", shell)
			r.want(t, 0)
			if len(r.stdout) < 1000 || !strings.Contains(r.stdout, "dronelink") {
				t.Errorf("completion script of %d bytes, or without the program's name:\n%.300s", len(r.stdout), r.stdout)
			}
		})
	}
	run(t, "", "completion", "tcsh").want(t, 2, `unknown shell "tcsh": want one of bash, fish, powershell, zsh`)
	run(t, "", "completion").want(t, 2, "missing shell: one of bash, fish, powershell, zsh", "(see dronelink completion --help)")
}

// TestCompletionCandidates asks the tool what the shell scripts ask it: candidates for the
// word being completed.
func TestCompletionCandidates(t *testing.T) {
	cases := []struct {
		args []string
		want []string
		not  []string
	}{
		{[]string{"se"}, []string{"send\t"}, []string{"listen"}},
		{[]string{""}, []string{"completion\t", "keygen\t", "user\t", "version\t"}, []string{"man\t", "__complete"}},
		{[]string{"user", ""}, []string{"add\t", "del\t", "key\t", "passwd\t"}, nil},
		{[]string{"send", "--ind"}, []string{"--independent\t"}, nil},
		{[]string{"completion", "f"}, []string{"fish\t"}, nil},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			// Not run: cobra reports the completion's directive on standard error, which
			// the scripts discard.
			var stdout, stderr strings.Builder
			a := newApp(strings.NewReader(""), &stdout, &stderr)
			if code := a.run(t.Context(), append([]string{cobra.ShellCompRequestCmd}, tc.args...)); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			r := result{stdout: stdout.String()}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("no candidate %q in:\n%s", w, r.stdout)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(r.stdout, n) {
					t.Errorf("candidate %q offered:\n%s", n, r.stdout)
				}
			}
		})
	}
}

func TestManPagesForEveryCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man1")
	r := run(t, "", "man", "--dir", dir)
	r.want(t, 0)
	var want []string
	for _, c := range cli.ManCommands(commandTree()) {
		want = append(want, cli.ManPageName(c))
		data, err := os.ReadFile(filepath.Join(dir, cli.ManPageName(c)))
		if err != nil {
			t.Errorf("%s: no man page: %v", c.CommandPath(), err)
			continue
		}
		if short := strings.ReplaceAll(c.Short, "-", `\-`); !strings.Contains(string(data), short) {
			t.Errorf("%s does not describe the command (%q)", cli.ManPageName(c), short)
		}
	}
	entries, _ := os.ReadDir(dir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("pages %v, want %v", got, want)
	}
	for _, page := range []string{"dronelink.1", "dronelink-send.1", "dronelink-user-key-add.1", "dronelink-completion-bash.1"} {
		if !slices.Contains(got, page) {
			t.Errorf("no %s", page)
		}
	}
	if !regexp.MustCompile(`^wrote \d+ man pages to `).MatchString(r.stdout) {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestManUsageErrors(t *testing.T) {
	run(t, "", "man").want(t, 2, "missing --dir DIR", "(see dronelink man --help)")
	run(t, "", "man", "--dir", "").want(t, 2, "--dir must not be empty")
	run(t, "", "man", "--dir", t.TempDir(), "extra").want(t, 2, `unknown command "extra"`)
	file := writeFile(t, filepath.Join(t.TempDir(), "file"), "x", 0o600)
	run(t, "", "man", "--dir", file).want(t, 1, "not a directory")
}

func TestExitCodesInHelp(t *testing.T) {
	notExecuted := "  4  command not executed or failed"
	cases := []struct {
		command string
		want    []string
		not     []string
	}{
		{"send", []string{notExecuted, "  5  no answer: timeout"}, nil},
		{"listen", []string{"  0  N payloads arrived (--count N), or interrupted after the login",
			"  5  not logged in within --timeout", "  6  session closed by the drone"}, []string{"  4  ", "(send:"}},
		{"gcs", []string{"  0  interrupted: the normal way to stop", "  5  the first login did not succeed within --timeout",
			"  6  session closed by the drone for good"}, []string{"  4  ", "(send:"}},
	}
	for _, tc := range cases {
		t.Run(tc.command, func(t *testing.T) {
			r := run(t, "", tc.command, "--help")
			r.want(t, 0)
			for _, w := range tc.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("%s --help lacks %q", tc.command, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(r.stdout, n) {
					t.Errorf("%s --help has %q, which does not apply to it", tc.command, n)
				}
			}
		})
	}
}

// TestREADMECommandReference keeps the README's command reference complete: every command
// of dronelink and every flag.
func TestREADMECommandReference(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	reference := cli.Section(string(readme), "## Command-line reference")
	if reference == "" {
		t.Fatal(`README.md has no section "## Command-line reference"`)
	}
	for _, m := range cli.MissingFromReference(commandTree(), reference) {
		t.Errorf("README.md's command-line reference does not mention the %s", m)
	}
}

// helpColumns reduces the run of spaces between a flag and its description to one tab,
// keeping the indentation.
func helpColumns(line string) string {
	body := strings.TrimLeft(line, " ")
	indent := line[:len(line)-len(body)]
	return indent + regexp.MustCompile(` {2,}`).ReplaceAllString(body, "\t")
}
