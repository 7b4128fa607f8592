// Package cli holds the command-line conventions that dronelink and dronelinkd share:
// --help that renders flags the way GNU tools and cobra's documentation show them, shell
// completion, and man pages written from the same cobra definitions as --help.
//
// Each program builds its own command tree and hands the root to [Setup] once every
// subcommand is added.
package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() {
	cobra.AddTemplateFunc("flagUsages", FlagUsages)
}

// RunFunc is the RunE of a cobra command.
type RunFunc = func(cmd *cobra.Command, args []string) error

// Setup applies the shared conventions to root, after its subcommands are added and its
// output streams set: the help of root and of every subcommand lists flags with
// [FlagUsages]; a "completion" command writes bash, zsh, fish and PowerShell completion
// scripts; a hidden "man" command writes the man pages (see [NewManCmd]). If wrap is not
// nil, it wraps the RunE of each command Setup adds, so that the program can treat their
// errors as it treats those of its own commands.
func Setup(root *cobra.Command, wrap func(RunFunc) RunFunc) {
	root.SetUsageTemplate(usageTemplate(root.UsageTemplate()))
	root.AddCommand(NewManCmd(root))
	// cobra would add the completion command only when the program runs; adding it now
	// puts it in the man pages too.
	root.CompletionOptions.DisableDefaultCmd = false
	root.InitDefaultCompletionCmd()
	if comp, _, err := root.Find([]string{"completion"}); err == nil && comp != root {
		refuseMissingShell(comp)
	}
	if wrap == nil {
		return
	}
	for _, c := range root.Commands() {
		if c.Name() != "man" && c.Name() != "completion" {
			continue
		}
		for _, cc := range append([]*cobra.Command{c}, c.Commands()...) {
			if cc.RunE != nil {
				cc.RunE = wrap(cc.RunE)
			}
		}
	}
}

// refuseMissingShell makes "completion" without a shell, or with one cobra does not know, a
// usage error; cobra would print the command's help and succeed.
func refuseMissingShell(comp *cobra.Command) {
	var shells []string
	for _, c := range comp.Commands() {
		if c.IsAvailableCommand() {
			shells = append(shells, c.Name())
		}
	}
	list := strings.Join(shells, ", ")
	comp.Args = func(_ *cobra.Command, args []string) error {
		if len(args) == 0 {
			return fmt.Errorf("missing shell: one of %s", list)
		}
		return fmt.Errorf("unknown shell %q: want one of %s", args[0], list)
	}
	comp.RunE = func(*cobra.Command, []string) error { return nil } // not reached: Args refuses
}

// usageTemplate is cobra's usage template with the flag lists rendered by FlagUsages.
func usageTemplate(cobraTemplate string) string {
	t := strings.ReplaceAll(cobraTemplate, "{{.LocalFlags.FlagUsages", "{{flagUsages .LocalFlags")
	return strings.ReplaceAll(t, "{{.InheritedFlags.FlagUsages", "{{flagUsages .InheritedFlags")
}

// FlagUsages lists the visible flags of fs one per line, the way GNU tools do:
//
//	-h, --help               help for send
//	    --out PATH           write the key to PATH
//	    --timeout DURATION   give up after DURATION (default 15s)
//
// A flag that takes a value shows its placeholder (the back-quoted word of its usage, or
// its type); a boolean flag shows none, since "--flag" alone sets it; a default is shown
// when it is not the type's zero value. It replaces pflag's FlagUsages, which since pflag
// v1.1.0 marks every boolean flag "[=true|false]", the help flag too.
func FlagUsages(fs *pflag.FlagSet) string {
	type row struct{ left, usage string }
	var rows []row
	width := 0
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		short, long, value, usage := flagParts(f)
		left := "      " + long + value
		if short != "" {
			left = "  " + short + ", " + long + value
		}
		rows = append(rows, row{left, usage})
		width = max(width, len(left))
	})
	var b strings.Builder
	indent := "\n" + strings.Repeat(" ", width+3)
	for _, r := range rows {
		fmt.Fprintf(&b, "%-*s   %s\n", width, r.left, strings.ReplaceAll(r.usage, "\n", indent))
	}
	return b.String()
}

// flagParts splits what help shows of f: its short name ("-h", or "" if it has none), its
// long name ("--help"), its value placeholder (" PATH", "[=auto]", or "" for a boolean
// flag) and its usage with the default and any deprecation appended.
func flagParts(f *pflag.Flag) (short, long, value, usage string) {
	if f.Shorthand != "" && f.ShorthandDeprecated == "" {
		short = "-" + f.Shorthand
	}
	long = "--" + f.Name
	name, usage := pflag.UnquoteUsage(f)
	if !isBool(f) && name != "" {
		value = " " + name
	}
	if f.NoOptDefVal != "" && !(isBool(f) && f.NoOptDefVal == "true") {
		value += "[=" + f.NoOptDefVal + "]"
	}
	if !zeroDefault(f) {
		if f.Value.Type() == "string" {
			usage += fmt.Sprintf(" (default %q)", f.DefValue)
		} else {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
	}
	if f.Deprecated != "" {
		usage += fmt.Sprintf(" (DEPRECATED: %s)", f.Deprecated)
	}
	return short, long, value, usage
}

// isBool says whether f is a boolean flag, set by its name alone.
func isBool(f *pflag.Flag) bool {
	t := f.Value.Type()
	return t == "bool" || t == "boolfunc"
}

// zeroDefault says whether f's default is its type's zero value, which help leaves out.
func zeroDefault(f *pflag.Flag) bool {
	switch f.Value.Type() {
	case "bool", "boolfunc":
		return f.DefValue == "false" || f.DefValue == ""
	case "duration":
		return f.DefValue == "0" || f.DefValue == "0s"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64",
		"count", "float32", "float64":
		return f.DefValue == "0"
	case "string":
		return f.DefValue == ""
	case "stringSlice", "stringArray", "intSlice", "uintSlice", "boolSlice", "durationSlice":
		return f.DefValue == "[]"
	}
	switch f.DefValue {
	case "", "0", "false", "<nil>", "[]":
		return true
	}
	return false
}
