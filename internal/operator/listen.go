package operator

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) newListenCmd() *cobra.Command {
	var f linkFlags
	var count int
	cmd := &cobra.Command{
		Use:   "listen [--transport native|dtls] {--drone HOST:PORT|NAME | --relay URL --drone-id NAME} --drone-pub PATH --key PATH --psk PATH --user NAME --password-file PATH [--count N]",
		Short: "Log in to a drone and print its telemetry",
		Long: `Log in to a drone (any role) and print each telemetry payload as one line (text with
control characters escaped, or "hex:..." for binary payloads), until N payloads arrived
(exit 0), until interrupted (exit 0), or until the drone closes the session (exit 6).
A lost link is re-established automatically.

` + relayHelp + `

` + transportHelp + `

` + listenExitCodes,
		Args: noArgs,
	}
	f.register(cmd, "give up when not logged in within this `DURATION`")
	cmd.Flags().IntVar(&count, "count", 0, "exit after `N` telemetry payloads (0: never)")
	cmd.RunE = a.runE(func(cmd *cobra.Command, _ []string) error {
		if count < 0 {
			return usagef("--count must not be negative")
		}
		setup, err := a.prepare(&f)
		if err != nil {
			return err
		}
		defer setup.wipe()
		return a.listen(cmd.Context(), setup, count)
	})
	return cmd
}

// listenExitCodes are the exit codes of listen (of exitCodesHelp, all but 4: listen sends
// no command).
const listenExitCodes = `Exit codes:
  0  N payloads arrived (--count N), or interrupted after the login
  1  local error: missing or garbled file, bad input, telemetry cannot be printed
  2  usage error: bad flags or arguments
  3  refused by the drone at handshake or login: wrong password, unknown user,
     key not authorised for the user, operator key not authorised on the drone,
     drone key mismatch
  5  not logged in within --timeout: no answer (drone down or unreachable, nothing
     listening there, PSK mismatch), or interrupted before the login
  6  session closed by the drone: user or key revoked, drone shutting down`

// listen logs in and prints telemetry until count payloads, ctx's end or the session's.
func (a *app) listen(ctx context.Context, s *linkSetup, count int) error {
	ctx, stopSignals := a.signalContext(ctx)
	defer stopSignals()
	deadline := time.Now().Add(s.timeout)
	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	prog := a.newProgress(deadline)
	defer prog.clear()

	// Telemetry arrives on the client's reader goroutine, possibly before Dial returns.
	var mu sync.Mutex
	received := 0
	enough := make(chan struct{})
	var writeErr error
	onTelemetry := func(payload []byte) {
		mu.Lock()
		defer mu.Unlock()
		if (count > 0 && received >= count) || writeErr != nil {
			return
		}
		prog.clear()
		if _, err := fmt.Fprintln(a.stdout, render(payload)); err != nil {
			writeErr = err
			close(enough)
			return
		}
		received++
		if received == count {
			close(enough)
		}
	}
	sess, err := a.dial(dialCtx, s, prog, dialOptions{onTelemetry: onTelemetry})
	if err != nil {
		return err
	}
	prog.setDeadline(time.Time{})
	select {
	case <-enough:
	case <-ctx.Done():
	case <-sess.client.Done():
	}
	// The session's end takes precedence over a count reached in the same instant only
	// if the count was not reached: a full count is success.
	sessionErr := sess.client.Err()
	sess.client.Close()
	mu.Lock()
	defer mu.Unlock()
	switch {
	case writeErr != nil:
		return localf("cannot print telemetry: %v", writeErr)
	case count > 0 && received >= count:
		return nil
	case ctx.Err() != nil:
		return nil // interrupted: the normal way to stop listening
	case sessionErr != nil:
		return a.linkFailure(ctx, sessionErr, sess.state, s, "")
	}
	return nil
}
