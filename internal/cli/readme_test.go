package cli

import (
	"bytes"
	"slices"
	"testing"
)

func TestMissingFromReference(t *testing.T) {
	root := testTree(new(bytes.Buffer))
	full := "prog --verbose --version\nprog user add --name NAME [--admin]\nprog completion bash|zsh|fish|powershell [--no-descriptions]\nprog man --dir DIR\n"
	cases := []struct {
		reference string
		want      []string
	}{
		{full, nil},
		{"prog user add --name --admin --verbose --version --no-descriptions --dir\n", []string{
			`command "prog completion"`, `command "prog completion bash"`, `command "prog completion fish"`,
			`command "prog completion powershell"`, `command "prog completion zsh"`, `command "prog man"`}},
		{"prog --verbose --version\nprog user add --name\nprog users\nprog completion bash|zsh|fish|powershell [--no-descriptions]\nprog man --dir DIR\n", []string{
			`flag --admin of "prog user add"`}},
		{"", nil}, // filled below: everything missing
	}
	cases[3].want = MissingFromReference(root, "x")
	if len(cases[3].want) < 10 {
		t.Fatalf("an empty reference lacks only %v", cases[3].want)
	}
	for _, tc := range cases {
		if got := MissingFromReference(root, tc.reference); !slices.Equal(got, tc.want) {
			t.Errorf("reference %q:\nmissing %q\nwant    %q", tc.reference, got, tc.want)
		}
	}
}

func TestSection(t *testing.T) {
	doc := "# T\n\n## A\na\n### A1\na1\n## B\nb\n"
	for _, tc := range []struct{ heading, want string }{
		{"## A", "## A\na\n### A1\na1\n"},
		{"### A1", "### A1\na1\n"},
		{"## B", "## B\nb\n"},
		{"## C", ""},
	} {
		if got := Section(doc, tc.heading); got != tc.want {
			t.Errorf("Section(%q) = %q, want %q", tc.heading, got, tc.want)
		}
	}
}
