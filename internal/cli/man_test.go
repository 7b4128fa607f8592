package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestWriteManPages(t *testing.T) {
	root := testTree(new(bytes.Buffer))
	dir := filepath.Join(t.TempDir(), "man", "man1")
	files, err := WriteManPages(root, dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	slices.Sort(names)
	want := []string{"prog-completion-bash.1", "prog-completion-fish.1", "prog-completion-powershell.1",
		"prog-completion-zsh.1", "prog-completion.1", "prog-user-add.1", "prog-user.1", "prog.1"}
	if !slices.Equal(names, want) {
		t.Fatalf("pages %v, want %v (no page for hidden commands or help)", names, want)
	}

	cases := []struct {
		page string
		want []string
	}{
		{"prog.1", []string{
			`.TH "PROG" "1" "" "prog" "User Commands"`,
			"prog \\- A program\n",
			"\\fBprog\\fR COMMAND\n",
			"Prog does things.\n",
			"\\&.starts with a dot\n",                            // not a request
			".PP\n.nf\nExit codes:\n  0  ok\n  1  not ok\n.fi\n", // tables keep their lines
			".TP\n\\fBuser\\fR\nManage users (see \\fBprog\\-user\\fR(1))\n",
			"\\fB\\-v\\fR, \\fB\\-\\-version\\fR\n",
		}},
		{"prog-user-add.1", []string{
			`.TH "PROG\-USER\-ADD" "1"`,
			".SH NAME\nprog\\-user\\-add \\- Add a user\n",
			".SH SYNOPSIS\n.nf\n\\fBprog user add\\fR \\-\\-name NAME [flags]\n.fi\n",
			".TP\n\\fB\\-\\-name\\fR \\fINAME\\fR\nthe user's NAME\n",
			".TP\n\\fB\\-\\-admin\\fR\nmake the user an admin (a\\eb\\-c)\n",
			".SH \"OPTIONS INHERITED FROM PARENT COMMANDS\"\n.TP\n\\fB\\-\\-verbose\\fR\nsay more\n",
			".SH \"SEE ALSO\"\n.BR prog\\-user (1)\n",
		}},
	}
	for _, tc := range cases {
		data, err := os.ReadFile(filepath.Join(dir, tc.page))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(data), w) {
				t.Errorf("%s lacks %q:\n%s", tc.page, w, data)
			}
		}
	}
	lintManPages(t, files)
}

// overstrike matches the character a terminal overstrikes for bold or underline.
var overstrike = regexp.MustCompile(".\x08")

// lintManPages formats each page with groff, where it is installed, and fails on any
// warning; it also checks the rendered page spells options as they are typed.
func lintManPages(t *testing.T, files []string) {
	t.Helper()
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Log("groff not installed: man pages not formatted")
		return
	}
	for _, f := range files {
		var out, errb bytes.Buffer
		cmd := exec.Command(groff, "-man", "-ww", "-Tascii", f)
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil || errb.Len() > 0 {
			t.Errorf("groff %s: %v %s", filepath.Base(f), err, errb.String())
		}
		text := overstrike.ReplaceAllString(out.String(), "")
		if !strings.Contains(text, "--help") {
			t.Errorf("%s does not render --help as typed:\n%s", filepath.Base(f), text)
		}
	}
}
