package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// The framing guard. nats.go (v1.55.0) trusts the sizes a NATS server announces: a line
// "MSG subject sid 9000000000000000000" makes its parser call make([]byte, n, size) in its
// read goroutine (parser.go, the split-message path), which panics ("makeslice: cap out of
// range") and takes the whole process down; a size of a few GB is a fatal out of memory
// instead. A control line cut by the read buffer is also collected without a bound
// (parser.go, "FIXME, check max len"). The NATS server is not trusted (package doc), and on
// nats:// anyone on the path can write to the client's TCP stream.
//
// guardConn sits between the TCP connection and nats.go (installed by the dialer of every
// connection both ends make, guardDialer) and reads the server's stream as nats.go will,
// before nats.go sees it: control lines up to '\n', and after a MSG or HMSG line exactly the
// announced payload and its CRLF. A line longer than MaxControlLine, a MSG or HMSG line whose
// sizes are malformed or over MaxMessageSize, a payload not followed by CRLF, or a line
// nats.go would not know, fails the connection: guardConn closes the TCP connection and
// Read returns ErrProtocol, which nats.go takes as a lost connection (it reconnects). The
// drop is counted (DropProtocol) and logged.
//
// Where the guard is stricter than nats.go it is on purpose: wherever the two could read a
// stream differently (a payload followed by something else than CRLF, a '\r' inside a MSG
// line, a verb followed by nothing but blanks, after which nats.go goes on reading its
// arguments on the next line), a hostile server could make the guard skip as payload what
// nats.go parses as a line. Such streams are refused; nats-server never writes them.
//
// Residual risk, TLS: once a connection is upgraded to TLS (tls:// URLs, or a server whose
// first INFO says "tls_required":true), nats.go wraps this same connection in TLS and the
// guard sees only ciphertext; it then passes everything through (passthrough). A hostile
// server that holds a certificate the client accepts can still crash the client through
// nats.go's unchecked sizes. TLS keeps out the attackers on the path, not the relay's
// operator; only a fixed nats.go (or a guard above TLS, which nats.go offers no hook for)
// closes that.

// Bounds of the guard.
const (
	// MaxControlLine bounds a line of the server (everything up to '\n' outside a payload).
	// The longest lines a legitimate server sends are INFO lines: a large cluster lists
	// every server's client URL in connect_urls (and ws_connect_urls), some 30 to 60 bytes
	// each, and adds nonce, xkey, client_ip and the like: a few KiB for dozens of servers,
	// and 64 KiB leaves room for a thousand. MSG lines are bounded by the server's own
	// max_control_line (4 KiB by default) for the publisher's subjects. The guard keeps at
	// most this much per connection, in one buffer it reuses.
	MaxControlLine = 64 << 10
	// MaxMessageSize bounds the size a MSG or HMSG line announces (for HMSG the total,
	// headers included). The relay carries datagrams of at most link.MaxDatagramSize = 1200
	// bytes, plus NATS headers on status messages (503 no responders: 16 bytes), and drops
	// anything larger itself (DropOversize). The bound is nevertheless nats-server's default
	// max_payload (1 MiB, which counts headers too), not a few KiB: any NATS user allowed to
	// publish on a drone's uplink can send messages up to the server's max_payload, and a
	// message over the guard's bound ends the connection, so a smaller bound would let such a
	// user cut the drone off the relay at will on a server with the default configuration
	// (the shipped docs/relay/nats-server.conf sets max_payload: 4KB). What nats.go may then
	// allocate for one message, 1 MiB, is harmless.
	MaxMessageSize = 1 << 20
)

// ErrProtocol is wrapped by the read error of a connection whose server sent a stream the
// framing guard refuses.
var ErrProtocol = errors.New("the NATS server broke the protocol")

// guardState is where the guard is in the server's stream.
type guardState uint8

const (
	guardLine    guardState = iota // in a control line
	guardPayload                   // in a message's payload: skip bytes left
	guardCR                        // after a payload: '\r' expected
	guardLF                        // then '\n'
	guardPass                      // TLS: everything passes (ciphertext)
	guardFailed                    // the stream was refused: err
)

// guard is the framing guard's parser, fed the server's bytes in order, in any chunks.
type guard struct {
	state guardState
	// line holds the current control line (without its '\n'), at most MaxControlLine
	// bytes; reused from line to line.
	line []byte
	// skip is the number of payload bytes left to skip.
	skip int
	// seenFirst: the first line (the INFO nats.go reads before anything else) is behind.
	seenFirst bool
	// secure: nats.go upgrades the connection to TLS after the first INFO whatever it says
	// (Options.Secure: a tls:// URL).
	secure bool
	err    error
}

