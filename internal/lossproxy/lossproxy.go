// Package lossproxy is a UDP proxy that loses, duplicates and reorders datagrams, to run
// the real programs over a bad radio link on loopback (the demo, the benchmarks' lossy
// mode, end-to-end tests). It behaves like a NAT: each client address gets its own
// upstream socket towards the target, so the target sees one peer per client.
package lossproxy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Config says how bad the link is. Probabilities apply to each direction independently.
type Config struct {
	Listen    string        // address to listen on; "127.0.0.1:0" if empty
	Target    string        // where to forward; required
	Loss      float64       // probability a datagram is dropped
	Duplicate float64       // probability a datagram is sent twice
	Reorder   float64       // probability a datagram is held back by ReorderDelay
	Delay     time.Duration // one-way latency added to every datagram
	// ReorderDelay is how long a reordered datagram is held; if zero, 5 ms.
	ReorderDelay time.Duration
	Seed         uint64 // seeds the fate of every datagram
}

// Stats counts what the proxy did, in both directions.
type Stats struct {
	Forwarded, Dropped, Duplicated, Reordered uint64
}

// Proxy is a running lossy proxy.
type Proxy struct {
	cfg    Config
	conn   *net.UDPConn
	target netip.AddrPort
	mu     sync.Mutex
	rng    *rand.Rand
	flows  map[netip.AddrPort]*net.UDPConn
	wg     sync.WaitGroup
	closed atomic.Bool

	forwarded, dropped, duplicated, reordered atomic.Uint64
	held                                      atomic.Int64  // datagrams waiting out a delay
	heldChanged                               chan struct{} // a token when held changes (tests wait on it)

	withholdMu sync.Mutex
	withhold   WithholdFunc // nil: forward everything
	withheld   []withheldDatagram
}

// WithholdFunc says whether to hold a datagram back: from is the client's address (the
// flow), toTarget the direction (client to target, or back), b the datagram.
type WithholdFunc func(from netip.AddrPort, toTarget bool, b []byte) bool

type withheldDatagram struct {
	b        []byte
	toTarget bool
	send     func([]byte)
}

// Start opens the proxy and starts forwarding.
func Start(cfg Config) (*Proxy, error) {
	for _, p := range []float64{cfg.Loss, cfg.Duplicate, cfg.Reorder} {
		if !(p >= 0 && p <= 1) {
			return nil, fmt.Errorf("lossproxy: probability %v outside [0,1]", p)
		}
	}
	if cfg.Delay < 0 || cfg.ReorderDelay < 0 {
		return nil, errors.New("lossproxy: negative delay")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.ReorderDelay == 0 {
		cfg.ReorderDelay = 5 * time.Millisecond
	}
	target, err := net.ResolveUDPAddr("udp", cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("lossproxy: target: %w", err)
	}
	laddr, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("lossproxy: listen: %w", err)
	}
	conn, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("lossproxy: %w", err)
	}
	p := &Proxy{cfg: cfg, conn: conn, target: target.AddrPort(), rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5deece66d)),
		flows: map[netip.AddrPort]*net.UDPConn{}, heldChanged: make(chan struct{}, 1)}
	p.wg.Go(p.clientLoop)
	return p, nil
}

// Addr is where clients send to.
func (p *Proxy) Addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Stats returns the counters so far.
func (p *Proxy) Stats() Stats {
	return Stats{Forwarded: p.forwarded.Load(), Dropped: p.dropped.Load(), Duplicated: p.duplicated.Load(), Reordered: p.reordered.Load()}
}

// Held is how many datagrams the proxy holds back right now (delayed or reordered): once it
// is 0, everything it accepted so far has been sent on or dropped.
func (p *Proxy) Held() int64 { return p.held.Load() }

// SetLoss changes the loss probability while running (e.g. a total outage, then recovery).
func (p *Proxy) SetLoss(loss float64) {
	p.mu.Lock()
	p.cfg.Loss = loss
	p.mu.Unlock()
}

// SetDelay changes the one-way latency added to every datagram while running (e.g. an
// attacker who holds everything back for a while).
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.cfg.Delay = d
	p.mu.Unlock()
}

