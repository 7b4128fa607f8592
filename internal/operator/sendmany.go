package operator

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dronelink/dronelink/pkg/link"
)

// sendManyHelp documents send without MESSAGE arguments in its --help.
const sendManyHelp = `Without MESSAGE arguments, send reads the commands from standard input, one per line, and
sends them all over one session (one handshake, one login): each in turn, waiting for its
acknowledgement before the next, so they run in the order given. Blank lines and lines
starting with # are skipped. Each acknowledgement is printed as above, one line per
command. The first command not acknowledged "ok" stops the run: the commands after it
are not sent, and the exit status is that command's (0 only if every command was
acknowledged "ok"; the error line names the input line). --timeout applies to the login
and to each command on its own; between commands the session is kept alive.

When standard input and output are a terminal, send is interactive instead: a prompt
(the drone's profile name, or its address), line editing and history (arrow keys,
Ctrl-A/E/K/U/W). Each command is sent when Enter is pressed and its acknowledgement
printed; a failure is printed and the session goes on. Ctrl-C while waiting for an
acknowledgement stops waiting (the command may still run until its deadline, unless a
later command runs first); Ctrl-C or Ctrl-D at the prompt, or "exit" or "quit", ends the
session. The exit status is 0 if every command was acknowledged "ok", else the first
failure's.`

// commandLine is one command read from standard input, with its line number.
type commandLine struct {
	n    int
	text []byte
	err  error // io.EOF at the end of the input
}

// commandReader reads commands one per line, skipping blank lines and # comments. A line
// longer than a command can be is an error, read no further than needed to notice.
type commandReader struct {
	r *bufio.Reader
	n int
}

func newCommandReader(r io.Reader) *commandReader {
	return &commandReader{r: bufio.NewReaderSize(r, link.MaxCommandPayload+64)}
}

// next returns the next command, or an error: io.EOF at the end, a usage error for a line
// that is too long.
func (c *commandReader) next() commandLine {
	for {
		line, err := c.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			c.n++
			n := c.n
			// Skip the rest of the line, so nothing of it is taken for a command.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = c.r.ReadSlice('\n')
			}
			return commandLine{n: n, err: usagef("line %d: command too long: more than %d bytes", n, link.MaxCommandPayload)}
		}
		if len(line) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return commandLine{err: io.EOF}
			}
			return commandLine{err: localf("cannot read commands from standard input: %v", err)}
		}
		c.n++
		text := bytes.TrimSpace(line)
		switch {
		case len(text) == 0 || text[0] == '#':
			continue
		case len(text) > link.MaxCommandPayload:
			return commandLine{n: c.n, err: usagef("line %d: command too long: %d bytes, at most %d", c.n, len(text), link.MaxCommandPayload)}
		}
		return commandLine{n: c.n, text: bytes.Clone(text)}
	}
}

// sendMany is send without MESSAGE arguments: commands from standard input over one
// session, interactively on a terminal.
func (a *app) sendMany(ctx context.Context, f *linkFlags, opts link.CommandOptions) error {
	setup, err := a.prepare(f)
	if err != nil {
		return err
	}
	defer setup.wipe()
	if a.stdinTerminal >= 0 && a.stdoutTerminal {
		return a.sendInteractive(ctx, setup, opts)
	}
	return a.sendScript(ctx, setup, opts)
}

// sendScript sends the commands read from standard input, each after the previous one's
// acknowledgement, over one session; it stops at the first that fails.
func (a *app) sendScript(ctx context.Context, s *linkSetup, opts link.CommandOptions) error {
	ctx, stopSignals := a.signalContext(ctx)
	defer stopSignals()
	cmds := newCommandReader(a.stdin)
	first := cmds.next()
	switch {
	case errors.Is(first.err, io.EOF):
		return usagef("no message: give the command text after the flags, or commands one per line on standard input")
	case first.err != nil:
		return first.err
	}

	deadline := time.Now().Add(s.timeout)
	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	prog := a.newProgress(deadline)
	defer prog.clear()
	sess, err := a.dial(dialCtx, s, prog, dialOptions{})
	if err != nil {
		return err
	}
	defer sess.client.Close()

	// Standard input is read on its own goroutine, so that the session's end or an
	// interruption is noticed while waiting for the next line.
	lines := make(chan commandLine)
	readerDone := make(chan struct{})
	defer close(readerDone)
	go func() {
		for {
			c := cmds.next()
			select {
			case lines <- c:
			case <-readerDone:
				return
			}
			if c.err != nil {
				return
			}
		}
	}()

	for c := first; ; {
		line, stats, err := a.sendOne(ctx, sess, s, c.text, opts, prog)
		if line != "" {
			if _, werr := fmt.Fprintln(a.stdout, line); werr != nil {
				return localf("cannot print the acknowledgement: %v", werr)
			}
			a.printStats(s, stats)
		}
		if err != nil {
			return atLine(c.n, err)
		}
		select {
		case c = <-lines:
		case <-sess.client.Done():
			return a.linkFailure(ctx, sess.client.Err(), sess.state, s, "")
		case <-ctx.Done():
			return failf(ExitNoAnswer, "interrupted: the commands after line %d were not sent", c.n)
		}
		switch {
		case errors.Is(c.err, io.EOF):
			return nil
		case c.err != nil:
			return c.err
		}
	}
}

// sendOne sends one command on the session and waits, at most the setup's timeout, for
// its acknowledgement. It returns the line to print ("ack STATUS: payload", empty if no
// acknowledgement came), how the acknowledgement came (ackStats) and the failure (nil for
// "ok").
func (a *app) sendOne(ctx context.Context, sess *session, s *linkSetup, message []byte, opts link.CommandOptions, prog *progress) (line, stats string, err error) {
	deadline := time.Now().Add(s.timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	prog.setDeadline(deadline)
	defer prog.setDeadline(time.Time{})
	ack, err := sess.client.CommandWith(ctx, message, opts)
	prog.clear()
	if err != nil {
		return "", "", a.linkFailure(ctx, err, sess.state, s, "acknowledgement")
	}
	return ackLine(ack), ackStats(ack, sess.client.Estimate()), ackFailure(ack, sess.client.Role())
}

// atLine prefixes a command's failure with its input line, keeping its exit code.
func atLine(n int, err error) error {
	code, msg := ExitLocal, err.Error()
	if ee, ok := errors.AsType[*exitError](err); ok {
		code = ee.code
	}
	return failf(code, "line %d: %s", n, msg)
}