// feed checks p, the next bytes of the stream. Once it has returned an error it returns
// the same error for every later call.
func (g *guard) feed(p []byte) error {
	for len(p) > 0 {
		switch g.state {
		case guardPass:
			return nil
		case guardFailed:
			return g.err
		case guardPayload:
			n := min(g.skip, len(p))
			g.skip -= n
			p = p[n:]
			if g.skip == 0 {
				g.state = guardCR
			}
		case guardCR:
			if p[0] != '\r' {
				return g.fail("a message's payload is not followed by CRLF")
			}
			p, g.state = p[1:], guardLF
		case guardLF:
			if p[0] != '\n' {
				return g.fail("a message's payload is not followed by CRLF")
			}
			p, g.state = p[1:], guardLine
		case guardLine:
			i := bytes.IndexByte(p, '\n')
			part := p
			if i >= 0 {
				part = p[:i]
			}
			if len(g.line)+len(part) > MaxControlLine {
				return g.fail(fmt.Sprintf("a protocol line longer than %d bytes", MaxControlLine))
			}
			g.line = append(g.line, part...)
			if i < 0 {
				return nil
			}
			p = p[i+1:]
			if err := g.endLine(); err != nil {
				return err
			}
			g.line = g.line[:0]
		}
	}
	if g.state == guardFailed {
		return g.err
	}
	return nil
}

// fail refuses the stream.
func (g *guard) fail(why string) error {
	g.state = guardFailed
	g.err = fmt.Errorf("relay: %w: %s", ErrProtocol, why)
	return g.err
}

// failLine refuses the stream at the current line, quoting its start.
func (g *guard) failLine(why string) error {
	return g.fail(fmt.Sprintf("%s: %q", why, g.line[:min(len(g.line), 64)]))
}

// guardInfo is what the guard reads of the first INFO.
type guardInfo struct {
	TLSRequired bool `json:"tls_required"`
}

// endLine checks the complete control line g.line.
func (g *guard) endLine() error {
	line := g.line
	if !g.seenFirst {
		// nats.go reads the first line on its own (processExpectedInfo: a line split at its
		// first space, both parts trimmed, "INFO" required, the rest JSON unless empty), then
		// upgrades to TLS if it wants TLS (secure) or the server requires it. It fails the
		// connection on anything else, and reads nothing more from it then.
		g.seenFirst = true
		if g.secure {
			g.state = guardPass
			return nil
		}
		op, args, _ := bytes.Cut(line, []byte(" "))
		if string(bytes.TrimSpace(op)) != "INFO" {
			return g.failLine("the first line is not INFO")
		}
		if args = bytes.TrimSpace(args); len(args) == 0 {
			return nil
		}
		var info guardInfo
		// The same decoder as nats.go's (encoding/json, field names matched the same way),
		// so both read tls_required alike.
		if err := json.Unmarshal(args, &info); err != nil {
			return g.fail("the first INFO is not JSON")
		}
		if info.TLSRequired {
			g.state = guardPass
		}
		return nil
	}
	// The verbs as nats.go's parser knows them (parse, OP_START): case-insensitive, MSG,
	// HMSG, INFO and -ERR followed by a blank; PING, PONG and +OK followed by anything up to
	// '\n'. Anything else is a parse error for nats.go too.
	switch {
	case hasVerb(line, "MSG", true):
		return g.msgLine(line[3:], false)
	case hasVerb(line, "HMSG", true):
		return g.msgLine(line[4:], true)
	case hasVerb(line, "INFO", true), hasVerb(line, "-ERR", true):
		if len(bytes.TrimLeft(line[4:], " \t")) == 0 {
			// nats.go would take the next line as the arguments ('\n' as their first byte).
			return g.failLine("a protocol line without arguments")
		}
		return nil
	case hasVerb(line, "PING", false), hasVerb(line, "PONG", false), hasVerb(line, "+OK", false):
		return nil
	}
	return g.failLine("an unknown protocol line")
}

// hasVerb reports whether line starts with verb (any case), followed by a space or tab if
// blank.
func hasVerb(line []byte, verb string, blank bool) bool {
	if len(line) < len(verb) || !strings.EqualFold(string(line[:len(verb)]), verb) {
		return false
	}
	return !blank || len(line) > len(verb) && (line[len(verb)] == ' ' || line[len(verb)] == '\t')
}