// Withhold starts holding back, instead of forwarding, every datagram match selects: an
// attacker on the path who keeps copies to release later (Release). It replaces any
// earlier match; held datagrams stay held.
func (p *Proxy) Withhold(match WithholdFunc) {
	p.withholdMu.Lock()
	p.withhold = match
	p.withholdMu.Unlock()
}

// Withheld is how many datagrams are held back by Withhold.
func (p *Proxy) Withheld() int {
	p.withholdMu.Lock()
	defer p.withholdMu.Unlock()
	return len(p.withheld)
}

// Release stops withholding and sends on, in the order they came, the held datagrams that
// pick selects (all if pick is nil); the others are discarded. It returns how many it sent.
func (p *Proxy) Release(pick func(toTarget bool, b []byte) bool) int {
	p.withholdMu.Lock()
	held := p.withheld
	p.withhold, p.withheld = nil, nil
	p.withholdMu.Unlock()
	n := 0
	for _, d := range held {
		if pick == nil || pick(d.toTarget, d.b) {
			d.send(d.b)
			p.forwarded.Add(1)
			n++
		}
	}
	return n
}

// withholds holds b back if the Withhold match selects it.
func (p *Proxy) withholds(from netip.AddrPort, toTarget bool, b []byte, send func([]byte)) bool {
	p.withholdMu.Lock()
	defer p.withholdMu.Unlock()
	if p.withhold == nil || !p.withhold(from, toTarget, b) {
		return false
	}
	p.withheld = append(p.withheld, withheldDatagram{b: append([]byte(nil), b...), toTarget: toTarget, send: send})
	return true
}

// Close stops the proxy and waits for its goroutines.
func (p *Proxy) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	err := p.conn.Close()
	p.mu.Lock()
	for _, f := range p.flows {
		f.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// clientLoop reads from clients and forwards to the target through each client's flow.
func (p *Proxy) clientLoop() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		flow, err := p.flow(from)
		if err != nil {
			continue
		}
		send := func(b []byte) { flow.Write(b) }
		if !p.withholds(from, true, buf[:n], send) {
			p.impair(buf[:n], send)
		}
	}
}

// flow returns the upstream socket of a client, creating it on first use.
func (p *Proxy) flow(client netip.AddrPort) (*net.UDPConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f := p.flows[client]; f != nil {
		return f, nil
	}
	if p.closed.Load() {
		return nil, net.ErrClosed
	}
	f, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(p.target))
	if err != nil {
		return nil, err
	}
	p.flows[client] = f
	p.wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) || p.closed.Load() {
					return
				}
				continue // e.g. ICMP port unreachable while the target restarts
			}
			send := func(b []byte) { p.conn.WriteToUDPAddrPort(b, client) }
			if !p.withholds(client, false, buf[:n], send) {
				p.impair(buf[:n], send)
			}
		}
	})
	return f, nil
}

// signalHeld leaves a token in heldChanged (one is enough: a waiter re-reads Held).
func (p *Proxy) signalHeld() {
	select {
	case p.heldChanged <- struct{}{}:
	default:
	}
}

// impair decides a datagram's fate and sends its copies.
func (p *Proxy) impair(b []byte, send func([]byte)) {
	p.mu.Lock()
	lose := p.rng.Float64() < p.cfg.Loss
	dup := p.rng.Float64() < p.cfg.Duplicate
	late := p.rng.Float64() < p.cfg.Reorder
	delay := p.cfg.Delay
	p.mu.Unlock()
	if lose {
		p.dropped.Add(1)
		return
	}
	copies := 1
	if dup {
		copies = 2
		p.duplicated.Add(1)
	}
	if late {
		delay += p.cfg.ReorderDelay
		p.reordered.Add(1)
	}
	for range copies {
		p.forwarded.Add(1)
		if delay == 0 {
			send(b)
			continue
		}
		c := append([]byte(nil), b...)
		p.wg.Add(1)
		p.held.Add(1)
		p.signalHeld()
		time.AfterFunc(delay, func() {
			defer p.wg.Done()
			defer p.signalHeld()
			defer p.held.Add(-1)
			if !p.closed.Load() {
				send(c)
			}
		})
	}
}
