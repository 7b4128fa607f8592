package daemon

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dronelink/dronelink/internal/buildinfo"
	"github.com/dronelink/dronelink/internal/cli"
)

func TestVersionCommand(t *testing.T) {
	want := "dronelinkd " + buildinfo.Version() + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		code, out, errs := runMain(t, args...)
		if code != ExitOK || out != want || errs != "" {
			t.Errorf("%v: exit %d, stdout %q (want %q), stderr %q", args, code, out, want, errs)
		}
	}
}

func TestSubcommandUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"version", "extra"}, `unknown command "extra" for "dronelinkd version" (see dronelinkd version --help)`},
		{[]string{"version", "--bogus"}, "unknown flag: --bogus (see dronelinkd version --help)"},
		{[]string{"completion"}, "missing shell: one of bash, fish, powershell, zsh (see dronelinkd completion --help)"},
		{[]string{"completion", "tcsh"}, `unknown shell "tcsh"`},
		{[]string{"man"}, "missing --dir DIR (see dronelinkd man --help)"},
		{[]string{"verison"}, `unknown command "verison" for "dronelinkd"`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errs := runMain(t, tc.args...)
			lines := strings.Split(strings.TrimSpace(errs), "\n")
			if code != ExitUsage || out != "" || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Errorf("exit %d (want %d), stdout %q, stderr %q (want one line with %q)", code, ExitUsage, out, errs, tc.want)
			}
		})
	}
}

func TestHelpIsConventional(t *testing.T) {
	code, out, _ := runMain(t, "--help")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(out, "[=") {
		t.Errorf("help shows a flag with an optional value:\n%s", out)
	}
	lines := strings.Split(out, "\n")
	for _, want := range []string{
		"  dronelinkd [command]",
		"  version     Print the version of dronelinkd",
		"      --check-config               check the configuration, the files it names and that every address it would bind is free (--listen, --telemetry-in, --mavlink-listen, --metrics), and that the relay (--relay) takes the credentials and drone id, then exit",
		"  -h, --help                       help for dronelinkd",
		`      --listen HOST:PORT           UDP HOST:PORT to serve operators on (with --relay: only when given) (default "0.0.0.0:5000")`,
		"  -v, --version                    version for dronelinkd",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("no line %q in:\n%s", want, out)
		}
	}
}

func TestCompletionAndManPages(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		code, out, errs := runMain(t, "completion", shell)
		if code != ExitOK || len(out) < 1000 || !strings.Contains(out, "dronelinkd") || errs != "" {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %q", shell, code, len(out), errs)
		}
	}
	dir := t.TempDir()
	if code, _, errs := runMain(t, "man", "--dir", dir); code != ExitOK {
		t.Fatalf("man: exit %d: %s", code, errs)
	}
	var pages []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		pages = append(pages, e.Name())
	}
	want := []string{"dronelinkd-completion-bash.1", "dronelinkd-completion-fish.1", "dronelinkd-completion-powershell.1",
		"dronelinkd-completion-zsh.1", "dronelinkd-completion.1", "dronelinkd-version.1", "dronelinkd.1"}
	if !slices.Equal(pages, want) {
		t.Fatalf("pages %v, want %v", pages, want)
	}
	page, _ := os.ReadFile(filepath.Join(dir, "dronelinkd.1"))
	for _, want := range []string{`\fB\-\-users\fR \fIPATH\fR`, `\fB\-\-check\-config\fR` + "\n", "SIGHUP reloads the user database"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("dronelinkd.1 lacks %q", want)
		}
	}
}

// TestREADMECommandReference keeps the README's command reference complete: every command
// of dronelinkd, as its --help lists them, with the hidden man, and every flag.
func TestREADMECommandReference(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	reference := cli.Section(string(readme), "## Command-line reference")
	if reference == "" {
		t.Fatal(`README.md has no section "## Command-line reference"`)
	}
	flagLine := regexp.MustCompile(`^\s+(?:-[a-z], )?(--[a-z-]+)`)
	commands := [][]string{nil, {"man"}}
	for i := 0; i < len(commands); i++ {
		path := strings.Join(append([]string{"dronelinkd"}, commands[i]...), " ")
		if !cli.MentionsCommand(reference, path) {
			t.Errorf("README.md's command-line reference does not mention the command %q", path)
		}
		code, help, _ := runMain(t, append(append([]string{}, commands[i]...), "--help")...)
		if code != ExitOK {
			t.Fatalf("%s --help: exit %d", path, code)
		}
		section := ""
		for _, line := range strings.Split(help, "\n") {
			switch {
			case strings.HasSuffix(line, ":") && !strings.HasPrefix(line, " "):
				section = line
			case section == "Available Commands:" && strings.HasPrefix(line, "  "):
				if name := strings.Fields(line)[0]; name != "help" {
					commands = append(commands, append(append([]string{}, commands[i]...), name))
				}
			case section == "Flags:" || section == "Global Flags:":
				if m := flagLine.FindStringSubmatch(line); m != nil && m[1] != "--help" &&
					!regexp.MustCompile(regexp.QuoteMeta(m[1])+`(?:[^a-z-]|$)`).MatchString(reference) {
					t.Errorf("README.md's command-line reference does not mention the flag %s of %q", m[1], path)
				}
			}
		}
	}
	if len(commands) < 8 {
		t.Errorf("only %d commands found in the help texts: %v", len(commands), commands)
	}
}
