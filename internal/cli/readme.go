package cli

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// MissingFromReference lists what of root's commands a command reference (a README's
// section) does not mention: each available command and the hidden man command by its
// path ("dronelink user key add", or as an alternative, "dronelink user key add|del"), and
// each of their flags but --help as "--name".
func MissingFromReference(root *cobra.Command, reference string) []string {
	cmds := ManCommands(root)
	if man, _, err := root.Find([]string{"man"}); err == nil && man != root {
		cmds = append(cmds, man)
	}
	var missing []string
	seen := map[string]bool{}
	for _, c := range cmds {
		if !MentionsCommand(reference, c.CommandPath()) {
			missing = append(missing, fmt.Sprintf("command %q", c.CommandPath()))
		}
		c.InitDefaultHelpFlag()
		c.InitDefaultVersionFlag()
		c.Flags().VisitAll(func(f *pflag.Flag) {
			name := "--" + f.Name
			if f.Hidden || f.Name == "help" || seen[name] {
				return
			}
			seen[name] = true
			if !regexp.MustCompile(regexp.QuoteMeta(name) + `(?:[^a-z-]|$)`).MatchString(reference) {
				missing = append(missing, fmt.Sprintf("flag %s of %q", name, c.CommandPath()))
			}
		})
	}
	return missing
}

// MentionsCommand says whether text names the command with path ("dronelink user key add"),
// as that or among alternatives for its last word ("dronelink user key add|del").
func MentionsCommand(text, path string) bool {
	pattern := regexp.QuoteMeta(path)
	if parent, name, ok := cutLast(path); ok {
		pattern = regexp.QuoteMeta(parent) + ` (?:[a-z-]+\|)*` + regexp.QuoteMeta(name) + `(?:\|[a-z-]+)*`
	}
	return regexp.MustCompile(`(?:^|[^a-z-])` + pattern + `(?:[^a-z-]|$)`).MatchString(text)
}

// cutLast splits a command path before its last word.
func cutLast(path string) (parent, name string, ok bool) {
	i := strings.LastIndexByte(path, ' ')
	if i < 0 {
		return "", path, false
	}
	return path[:i], path[i+1:], true
}

// Section returns the part of a Markdown text from the heading line that starts with
// heading up to the next heading of the same or a higher level, or "" if there is none.
func Section(markdown, heading string) string {
	level := strings.Index(heading, " ")
	start := strings.Index(markdown, "\n"+heading)
	if start < 0 || level < 1 {
		return ""
	}
	rest := markdown[start+1:]
	end := len(rest)
	for i := 1; i <= level; i++ {
		marker := "\n" + strings.Repeat("#", i) + " "
		if j := strings.Index(rest[1:], marker); j >= 0 && j+2 < end {
			end = j + 2 // through the newline before the next heading
		}
	}
	return rest[:end]
}
