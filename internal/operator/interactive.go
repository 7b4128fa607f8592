package operator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/dronelink/dronelink/pkg/link"
)

// keyCtrlC is the byte Ctrl-C sends in raw mode (which raises no SIGINT).
const keyCtrlC = 3

// sendInteractive is send on a terminal: a prompt with line editing and history, one
// session for every command typed. The terminal is in raw mode while the prompt runs and
// restored before returning.
func (a *app) sendInteractive(ctx context.Context, s *linkSetup, opts link.CommandOptions) error {
	ctx, stopSignals := a.signalContext(ctx) // Ctrl-C raises SIGINT until raw mode, SIGTERM always
	defer stopSignals()
	var notify atomic.Pointer[func(string)]
	linkEvents := &linkNotices{drone: s.droneName, notify: &notify}
	deadline := time.Now().Add(s.timeout)
	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	prog := a.newProgress(deadline)
	sess, err := a.dial(dialCtx, s, prog, dialOptions{onEvent: linkEvents.event})
	prog.clear()
	if err != nil {
		return err
	}
	defer sess.client.Close()
	// From here on the terminal shows the prompt: no progress line on it, and the link's
	// changes are printed above the prompt instead.
	sess.prog.disable()

	fd := a.stdinTerminal
	saved, err := term.MakeRaw(fd)
	if err != nil {
		return localf("cannot set up the terminal: %v", err)
	}
	defer term.Restore(fd, saved)

	in := make(chan []byte)
	go readTerminal(a.stdin, in)
	p := newPrompt(in, a.stdout, promptFor(s))
	notice := p.notice
	notify.Store(&notice)
	defer notify.Store(nil)
	if w, h, err := term.GetSize(fd); err == nil {
		p.t.SetSize(w, h)
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	go func() {
		for range winch {
			if w, h, err := term.GetSize(fd); err == nil {
				p.t.SetSize(w, h)
			}
		}
	}()
	return a.interact(ctx, p, sess, s, opts)
}

// promptFor is the prompt: the drone's profile name, or its address.
func promptFor(s *linkSetup) string {
	if s.profileName != "" {
		return s.profileName + "> "
	}
	return s.peerName() + "> "
}

// readTerminal hands what the terminal sends to in, as it comes, until it fails. It
// outlives the prompt, blocked in a read, until the program exits.
func readTerminal(r io.Reader, in chan<- []byte) {
	defer close(in)
	for {
		buf := make([]byte, 256)
		n, err := r.Read(buf)
		if n > 0 {
			in <- buf[:n]
		}
		if err != nil {
			return
		}
	}
}

// prompt is the line editor (x/term's Terminal) over the keystrokes from in. While a
// command waits for its acknowledgement, interact reads in itself: Ctrl-C stops the wait
// and anything else is kept for the next line (type-ahead).
type prompt struct {
	t       *term.Terminal
	in      <-chan []byte
	out     io.Writer
	pending []byte
	stop    chan struct{} // closed: the next read ends the input
	once    sync.Once
}

func newPrompt(in <-chan []byte, out io.Writer, text string) *prompt {
	p := &prompt{in: in, out: out, stop: make(chan struct{})}
	p.t = term.NewTerminal(p, text)
	return p
}

// Read implements io.Reader for the Terminal: type-ahead first, then the keyboard.
func (p *prompt) Read(b []byte) (int, error) {
	if len(p.pending) == 0 {
		select {
		case chunk, ok := <-p.in:
			if !ok {
				return 0, io.EOF
			}
			p.pending = chunk
		case <-p.stop:
			return 0, io.EOF
		}
	}
	n := copy(b, p.pending)
	p.pending = p.pending[n:]
	return n, nil
}

// Write implements io.Writer for the Terminal.
func (p *prompt) Write(b []byte) (int, error) { return p.out.Write(b) }

// end makes the prompt's next read the end of the input (the session ended).
func (p *prompt) end() { p.once.Do(func() { close(p.stop) }) }

// println prints a line above the prompt.
func (p *prompt) println(line string) { _, _ = p.t.Write([]byte(line + "\n")) }

// notice prints a message about the link above the prompt; it never blocks the caller
// (the session's goroutines) for long: the Terminal only writes to the output.
func (p *prompt) notice(msg string) { p.println("dronelink: " + oneLine(msg)) }

// interact runs the prompt until the input ends, "exit" or "quit", or the session ends.
func (a *app) interact(ctx context.Context, p *prompt, sess *session, s *linkSetup, opts link.CommandOptions) error {
	go func() {
		select {
		case <-ctx.Done():
		case <-sess.client.Done():
		}
		p.end()
	}()
	defer p.end()
	var first error
	sent, failed := 0, 0
	for {
		line, err := p.t.ReadLine()
		if err != nil && !errors.Is(err, term.ErrPasteIndicator) {
			break // Ctrl-D, Ctrl-C at the prompt, the session's end
		}
		text := strings.TrimSpace(line)
		switch {
		case text == "" || strings.HasPrefix(text, "#"):
			continue
		case text == "exit" || text == "quit":
			p.println("")
			return summary(first, sent, failed)
		case len(text) > link.MaxCommandPayload:
			p.notice(fmt.Sprintf("command too long: %d bytes, at most %d; not sent", len(text), link.MaxCommandPayload))
			continue
		}
		sent++
		ack, err := a.waitCommand(ctx, p, sess, s, []byte(text), opts)
		if ack != "" {
			p.println(ack)
		}
		if err != nil {
			failed++
			_, msg := describe(&runError{err: err})
			p.notice(msg)
			if first == nil {
				first = err
			}
		}
	}
	p.println("")
	if err := sess.client.Err(); err != nil && ctx.Err() == nil {
		return a.linkFailure(ctx, err, sess.state, s, "") // the drone ended the session
	}
	return summary(first, sent, failed)
}

// waitCommand sends one command and waits for its acknowledgement; Ctrl-C stops the
// wait, and other keystrokes are kept for the prompt.
func (a *app) waitCommand(ctx context.Context, p *prompt, sess *session, s *linkSetup, message []byte, opts link.CommandOptions) (string, error) {
	cmdCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		line string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		line, stats, err := a.sendOne(cmdCtx, sess, s, message, opts, nil)
		if line != "" {
			line += " (" + stats + ")" // for the pilot at the prompt
		}
		done <- result{line, err}
	}()
	in := p.in
	for {
		select {
		case r := <-done:
			return r.line, r.err
		case chunk, ok := <-in:
			if !ok {
				in = nil // the terminal is gone: wait for the answer
				continue
			}
			if i := bytes.IndexByte(chunk, keyCtrlC); i >= 0 {
				cancel()
				chunk = append(chunk[:i:i], chunk[i+1:]...)
			}
			p.pending = append(p.pending, chunk...)
		}
	}
}

