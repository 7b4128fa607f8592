package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// NewManCmd returns the hidden "man" command of root: "PROGRAM man --dir DIR" writes the man
// pages of root and of every available subcommand into DIR (see [WriteManPages]).
func NewManCmd(root *cobra.Command) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "man --dir DIR",
		Short: "Write the man pages of " + root.Name() + " into a directory",
		Long: `Write a man page (section 1) for ` + root.Name() + ` and for each of its commands into DIR,
created if missing, and replace pages of the same names there. The pages are made from the
same definitions as --help. For example:

  ` + root.Name() + ` man --dir /usr/local/share/man/man1 && mandb -q`,
		Hidden: true,
		// Usage errors are found here, before RunE, so that a program tells them apart.
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.NoArgs(cmd, args); err != nil {
				return err
			}
			if !cmd.Flags().Changed("dir") {
				return errors.New("missing --dir DIR")
			}
			if dir == "" {
				return errors.New("--dir must not be empty")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			files, err := WriteManPages(root, dir)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %d man pages to %s\n", len(files), dir)
			return err
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "write the pages into `DIR` (required)")
	return cmd
}

// ManCommands returns root and every command below it that gets a man page and a place in
// the documentation: those that are available (not hidden, not deprecated, not "help"),
// depth first in the order of --help.
func ManCommands(root *cobra.Command) []*cobra.Command {
	cmds := []*cobra.Command{root}
	for _, c := range root.Commands() {
		if c.IsAvailableCommand() && !c.IsAdditionalHelpTopicCommand() {
			cmds = append(cmds, ManCommands(c)...)
		}
	}
	return cmds
}

// ManPageName is the file name of cmd's man page: its command path with dashes and the
// section, "dronelink-user-add.1".
func ManPageName(cmd *cobra.Command) string { return manName(cmd) + ".1" }

func manName(cmd *cobra.Command) string { return strings.ReplaceAll(cmd.CommandPath(), " ", "-") }

// WriteManPages writes the man page of each of [ManCommands](root) into dir, created if
// missing, and returns the paths written.
func WriteManPages(root *cobra.Command, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("man pages: %w", err)
	}
	var files []string
	for _, c := range ManCommands(root) {
		path := filepath.Join(dir, ManPageName(c))
		if err := os.WriteFile(path, ManPage(c), 0o644); err != nil {
			return files, fmt.Errorf("man pages: %w", err)
		}
		files = append(files, path)
	}
	return files, nil
}