// msgLine checks the arguments of a MSG line ("subject sid [reply] size") or an HMSG line
// ("subject sid [reply] hdr_size total_size"), fields separated by spaces and tabs, and
// sets the guard to skip the payload.
func (g *guard) msgLine(args []byte, hdr bool) error {
	args = bytes.TrimSuffix(args, []byte("\r"))
	if bytes.IndexByte(args, '\r') >= 0 {
		// nats.go takes a '\r' for a separator, or drops the byte before '\n' after one,
		// depending on where its read buffer ends.
		return g.failLine("a message line with a CR inside")
	}
	var fields [5][]byte
	n := 0
	for f := range bytes.FieldsFuncSeq(args, func(r rune) bool { return r == ' ' || r == '\t' }) {
		if n == len(fields) {
			return g.failLine("a message line with too many fields")
		}
		fields[n] = f
		n++
	}
	minFields := 3
	if hdr {
		minFields = 4
	}
	if n != minFields && n != minFields+1 {
		return g.failLine("a message line with a wrong number of fields")
	}
	if _, ok := parseSize(fields[1], -1); !ok {
		return g.failLine("a message line with a bad sid")
	}
	size, ok := parseSize(fields[n-1], MaxMessageSize)
	if !ok {
		return g.failLine(fmt.Sprintf("a message line with a bad size or one over %d bytes", MaxMessageSize))
	}
	if hdr {
		h, ok := parseSize(fields[n-2], size)
		if !ok || h > size {
			return g.failLine("a message line with a bad header size")
		}
	}
	g.skip = size
	g.state = guardPayload
	if size == 0 {
		g.state = guardCR
	}
	return nil
}

// parseSize parses a decimal number of at least one digit and nothing else, at most max
// (any number of digits if max < 0, and then no value).
func parseSize(d []byte, max int) (int, bool) {
	if len(d) == 0 {
		return 0, false
	}
	n := 0
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
		if max < 0 {
			continue
		}
		n = n*10 + int(c-'0')
		if n > max {
			return 0, false
		}
	}
	return n, true
}

// guardConn is a connection to a NATS server whose reads go through the guard. Its Read
// is called by one goroutine at a time (nats.go's reader, or its TLS conn above it).
type guardConn struct {
	net.Conn
	g guard
	// onFail is called once, when the guard refuses the stream.
	onFail func(error)
}

// Read reads from the connection and checks what it read; when the guard refuses the
// stream it closes the connection and returns the guard's error, now and ever after.
func (c *guardConn) Read(p []byte) (int, error) {
	if c.g.state == guardFailed {
		return 0, c.g.err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		if gerr := c.g.feed(p[:n]); gerr != nil {
			_ = c.Conn.Close()
			if c.onFail != nil {
				c.onFail(gerr)
			}
			return 0, gerr
		}
	}
	return n, err
}

// guardDialer is the nats.CustomDialer of every connection: TCP, through the guard.
type guardDialer struct {
	dialer net.Dialer
	// secure: a URL is tls://, so nats.go sets Options.Secure and upgrades every connection
	// to TLS after the server's first INFO. If connect ever gives nats.go a TLS option
	// (nats.Secure, RootCAs, ClientCert...), that sets Options.Secure too and must set this.
	// Getting it wrong one way is safe (the guard reads ciphertext and fails the
	// connection); the other (passthrough on a plaintext connection) blinds the guard, so
	// secure is only set when nats.go upgrades for sure.
	secure bool
	onFail func(error)
}

// newGuardDialer is the dialer for urls.
func newGuardDialer(urls []string, timeout time.Duration, onFail func(error)) *guardDialer {
	return &guardDialer{dialer: net.Dialer{Timeout: timeout}, secure: anyTLS(urls), onFail: onFail}
}

// anyTLS reports whether nats.go marks a connection to urls secure: a URL with the scheme
// tls (nats.go parses each URL with net/url, which lowercases the scheme).
func anyTLS(urls []string) bool {
	for _, list := range urls {
		for _, raw := range strings.Split(list, ",") {
			if u, err := url.Parse(strings.TrimSpace(raw)); err == nil && u.Scheme == "tls" {
				return true
			}
		}
	}
	return false
}

// Dial implements nats.CustomDialer.
func (d *guardDialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.dialer.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &guardConn{Conn: c, g: guard{secure: d.secure}, onFail: d.onFail}, nil
}