// summary is the result of an interactive session: nil if every command was acknowledged
// "ok", else the first failure's exit code with a count.
func summary(first error, sent, failed int) error {
	if first == nil {
		return nil
	}
	code, msg := describe(&runError{err: first})
	return failf(code, "%d of %d commands failed; the first: %s", failed, sent, msg)
}

// disable turns the progress line off for good.
func (p *progress) disable() {
	if p == nil {
		return
	}
	p.clear()
	p.mu.Lock()
	p.enabled = false
	p.mu.Unlock()
}

// linkNotices tells the prompt when the link is lost and back.
type linkNotices struct {
	drone  string
	notify *atomic.Pointer[func(string)]
	mu     sync.Mutex
	lost   bool
}

// event runs on the session's goroutines under its lock: it only hands a line over.
func (l *linkNotices) event(e link.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var msg string
	switch e.Kind {
	case link.EventLinkLost:
		if !l.lost {
			l.lost, msg = true, fmt.Sprintf("link to the drone at %s lost; reconnecting", l.drone)
		}
	case link.EventLinkRestored, link.EventLoggedIn:
		if l.lost {
			l.lost, msg = false, fmt.Sprintf("link to the drone at %s is back", l.drone)
		}
	}
	if f := l.notify.Load(); f != nil && msg != "" {
		go (*f)(msg) // never under the session's lock
	}
}
