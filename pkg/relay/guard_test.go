package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
)

// chunkConn is a server's stream delivered in chunks of a given size, one per Read.
type chunkConn struct {
	net.Conn // nil: only Read and Close are used
	data     []byte
	chunk    int
	closed   bool
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.chunk)], c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *chunkConn) Close() error { c.closed = true; return nil }

// guardRead reads stream through a guardConn in chunks of chunk bytes: what nats.go would
// get, the guard's error (nil at the end of a stream it accepted), whether it closed the
// connection, and how often it reported a failure.
func guardRead(stream []byte, chunk int, secure bool) (out []byte, closed bool, fails int, err error) {
	cc := &chunkConn{data: stream, chunk: chunk}
	gc := &guardConn{Conn: cc, g: guard{secure: secure}, onFail: func(error) { fails++ }}
	buf := make([]byte, 4096)
	for {
		n, rerr := gc.Read(buf)
		out = append(out, buf[:n]...)
		if rerr == io.EOF {
			return out, cc.closed, fails, nil
		}
		if rerr != nil {
			// A failed guard keeps failing.
			if n2, again := gc.Read(buf); n2 != 0 || again != rerr {
				return out, cc.closed, fails, fmt.Errorf("read after the failure: %d, %v (first %v)", n2, again, rerr)
			}
			return out, cc.closed, fails, rerr
		}
	}
}

// chunkSizes is every chunk size from 1 to n, or for a long stream 1 to 16 and a sample.
func chunkSizes(n int) []int {
	var sizes []int
	for c := 1; c <= n; c++ {
		if n > 5000 && c > 16 {
			c += n / 50
		}
		sizes = append(sizes, min(c, n))
	}
	return sizes
}

// msg is a MSG frame carrying payload.
func msg(payload string) string { return fmt.Sprintf("MSG a 1 %d\r\n%s\r\n", len(payload), payload) }

const testInfo = `INFO {"server_id":"S","version":"2.12.0","headers":true,"max_payload":1048576}` + "\r\n"

var validStreams = []struct{ name, stream string }{
	{"info only", testInfo},
	{"info without arguments", "INFO \r\n"},
	{"ping pong ok err", testInfo + "PING\r\nPONG\r\n+OK\r\n-ERR 'Permissions Violation for Subscription to \"x\"'\r\nping\r\n"},
	{"async info", testInfo + `INFO {"connect_urls":["10.0.0.1:4222","10.0.0.2:4222"]}` + "\r\n"},
	{"msg", testInfo + "MSG dronelink.d.up 1 5\r\nhello\r\n"},
	{"msg with reply", testInfo + "MSG dronelink.d.up 1 dronelink.d.down.alice.1 5\r\nhello\r\nPING\r\n"},
	{"msg lower case, tabs, many blanks", testInfo + "msg\tdronelink.d.up \t 1\t\t5   \r\nhello\r\n"},
	{"msg without CR", testInfo + "MSG a 1 2\nhi\r\n"},
	{"empty payload", testInfo + "MSG a 1 0\r\n\r\nMSG a 1 r 0\r\n\r\n"},
	{"payload of protocol text", testInfo + msg("\r\nMSG a 1 9000000000000000000\r\nPING\r\n") + "PONG\r\n"},
	{"payload of CR LF only", testInfo + "MSG a 1 4\r\n\r\n\r\n\r\n"},
	{"hmsg no responders", testInfo + "HMSG dronelink.d.down.alice.1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"},
	{"hmsg with reply and payload", testInfo + "HMSG a 2 r 12 17\r\nNATS/1.0\r\n\r\nhello\r\nhmsg a 2 0 0\r\n\r\n"},
	{"max size", testInfo + "MSG a 1 " + fmt.Sprint(MaxMessageSize) + "\r\n" + strings.Repeat("x", MaxMessageSize) + "\r\n"},
	{"leading zeros", testInfo + "MSG a 0001 000005\r\nhello\r\n"},
	{"longest line", testInfo + "-ERR " + strings.Repeat("x", MaxControlLine-5) + "\n"},
	{"long sid", testInfo + "MSG a 99999999999999999999999 1\r\nx\r\n"},
}

// TestGuardPassesValidStreams: valid streams reach nats.go byte for byte, whatever the
// chunks they arrive in (each size from 1 to the stream's length).
func TestGuardPassesValidStreams(t *testing.T) {
	for _, tc := range validStreams {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range chunkSizes(len(tc.stream)) {
				out, closed, fails, err := guardRead([]byte(tc.stream), chunk, false)
				if err != nil || closed || fails != 0 {
					t.Fatalf("chunks of %d: %v (closed %v, %d failures)", chunk, err, closed, fails)
				}
				if !bytes.Equal(out, []byte(tc.stream)) {
					t.Fatalf("chunks of %d: the stream changed", chunk)
				}
			}
		})
	}
}

