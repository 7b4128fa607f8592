package operator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dronelink/dronelink/internal/buildinfo"
	"github.com/dronelink/dronelink/internal/cli"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// app is one run of the tool: its streams and the few things tests replace.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	// stdinTerminal is the file descriptor of standard input if it is a terminal (for
	// password prompts), else -1.
	stdinTerminal int
	// progress: standard error is a terminal, so progress lines may be shown there.
	progress bool
	// stdoutTerminal: standard output is a terminal (send is interactive when standard
	// input is one too).
	stdoutTerminal bool
	// signals: send and listen stop on SIGINT and SIGTERM (off in tests, which cancel
	// the context instead).
	signals bool
	// hashParams are the argon2id parameters for new password hashes.
	hashParams userdb.Params

	// configPath is --config: the operator's profile (profile.go); defaultProfile is the
	// profile used without it ("" when there is no home directory).
	configPath, defaultProfile string
}

// Main runs the dronelink tool with args (without the program name) and returns the exit
// status. On failure it prints exactly one line "dronelink: <message>" to stderr.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := newApp(stdin, stdout, stderr)
	a.signals = true
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		a.stdinTerminal = int(f.Fd())
	}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		a.progress = true
	}
	if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		a.stdoutTerminal = true
	}
	return a.run(context.Background(), args)
}

// newApp returns an app with plain (non-terminal) streams.
func newApp(stdin io.Reader, stdout, stderr io.Writer) *app {
	return &app{stdin: stdin, stdout: stdout, stderr: stderr, stdinTerminal: -1, hashParams: userdb.DefaultParams,
		defaultProfile: defaultProfilePath()}
}

// run executes one command line.
func (a *app) run(ctx context.Context, args []string) int {
	root := a.newRootCmd()
	root.SetArgs(append([]string{}, args...))
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	code, msg := describe(err)
	if code == ExitUsage && cmd != nil {
		msg += fmt.Sprintf(" (see %s --help)", cmd.CommandPath())
	}
	fmt.Fprintf(a.stderr, "dronelink: %s\n", oneLine(msg))
	return code
}

func (a *app) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "dronelink",
		Short: "Operator and administrator tool for dronelink",
		Long: `dronelink is the operator's and administrator's tool for the dronelink command and
telemetry link: keys and the fleet PSK, key fingerprints and pinning the drone's key,
the drone's user database, sending commands and receiving telemetry.

Passwords are never accepted on the command line: use --password-file, --password-stdin,
or type them at the prompt when standard input is a terminal.

` + exitCodesHelp,
		Version:       buildinfo.Version(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          noSubcommand,
		RunE:          a.runE(missingSubcommand),
	}
	root.SetVersionTemplate("dronelink {{.Version}}\n")
	root.SuggestionsMinimumDistance = 2
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.PersistentFlags().StringVar(&a.configPath, "config", "", "the operator's profile `PATH`: named drones for --drone NAME (default $XDG_CONFIG_HOME/dronelink/config.toml, ~/.config/dronelink/config.toml)")
	root.AddCommand(
		a.newKeygenCmd(),
		a.newPSKCmd(),
		a.newFingerprintCmd(),
		a.newPinCmd(),
		a.newUserCmd(),
		a.newSendCmd(),
		a.newListenCmd(),
		a.newGCSCmd(),
		a.newStatusCmd(),
		a.newVersionCmd(),
	)
	cli.Setup(root, a.runE)
	return root
}

// runE wraps a subcommand's body so that describe can tell its errors from cobra's.
func (a *app) runE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := fn(cmd, args); err != nil {
			return &runError{err: err}
		}
		return nil
	}
}

// signalContext returns ctx cancelled on SIGINT or SIGTERM when the app handles signals.
// Once ctx ends, the default signal behaviour is restored, so a second Ctrl-C kills.
func (a *app) signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if !a.signals {
		return context.WithCancel(ctx)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

// noSubcommand is the Args check of commands that only group subcommands.
func noSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return errors.New(msg)
}

// missingSubcommand is the body of commands that only group subcommands.
func missingSubcommand(cmd *cobra.Command, _ []string) error {
	names := ""
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			if names != "" {
				names += ", "
			}
			names += c.Name()
		}
	}
	return usagef("missing command: one of %s", names)
}

// noArgs is the Args check of commands that take only flags.
func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q", args[0])
	}
	return nil
}

// requireFlags marks flags required (cobra reports all missing ones in one line).
func requireFlags(cmd *cobra.Command, names ...string) {
	for _, n := range names {
		if err := cmd.MarkFlagRequired(n); err != nil {
			panic("operator: no flag " + n) // a programming error, caught by every test
		}
	}
}