// ManPage returns cmd's man page, section 1, in roff with the man macros: name, synopsis,
// description (the --help text), subcommands, options, options inherited from parent
// commands, and related pages. The page carries no date, so it depends only on the
// definitions.
func ManPage(cmd *cobra.Command) []byte {
	cmd.InitDefaultHelpFlag()
	cmd.InitDefaultVersionFlag()
	var b bytes.Buffer
	root := cmd.Root().Name()
	fmt.Fprintf(&b, ".\\\" Written by %q from the command definitions.\n", root+" man")
	fmt.Fprintf(&b, ".TH \"%s\" \"1\" \"\" \"%s\" \"User Commands\"\n", roffEscape(strings.ToUpper(manName(cmd))), roffEscape(root))
	b.WriteString(".nh\n.ad l\n") // no hyphenation, ragged right: options stay whole and searchable

	b.WriteString(".SH NAME\n")
	fmt.Fprintf(&b, "%s \\- %s\n", roffEscape(manName(cmd)), roffEscape(cmd.Short))

	b.WriteString(".SH SYNOPSIS\n.nf\n")
	if cmd.Runnable() {
		b.WriteString(synopsisLine(cmd, cmd.UseLine()))
	}
	if cmd.HasAvailableSubCommands() {
		b.WriteString(synopsisLine(cmd, cmd.CommandPath()+" COMMAND"))
	}
	b.WriteString(".fi\n")

	b.WriteString(".SH DESCRIPTION\n")
	text := cmd.Long
	if text == "" {
		text = cmd.Short
	}
	writeText(&b, text)

	var subs []*cobra.Command
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() && !c.IsAdditionalHelpTopicCommand() {
			subs = append(subs, c)
		}
	}
	if len(subs) > 0 {
		b.WriteString(".SH COMMANDS\n")
		for _, c := range subs {
			fmt.Fprintf(&b, ".TP\n\\fB%s\\fR\n%s (see \\fB%s\\fR(1))\n",
				roffEscape(c.Name()), roffEscape(c.Short), roffEscape(manName(c)))
		}
	}
	if cmd.HasAvailableLocalFlags() {
		b.WriteString(".SH OPTIONS\n")
		writeFlags(&b, cmd.LocalFlags())
	}
	if cmd.HasAvailableInheritedFlags() {
		b.WriteString(".SH \"OPTIONS INHERITED FROM PARENT COMMANDS\"\n")
		writeFlags(&b, cmd.InheritedFlags())
	}

	var related []string
	if cmd.HasParent() {
		related = append(related, manName(cmd.Parent()))
	}
	for _, c := range subs {
		related = append(related, manName(c))
	}
	if len(related) > 0 {
		b.WriteString(".SH \"SEE ALSO\"\n")
		for i, name := range related {
			sep := ","
			if i == len(related)-1 {
				sep = ""
			}
			fmt.Fprintf(&b, ".BR %s (1)%s\n", roffEscape(name), sep)
		}
	}
	return b.Bytes()
}

// synopsisLine is one line of a synopsis in no-fill mode: the command path in bold, the rest
// as written.
func synopsisLine(cmd *cobra.Command, line string) string {
	path := cmd.CommandPath()
	rest := strings.TrimPrefix(line, path)
	return fmt.Sprintf("\\fB%s\\fR%s\n", roffEscape(path), roffEscape(rest))
}

// writeText writes help text as man paragraphs: paragraphs are separated by blank lines; a
// paragraph with an indented line (a table, an example) keeps its lines as they are, the
// others are filled by the formatter.
func writeText(b *bytes.Buffer, text string) {
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		para = strings.Trim(para, "\n")
		if para == "" {
			continue
		}
		lines := strings.Split(para, "\n")
		indented := false
		for _, l := range lines {
			if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
				indented = true
			}
		}
		b.WriteString(".PP\n")
		if indented {
			b.WriteString(".nf\n")
		}
		for _, l := range lines {
			b.WriteString(roffLine(l))
			b.WriteByte('\n')
		}
		if indented {
			b.WriteString(".fi\n")
		}
	}
}

// writeFlags writes fs's visible flags as tagged paragraphs, spelled as in --help.
func writeFlags(b *bytes.Buffer, fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		short, long, value, usage := flagParts(f)
		b.WriteString(".TP\n")
		if short != "" {
			fmt.Fprintf(b, "\\fB%s\\fR, ", roffEscape(short))
		}
		fmt.Fprintf(b, "\\fB%s\\fR", roffEscape(long))
		if name, ok := strings.CutPrefix(value, " "); ok {
			fmt.Fprintf(b, " \\fI%s\\fR", roffEscape(name))
		} else if value != "" {
			fmt.Fprintf(b, "\\fI%s\\fR", roffEscape(value))
		}
		b.WriteByte('\n')
		for _, l := range strings.Split(usage, "\n") {
			b.WriteString(roffLine(strings.TrimSpace(l)))
			b.WriteByte('\n')
		}
	})
}

// roffEscape makes s plain text for roff: backslashes print as backslashes, and dashes are
// minus signs, as options need to be for copying and searching.
func roffEscape(s string) string {
	return strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
}

// roffLine escapes one input line; a line that starts with a dot or an apostrophe would be
// taken for a request, so it is protected with a zero-width "\&".
func roffLine(s string) string {
	s = roffEscape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
