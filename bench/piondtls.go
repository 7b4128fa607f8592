package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
)

// pionOptions configures both ends of pion/dtls for DTLS 1.2 with a PSK and
// TLS_PSK_WITH_AES_128_GCM_SHA256: the standards-based setup dronelink is measured against.
func pionOptions(psk []byte) []dtls.Option {
	return []dtls.Option{
		dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
		dtls.WithPSKIdentityHint([]byte("dronelink-bench")),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
	}
}

func serverOptions(opts []dtls.Option) []dtls.ServerOption {
	out := make([]dtls.ServerOption, len(opts))
	for i, o := range opts {
		out[i] = o
	}
	return out
}

func clientOptions(opts []dtls.Option) []dtls.ClientOption {
	out := make([]dtls.ClientOption, len(opts))
	for i, o := range opts {
		out[i] = o
	}
	return out
}

// wireCounter counts the datagrams and bytes written through a PacketConn whose first byte
// is marked (DTLS content type application_data = 23), to measure the per-datagram overhead.
type wireCounter struct {
	net.PacketConn
	mark      byte
	datagrams atomic.Uint64
	bytes     atomic.Uint64
}

func (c *wireCounter) WriteTo(b []byte, addr net.Addr) (int, error) {
	if len(b) > 0 && b[0] == c.mark {
		c.datagrams.Add(1)
		c.bytes.Add(uint64(len(b)))
	}
	return c.PacketConn.WriteTo(b, addr)
}

// overhead is the mean wire bytes per counted datagram minus payload.
func (c *wireCounter) overhead(payload int) int {
	n := c.datagrams.Load()
	if n == 0 {
		return 0
	}
	return int((c.bytes.Load()+n/2)/n) - payload
}

// dtlsApplicationData is the DTLS record content type of application data.
const dtlsApplicationData = 23

// pionPair sets up a DTLS-PSK connection between two loopback UDP sockets and returns
// (client, server). Each side reads its own socket directly (no listener demultiplexer).
func pionPair(ctx context.Context, psk []byte, clientConn *wireCounter) (*dtls.Conn, *dtls.Conn, error) {
	serverUDP, err := listenLoopback()
	if err != nil {
		return nil, nil, err
	}
	opts := pionOptions(psk)
	type accepted struct {
		conn *dtls.Conn
		err  error
	}
	ch := make(chan accepted, 1)
	go func() {
		s, err := dtls.ServerWithOptions(serverUDP, clientConn.LocalAddr(), serverOptions(opts)...)
		if err == nil {
			if err = s.HandshakeContext(ctx); err != nil {
				s.Close()
			}
		} else {
			serverUDP.Close()
		}
		ch <- accepted{s, err}
	}()
	c, err := dtls.ClientWithOptions(clientConn, serverUDP.LocalAddr(), clientOptions(opts)...)
	if err == nil {
		if err = c.HandshakeContext(ctx); err != nil {
			c.Close()
		}
	} else {
		clientConn.Close()
	}
	a := <-ch
	if err != nil || a.err != nil {
		if err == nil {
			c.Close()
		}
		if a.err == nil {
			a.conn.Close()
		}
		return nil, nil, errors.Join(err, a.err)
	}
	return c, a.conn, nil
}

// runPionDTLS sends one way from a pion/dtls v3 client to its server: one record per Write,
// one datagram per record, with replay protection on (pion's default window).
func runPionDTLS(ctx context.Context, _ *env, size int, d time.Duration) (result, error) {
	psk := make([]byte, 32)
	rand.Read(psk)
	udp, err := listenLoopback()
	if err != nil {
		return result{}, err
	}
	wc := &wireCounter{PacketConn: udp, mark: dtlsApplicationData}
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client, server, err := pionPair(hctx, psk, wc)
	if err != nil {
		return result{}, err
	}
	defer client.Close()
	var received atomic.Uint64
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			if _, err := server.Read(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return
			}
			received.Add(1)
		}
	})
	payload := make([]byte, size)
	sent, elapsed := drive(d, func() bool {
		_, err := client.Write(payload)
		return err == nil
	}, &received)
	server.Close()
	wg.Wait()
	return result{name: "pion-dtls", size: size, sent: sent, received: received.Load(), elapsed: elapsed,
		overhead: wc.overhead(size)}, nil
}

// handshakeResult is one handshake-rate figure.
type handshakeResult struct {
	name     string
	n        int
	wall     time.Duration
	cpu      time.Duration // process CPU time (0: unknown)
	cpuKnown bool
	note     string
}

func (r handshakeResult) line() string {
	s := fmt.Sprintf("handshake %s n=%d hs/s=%.0f", r.name, r.n, float64(r.n)/r.wall.Seconds())
	if r.cpuKnown && r.cpu > 0 {
		s += fmt.Sprintf(" hs/cpu-s=%.0f", float64(r.n)/r.cpu.Seconds())
	}
	if r.note != "" {
		s += " # " + r.note
	}
	return s
}

// runPionHandshakes completes full pion/dtls PSK handshakes (client and server in this
// process, over loopback, fresh sockets each time) one after another for d.
func runPionHandshakes(ctx context.Context, d time.Duration) (handshakeResult, error) {
	psk := make([]byte, 32)
	rand.Read(psk)
	cpu0, cpuKnown := processCPU()
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		udp, err := listenLoopback()
		if err != nil {
			return handshakeResult{}, err
		}
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, s, err := pionPair(hctx, psk, &wireCounter{PacketConn: udp})
		cancel()
		if err != nil {
			return handshakeResult{}, err
		}
		c.Close()
		s.Close()
		n++
	}
	wall := time.Since(start)
	cpu1, _ := processCPU()
	return handshakeResult{name: "pion-dtls-psk", n: n, wall: wall, cpu: cpu1 - cpu0, cpuKnown: cpuKnown,
		note: "full client+server handshake, sequential, loopback"}, nil
}