var invalidStreams = []struct{ name, stream string }{
	{"huge size", testInfo + "MSG dronelink.d.up 1 9000000000000000000\r\n" + strings.Repeat("x", 64)},
	{"size over int64", testInfo + "MSG a 1 99999999999999999999\r\nx\r\n"},
	{"size just over the bound", testInfo + "MSG a 1 " + fmt.Sprint(MaxMessageSize+1) + "\r\n"},
	{"a few GB", testInfo + "MSG a 1 r 4000000000\r\n"},
	{"negative size", testInfo + "MSG a 1 -5\r\nhello\r\n"},
	{"non-numeric size", testInfo + "MSG a 1 5x\r\nhello\r\n"},
	{"missing size", testInfo + "MSG a 1\r\n"},
	{"too many fields", testInfo + "MSG a 1 r s 5\r\nhello\r\n"},
	{"bad sid", testInfo + "MSG a x 5\r\nhello\r\n"},
	{"hmsg header over total", testInfo + "HMSG a 1 20 10\r\n0123456789\r\n"},
	{"hmsg huge total", testInfo + "HMSG a 1 r 10 9000000000000000000\r\n"},
	{"hmsg huge header", testInfo + "HMSG a 1 99999999999999999999 10\r\n"},
	{"hmsg missing sizes", testInfo + "HMSG a 1 10\r\n"},
	{"long line", testInfo + "-ERR " + strings.Repeat("x", MaxControlLine)},
	{"long line, no verb", testInfo + strings.Repeat("P", MaxControlLine+1)},
	{"long first line", "INFO " + strings.Repeat("x", MaxControlLine)},
	{"long msg line", testInfo + "MSG " + strings.Repeat("a", MaxControlLine) + " 1 5\r\n"},
	{"payload without CRLF", testInfo + "MSG a 1 5\r\nhelloXY"},
	// nats.go skips to '\n' after a payload; the guard would read "SG..." as a line.
	{"payload then LF and a line", testInfo + "MSG a 1 5\r\nhello\nMSG a 1 9000000000000000000\r\n"},
	// nats.go would read the next line as INFO's arguments, and the payload as lines.
	{"info without arguments", testInfo + "INFO \nMSG a 1 40\r\nMSG a 1 9000000000000000000\r\n0123456789\r\n"},
	{"msg without arguments", testInfo + "MSG \n"},
	{"CR inside a msg line", testInfo + "MSG a 1 5\r7\r\nhello\r\n"},
	{"unknown verb", testInfo + "HELLO\r\n"},
	{"msg without blank", testInfo + "MSGa 1 5\r\nhello\r\n"},
	{"empty line", testInfo + "\r\n"},
	{"first line not INFO", "PING\r\n"},
	{"first INFO not JSON", "INFO {\r\n"},
}

// TestGuardRefusesInvalidStreams: each fails the connection, whatever the chunks: an
// error wrapping ErrProtocol, the connection closed, one failure reported, and nothing of
// the refused line or payload passed on.
func TestGuardRefusesInvalidStreams(t *testing.T) {
	for _, tc := range invalidStreams {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range chunkSizes(len(tc.stream)) {
				_, closed, fails, err := guardRead([]byte(tc.stream), chunk, false)
				if !errors.Is(err, ErrProtocol) || !closed || fails != 1 {
					t.Fatalf("chunks of %d: %v (closed %v, %d failures)", chunk, err, closed, fails)
				}
			}
		})
	}
}

// TestGuardTLS: after the first INFO of a connection nats.go upgrades to TLS (a tls:// URL,
// or "tls_required":true), the guard passes the ciphertext through; otherwise the same bytes
// fail the connection.
func TestGuardTLS(t *testing.T) {
	cipher := "\x16\x03\x03\x00\x7a\x02MSG a 1 9000000000000000000\r\n\xff\xfe"
	for _, tc := range []struct {
		name   string
		stream string
		secure bool
		pass   bool
	}{
		{"tls url", testInfo + cipher, true, true},
		{"tls url, tls_available", `INFO {"tls_available":true}` + "\r\n" + cipher, true, true},
		{"tls_required", `INFO {"server_id":"S","tls_required":true}` + "\r\n" + cipher, false, true},
		{"tls_required, any case (as encoding/json)", `INFO {"TLS_Required":true}` + "\r\n" + cipher, false, true},
		{"tls_required false", `INFO {"tls_required":false}` + "\r\n" + cipher, false, false},
		{"tls_required as a string", `INFO {"tls_required":"true"}` + "\r\n" + cipher, false, false},
		{"tls_required in a later INFO", testInfo + `INFO {"tls_required":true}` + "\r\n" + cipher, false, false},
		{"plain", testInfo + cipher, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for chunk := 1; chunk <= len(tc.stream); chunk++ {
				out, _, _, err := guardRead([]byte(tc.stream), chunk, tc.secure)
				if tc.pass && (err != nil || !bytes.Equal(out, []byte(tc.stream))) {
					t.Fatalf("chunks of %d: %v", chunk, err)
				}
				if !tc.pass && !errors.Is(err, ErrProtocol) {
					t.Fatalf("chunks of %d: passed", chunk)
				}
			}
		})
	}
}

