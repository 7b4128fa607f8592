package operator

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Exit codes. They are part of the command-line contract: scripts branch on them.
const (
	// ExitOK: the command did what was asked (for send: the drone acknowledged "ok").
	ExitOK = 0
	// ExitLocal: a local problem: a missing or garbled file, bad input, a user database
	// problem (user exists, no such user, key in use, corrupt file).
	ExitLocal = 1
	// ExitUsage: bad flags or arguments.
	ExitUsage = 2
	// ExitRefused: the drone refused us at the handshake or login: wrong password, unknown
	// user, key not authorised for the user, operator key not authorised on the drone,
	// drone key mismatch. For pin: the drone's key is not the expected one, or was not
	// confirmed.
	ExitRefused = 3
	// ExitNotExecuted: the drone answered the command with a status other than ok
	// (not_permitted, failed, not_logged_in, busy, late, superseded).
	ExitNotExecuted = 4
	// ExitNoAnswer: no answer in time (drone down or unreachable, wrong PSK, timeout), or
	// interrupted before the answer came, or an unknown outcome (the drone restarted after
	// the command was issued).
	ExitNoAnswer = 5
	// ExitClosed: the drone closed the session (user or key revoked, drone shutting down).
	ExitClosed = 6
)

// exitCodesHelp documents the exit codes in --help texts.
const exitCodesHelp = `Exit codes:
  0  success (send: the drone acknowledged the command with status ok)
  1  local error: missing or garbled file, bad input, user database problem
  2  usage error: bad flags or arguments
  3  refused by the drone at handshake or login: wrong password, unknown user,
     key not authorised for the user, operator key not authorised on the drone,
     drone key mismatch; pin: the key's fingerprint is not the expected one
     or was not confirmed
  4  command not executed or failed: the acknowledgement's status is not ok
     (not_permitted, failed, not_logged_in, busy, late, superseded)
  5  no answer: timeout, drone unreachable, PSK mismatch, or interrupted first;
     or outcome unknown: the drone restarted after the command was issued
  6  session closed by the drone: user or key revoked, drone shutting down`

// exitError is a failure with its exit code and the one line the user sees.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// failf returns an exitError with code and a formatted message.
func failf(code int, format string, args ...any) error {
	return &exitError{code: code, msg: fmt.Sprintf(format, args...)}
}

// usagef is a usage error (exit 2); the user is pointed at the command's --help.
func usagef(format string, args ...any) error { return failf(ExitUsage, format, args...) }

// localf is a local error (exit 1).
func localf(format string, args ...any) error { return failf(ExitLocal, format, args...) }

// runError marks an error returned by a subcommand's own code, as opposed to one cobra
// returns for unparsable flags, missing required flags or unknown commands (all usage
// errors).
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// describe maps an error from command execution to an exit code and message.
func describe(err error) (code int, msg string) {
	var re *runError
	if !errors.As(err, &re) {
		return ExitUsage, err.Error() // from cobra: flags, arguments, unknown command
	}
	var ee *exitError
	if errors.As(re.err, &ee) {
		return ee.code, ee.msg
	}
	return ExitLocal, re.err.Error()
}

// oneLine makes msg safe to print as one line: runs of white space (cobra's suggestions
// come on extra lines) become one space and other control characters are escaped.
func oneLine(msg string) string {
	var b strings.Builder
	space := false
	for _, r := range strings.TrimSpace(msg) {
		if unicode.IsSpace(r) {
			space = true
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if unicode.IsControl(r) {
			fmt.Fprintf(&b, "\\x%02x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
