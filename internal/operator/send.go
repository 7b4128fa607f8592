package operator

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/pkg/link"
)

func (a *app) newSendCmd() *cobra.Command {
	var f linkFlags
	cmd := &cobra.Command{
		Use:   "send [--transport native|dtls] {--drone HOST:PORT|NAME | --relay URL --drone-id NAME} --drone-pub PATH --key PATH --psk PATH --user NAME --password-file PATH [MESSAGE...]",
		Short: "Send commands to a drone and wait for their acknowledgements",
		Long: `Send one command to a drone and print its acknowledgement as one line:

  ack ok: <payload>

The MESSAGE arguments, joined with single spaces, are the command. The tool sets up a
session (retransmitting over a lossy link), logs in, sends the command until the drone
acknowledges it (the drone executes it at most once however often it arrives) and
closes the session. The payload is shown as text, control characters escaped, or as
"hex:..." when it is binary. The exit status is 0 only for an "ok" acknowledgement.

With --stats (and always when standard error is a terminal) a line on standard error
follows each acknowledgement: its round trip from the command's first transmission, the
transmissions (the first and each retransmission) and datagrams (copies included) it
took, and the link's smoothed round trip and estimated loss:

  dronelink: stats: acknowledged in 42.3 ms, 1 transmission, 2 datagrams; link round trip 41.0 ms, loss 3.0%

The command carries its deadline (the end of --timeout, at most 30 s after it is
issued): the drone never executes it after that, so when this tool reports "no
acknowledgement" the command will not run later, whoever holds a copy back. It is also
ordered after your earlier commands: the drone refuses it ("superseded") if a command
you issued after it, with the same operator key, has already run. --independent lifts
that for commands whose order does not matter. A command issued before the drone
restarted is refused ("restarted"): the drone cannot know whether it ran before the
restart, so the outcome is unknown (exit 5).

The drone's public key (--drone-pub) must have been checked: fetch it with "dronelink
pin", which writes it only once its fingerprint matches, or obtain it out of band and
compare its fingerprint ("dronelink fingerprint PATH") with the one the drone's
administrator sees.

` + sendManyHelp + `

` + profileHelp + `

` + relayHelp + `

` + transportHelp + `

` + exitCodesHelp,
	}
	f.register(cmd, "give up when no acknowledgement came within this `DURATION`")
	var independent bool
	cmd.Flags().BoolVar(&independent, "independent", false, "do not order this command after your other commands (the drone runs it even if a later one ran first)")
	cmd.Flags().BoolVar(&f.stats, "stats", false, "after each acknowledgement, print its round trip, transmissions and the link's estimates on standard error (always shown when standard error is a terminal)")
	cmd.RunE = a.runE(func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return a.sendMany(cmd.Context(), &f, link.CommandOptions{Independent: independent})
		}
		message := strings.Join(args, " ")
		switch {
		case strings.TrimSpace(message) == "":
			return usagef("empty message")
		case len(message) > link.MaxCommandPayload:
			return usagef("message too long: %d bytes, at most %d", len(message), link.MaxCommandPayload)
		}
		setup, err := a.prepare(&f)
		if err != nil {
			return err
		}
		defer setup.wipe()
		return a.send(cmd.Context(), setup, []byte(message), link.CommandOptions{Independent: independent})
	})
	return cmd
}

// send dials, sends one command, prints the acknowledgement and closes the session. The
// timeout covers all of it.
func (a *app) send(ctx context.Context, s *linkSetup, message []byte, opts link.CommandOptions) error {
	ctx, stopSignals := a.signalContext(ctx)
	defer stopSignals()
	deadline := time.Now().Add(s.timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	prog := a.newProgress(deadline)
	defer prog.clear()

	sess, err := a.dial(ctx, s, prog, dialOptions{})
	if err != nil {
		return err
	}
	defer sess.client.Close()
	ack, err := sess.client.CommandWith(ctx, message, opts)
	if err != nil {
		return a.linkFailure(ctx, err, sess.state, s, "acknowledgement")
	}
	prog.clear()
	if _, err := fmt.Fprintln(a.stdout, ackLine(ack)); err != nil {
		return localf("cannot print the acknowledgement: %v", err)
	}
	a.printStats(s, ackStats(ack, sess.client.Estimate()))
	return ackFailure(ack, sess.client.Role())
}

// ackLine is the acknowledgement as send prints it: "ack STATUS:" and the payload.
func ackLine(ack link.Ack) string {
	line := "ack " + ack.Status.String() + ":"
	if len(ack.Payload) > 0 {
		line += " " + render(ack.Payload)
	}
	return line
}

// ackStats describes how an acknowledgement came: its round trip (from the command's
// first transmission), the transmissions and datagrams it took, and the link's estimates
// as the client sees them after it.
func ackStats(ack link.Ack, est link.LinkEstimate) string {
	plural := func(n int, what string) string {
		if n == 1 {
			return "1 " + what
		}
		return fmt.Sprintf("%d %ss", n, what)
	}
	msg := fmt.Sprintf("acknowledged in %s, %s, %s", roundTrip(ack.RoundTrip), plural(ack.Attempts, "transmission"),
		plural(ack.Datagrams, "datagram"))
	if est.SRTT > 0 {
		msg += fmt.Sprintf("; link round trip %s, loss %.1f%%", roundTrip(est.SRTT), 100*est.Loss)
	}
	return msg
}

// printStats prints an acknowledgement's stats line on standard error, with --stats or
// when standard error is a terminal.
func (a *app) printStats(s *linkSetup, stats string) {
	if s.stats || a.progress {
		fmt.Fprintf(a.stderr, "dronelink: stats: %s\n", stats)
	}
}

// ackFailure is nil for an "ok" acknowledgement and otherwise says what happened.
func ackFailure(ack link.Ack, role link.Role) error {
	switch ack.Status {
	case link.AckOK:
		return nil
	case link.AckNotPermitted:
		return failf(ExitNotExecuted, "command refused: user role may not command (%s)", role)
	case link.AckFailed:
		if len(ack.Payload) > 0 {
			return failf(ExitNotExecuted, "command failed on the drone: %s", render(ack.Payload))
		}
		return failf(ExitNotExecuted, "command failed on the drone")
	case link.AckNotLoggedIn:
		return failf(ExitNotExecuted, "command not executed: the drone had no login for this session")
	case link.AckBusy:
		return failf(ExitNotExecuted, "command not executed: the drone is busy, try again")
	case link.AckLate:
		return failf(ExitNotExecuted, "command not executed: it reached the drone after its deadline (the link delayed or held it back); it will not run")
	case link.AckSuperseded:
		return failf(ExitNotExecuted, "command not executed: a command you issued after it already ran (use --independent for commands whose order does not matter); it will not run")
	case link.AckRestarted:
		return failf(ExitNoAnswer, "outcome unknown: the drone restarted after this command was issued and will not run it now, but it may have run before the restart; check the vehicle before sending it again")
	}
	return failf(ExitNotExecuted, "command not executed: acknowledgement status %s", ack.Status)
}