func TestAnyTLS(t *testing.T) {
	for _, tc := range []struct {
		urls []string
		want bool
	}{
		{[]string{"nats://a:1"}, false},
		{[]string{"nats://a:1", "tls://b:2"}, true},
		{[]string{"nats://a:1, TLS://b:2"}, true},
		{[]string{"a:4222"}, false},
		{[]string{"nats://tls:1"}, false},
	} {
		if got := anyTLS(tc.urls); got != tc.want {
			t.Errorf("anyTLS(%q) = %v", tc.urls, got)
		}
	}
}

// validFrames builds a valid stream from r's bytes: frames of every kind, payloads of any
// bytes (protocol text, CRLFs) taken from r.
func validFrames(r []byte) []byte {
	next := func() byte {
		if len(r) == 0 {
			return 0
		}
		b := r[0]
		r = r[1:]
		return b
	}
	take := func(n int) []byte {
		n = min(n, len(r))
		p := r[:n]
		r = r[n:]
		return p
	}
	var b bytes.Buffer
	b.WriteString(testInfo)
	blank := func() string { return [...]string{" ", "\t", "  ", " \t "}[next()%4] }
	verb := func(v string) string { // any case
		m := next()
		out := []byte(v)
		for i := range out {
			if m&(1<<i) != 0 {
				out[i] = bytes.ToLower(out[i : i+1])[0]
			}
		}
		return string(out)
	}
	for len(r) > 0 {
		switch next() % 8 {
		case 0:
			b.WriteString(verb("PING") + "\r\n")
		case 1:
			b.WriteString(verb("PONG") + "\r\n")
		case 2:
			b.WriteString("+OK\r\n")
		case 3:
			b.WriteString(verb("-ERR") + blank() + "'Permissions Violation'\r\n")
		case 4:
			b.WriteString(verb("INFO") + blank() + `{"connect_urls":["x:1"]}` + "\r\n")
		case 5, 6:
			p := take(int(next()))
			reply := ""
			if next()%2 == 0 {
				reply = "dronelink.d.down.a.1" + blank()
			}
			fmt.Fprintf(&b, "%s%sdronelink.d.up%s%d%s%s%d\r\n%s\r\n", verb("MSG"), blank(), blank(), next(), blank(), reply, len(p), p)
		case 7:
			h := take(int(next()))
			p := take(int(next()))
			fmt.Fprintf(&b, "%s dronelink.d.up %d %d %d\r\n%s%s\r\n", verb("HMSG"), next(), len(h), len(h)+len(p), h, p)
		}
	}
	return b.Bytes()
}

// FuzzGuard: any stream in any chunks never panics, and the guard's verdict does not depend
// on the chunks; a stream of valid frames passes byte for byte in any chunks.
func FuzzGuard(f *testing.F) {
	for _, tc := range validStreams {
		if len(tc.stream) < 5000 {
			f.Add([]byte(tc.stream), uint16(1))
		}
	}
	for _, tc := range invalidStreams {
		if len(tc.stream) < 5000 {
			f.Add([]byte(tc.stream), uint16(3))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		c := max(1, int(chunk)%(len(data)+1))
		whole, _, _, werr := guardRead(data, len(data)+1, false)
		out, closed, fails, err := guardRead(data, c, false)
		if (werr == nil) != (err == nil) {
			t.Fatalf("verdict depends on the chunks: whole %v, chunks of %d %v", werr, c, err)
		}
		if err != nil {
			if !errors.Is(err, ErrProtocol) || !closed || fails != 1 {
				t.Fatalf("failure %v (closed %v, %d failures)", err, closed, fails)
			}
		} else if !bytes.Equal(out, data) || !bytes.Equal(whole, data) {
			t.Fatal("an accepted stream changed")
		}
		_, _, _, _ = guardRead(data, c, true) // TLS mode: no panic

		valid := validFrames(data)
		out, _, _, err = guardRead(valid, c, false)
		if err != nil || !bytes.Equal(out, valid) {
			t.Fatalf("valid frames in chunks of %d: %v\n%q", c, err, valid)
		}
	})
}
