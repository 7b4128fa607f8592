package dtlslink

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/link"
)

// Interoperability with OpenSSL's DTLS 1.2 PSK implementation, both ways, through the
// openssl command-line tool. .ci/run installs it; without it these tests skip loudly,
// except under CI (CI set), where a missing openssl is a failure.

// opensslCiphers are OpenSSL's names for the suites of Suites ("" is OpenSSL's default
// choice).
var opensslCiphers = map[string]string{
	"":                            "ECDHE-PSK-CHACHA20-POLY1305",
	"ECDHE-PSK-CHACHA20-POLY1305": "ECDHE-PSK-CHACHA20-POLY1305",
	"PSK-CHACHA20-POLY1305":       "PSK-CHACHA20-POLY1305",
	"PSK-AES128-GCM-SHA256":       "PSK-AES128-GCM-SHA256",
	"PSK-AES128-CCM8":             "PSK-AES128-CCM8",
}

// needOpenSSL returns the openssl binary or skips (fails under CI).
func needOpenSSL(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("openssl not found (%v) and CI is set: .ci/run must install it (apt-get install openssl)", err)
	}
	t.Skipf("SKIPPED: OpenSSL interoperability not tested: openssl not found (%v); install it (apt-get install openssl) to run this test", err)
	return ""
}

// opensslProc is a running openssl s_client or s_server with its stdin open and its
// output collected.
type opensslProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
	done  chan struct{}
}

func (p *opensslProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *opensslProc) output() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.out.Bytes())
}

// waitOutput waits until the output contains want, up to timeout.
func (p *opensslProc) waitOutput(want string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if bytes.Contains(p.output(), []byte(want)) {
			return true
		}
		select {
		case <-p.done:
			return bytes.Contains(p.output(), []byte(want))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// startOpenSSL runs openssl with args; it is killed at the end of the test.
func startOpenSSL(t *testing.T, bin string, args ...string) *opensslProc {
	t.Helper()
	p := &opensslProc{done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stdin.Close()
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// openssl s_client completes a DTLS 1.2 PSK handshake with the drone for every suite, and
// a login sent from OpenSSL reaches the login check.
func TestOpenSSLClientToDrone(t *testing.T) {
	bin := needOpenSSL(t)
	d := startDrone(t, nil)
	pskHex := hex.EncodeToString(testPSK[:])
	ok := 0
	for cipher, want := range opensslCiphers {
		args := []string{"s_client", "-dtls1_2", "-psk", pskHex, "-psk_identity", "alice", "-connect", d.addr.String()}
		if cipher != "" {
			args = append(args, "-cipher", cipher)
		}
		p := startOpenSSL(t, bin, args...)
		if !p.waitOutput("Cipher is "+want, 10*time.Second) {
			t.Fatalf("openssl %s: no handshake with %s:\n%s", strings.Join(args, " "), want, p.output())
		}
		ok++
		waitFor(t, "the drone to count the handshake", func() bool { return d.counters.Handshakes[link.HandshakeOK].Load() == uint64(ok) })
		p.stdin.Close()
		p.cmd.Process.Kill()
	}
}

// With another PSK, openssl s_client gets no handshake: pion/dtls drops the wrong Finished
// without an alert, so OpenSSL retransmits until it is stopped.
func TestOpenSSLClientWrongPSK(t *testing.T) {
	bin := needOpenSSL(t)
	d := startDrone(t, func(c *ServerConfig) { c.HandshakeTimeout = 1500 * time.Millisecond })
	other := bytes.Repeat([]byte{0xab}, 32)
	p := startOpenSSL(t, bin, "s_client", "-dtls1_2", "-psk", hex.EncodeToString(other), "-psk_identity", "alice",
		"-connect", d.addr.String())
	if p.waitOutput("Cipher is", 2*time.Second) {
		t.Fatalf("handshake with a wrong PSK:\n%s", p.output())
	}
	if n := d.counters.Handshakes[link.HandshakeOK].Load(); n != 0 {
		t.Fatalf("%d handshakes counted ok", n)
	}
	waitFor(t, "the drone to give up", func() bool { return d.counters.Handshakes[link.HandshakeFailed].Load() == 1 })
}

// The dronelink client completes a handshake with openssl s_server for every suite it
// offers, and its messages are plain records to OpenSSL: the test plays the drone's part
// through s_server's standard input, answering the login and acknowledging a command.
func TestDroneLinkClientToOpenSSL(t *testing.T) {
	bin := needOpenSSL(t)
	pskHex := hex.EncodeToString(testPSK[:])
	for cipher, want := range opensslCiphers {
		t.Run(want+"_"+map[bool]string{true: "default", false: "forced"}[cipher == ""], func(t *testing.T) {
			addr := freeUDPPort(t)
			_, port, _ := net.SplitHostPort(addr)
			args := []string{"s_server", "-dtls1_2", "-nocert", "-psk", pskHex, "-accept", port}
			if cipher != "" {
				args = append(args, "-cipher", cipher)
			}
			p := startOpenSSL(t, bin, args...)
			if !p.waitOutput("ACCEPT", 5*time.Second) {
				t.Fatalf("s_server did not start:\n%s", p.output())
			}
			// s_server prints each record it receives; answer the login with its id.
			go func() {
				marker := append([]byte{5}, "alicealice secret"...)
				for !bytes.Contains(p.output(), marker) {
					select {
					case <-p.done:
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
				out := p.output()
				i := bytes.Index(out, marker)
				if i < 1+8 || out[i-9] != link.MsgLogin {
					return
				}
				p.stdin.Write(link.AppendLoginResult(nil, beUint64(out[i-8:i]), link.LoginOK, link.RolePilot))
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cfg := ClientConfig{Drone: netipMust(addr), PSK: testPSK, User: "alice", Password: []byte("alice secret")}
			c, err := Dial(ctx, cfg)
			if err != nil {
				t.Fatalf("dial openssl s_server: %v\n%s", err, p.output())
			}
			defer c.Close()
			if !p.waitOutput("CIPHER is "+want, 2*time.Second) {
				t.Fatalf("s_server did not negotiate %s:\n%s", want, p.output())
			}
			go func() {
				marker := append([]byte(nil), "set mode GUIDED"...)
				for !bytes.Contains(p.output(), marker) {
					select {
					case <-p.done:
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
				out := p.output()
				i := bytes.Index(out, marker)
				if i < link.CommandHeaderSize || out[i-link.CommandHeaderSize] != link.MsgCommand {
					return
				}
				id := out[i-link.CommandHeaderSize+1:]
				p.stdin.Write(link.AppendAck(nil, beUint64(id[:8]), link.AckOK, []byte("from openssl")))
			}()
			ack, err := c.Command(ctx, []byte("set mode GUIDED"))
			if err != nil || ack.Status != link.AckOK || string(ack.Payload) != "from openssl" {
				t.Fatalf("ack %+v, %v", ack, err)
			}
		})
	}
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, x := range b[:8] {
		v = v<<8 | uint64(x)
	}
	return v
}

func netipMust(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
