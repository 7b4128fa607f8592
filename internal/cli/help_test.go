package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func TestFlagUsages(t *testing.T) {
	cases := []struct {
		name   string
		define func(fs *pflag.FlagSet)
		want   string
	}{
		{"bool without a value",
			func(fs *pflag.FlagSet) { fs.BoolP("help", "h", false, "help for send") },
			"  -h, --help   help for send\n"},
		{"bool defaulting to true",
			func(fs *pflag.FlagSet) { fs.Bool("color", true, "colour the output") },
			"      --color   colour the output (default true)\n"},
		{"placeholder from the usage",
			func(fs *pflag.FlagSet) { fs.String("out", "", "write the key to `PATH`") },
			"      --out PATH   write the key to PATH\n"},
		{"placeholder from the type, string default quoted",
			func(fs *pflag.FlagSet) { fs.String("log-format", "text", "text or json") },
			"      --log-format string   text or json (default \"text\")\n"},
		{"duration default",
			func(fs *pflag.FlagSet) { fs.Duration("timeout", 15*time.Second, "give up after `DURATION`") },
			"      --timeout DURATION   give up after DURATION (default 15s)\n"},
		{"zero defaults left out",
			func(fs *pflag.FlagSet) {
				fs.Int("count", 0, "exit after `N` payloads")
				fs.Duration("wait", 0, "wait")
			},
			"      --count N         exit after N payloads\n" +
				"      --wait duration   wait\n"},
		{"optional value",
			func(fs *pflag.FlagSet) {
				fs.String("color", "", "colour `WHEN`")
				fs.Lookup("color").NoOptDefVal = "auto"
			},
			"      --color WHEN[=auto]   colour WHEN\n"},
		{"hidden flags left out, columns aligned, sorted",
			func(fs *pflag.FlagSet) {
				fs.Bool("secret", false, "not shown")
				_ = fs.MarkHidden("secret")
				fs.StringP("user", "u", "", "log in as `NAME`")
				fs.Bool("independent", false, "any order")
			},
			"      --independent   any order\n" +
				"  -u, --user NAME     log in as NAME\n"},
		{"multi-line usage indented under the usage column",
			func(fs *pflag.FlagSet) { fs.Bool("x", false, "first\nsecond") },
			"      --x   first\n            second\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			tc.define(fs)
			if got := FlagUsages(fs); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// testTree is a small program: root with a persistent flag, a group command and a leaf.
func testTree(out *bytes.Buffer) *cobra.Command {
	root := &cobra.Command{Use: "prog", Short: "A program", Version: "1.0",
		Long: "Prog does things.\n\n.starts with a dot\n\nExit codes:\n  0  ok\n  1  not ok"}
	root.PersistentFlags().Bool("verbose", false, "say more")
	group := &cobra.Command{Use: "user", Short: "Manage users"}
	add := &cobra.Command{Use: "add --name NAME", Short: "Add a user", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return nil }}
	add.Flags().String("name", "", "the user's `NAME`")
	add.Flags().Bool("admin", false, `make the user an admin (a\b-c)`)
	hidden := &cobra.Command{Use: "secret", Hidden: true, Run: func(*cobra.Command, []string) {}}
	group.AddCommand(add)
	root.AddCommand(group, hidden)
	root.SetOut(out)
	root.SetErr(out)
	Setup(root, nil)
	return root
}

func TestHelpOfEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"user", "--help"}, {"user", "add", "--help"}, {"help", "user", "add"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out bytes.Buffer
			root := testTree(&out)
			root.SetArgs(args)
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			help := out.String()
			if strings.Contains(help, "[=") {
				t.Errorf("a flag shows an optional value:\n%s", help)
			}
			if !strings.Contains(help, "  -h, --help ") {
				t.Errorf("no plain -h, --help line:\n%s", help)
			}
			if args[0] == "user" || args[0] == "help" {
				if !strings.Contains(help, "Global Flags:\n      --verbose   say more\n") {
					t.Errorf("inherited flags not listed conventionally:\n%s", help)
				}
			}
		})
	}
}

func TestSetupAddsCompletionAndHiddenMan(t *testing.T) {
	var out bytes.Buffer
	root := testTree(&out)
	for _, name := range []string{"completion", "man"} {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Name() != name {
			t.Fatalf("no %s command: %v", name, err)
		}
	}
	if man, _, _ := root.Find([]string{"man"}); !man.Hidden {
		t.Error("the man command is not hidden")
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		out.Reset()
		root.SetArgs([]string{"completion", shell})
		if err := root.Execute(); err != nil {
			t.Fatalf("%s: %v", shell, err)
		}
		if !strings.Contains(out.String(), "prog") {
			t.Errorf("%s completion script does not mention the program", shell)
		}
	}
}

func TestSetupWrapsTheCommandsItAdds(t *testing.T) {
	root := &cobra.Command{Use: "prog"}
	root.AddCommand(&cobra.Command{Use: "leaf", Run: func(*cobra.Command, []string) {}})
	root.SetOut(new(bytes.Buffer))
	wrapped := map[string]bool{}
	Setup(root, func(fn RunFunc) RunFunc {
		return func(cmd *cobra.Command, args []string) error {
			wrapped[cmd.Name()] = true
			return fn(cmd, args)
		}
	})
	for _, args := range [][]string{{"completion", "bash"}, {"man", "--dir", t.TempDir()}} {
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
	}
	if !wrapped["bash"] || !wrapped["man"] {
		t.Errorf("wrapped %v, want bash and man", wrapped)
	}
}
