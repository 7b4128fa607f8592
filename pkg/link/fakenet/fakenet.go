package fakenet

import (
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

// DefaultQueueLen is the per-socket receive queue length used when Config.QueueLen is 0.
const DefaultQueueLen = 1024

// DefaultReorderTimeout is how long a reordered datagram is held at most when
// Config.ReorderTimeout is 0.
const DefaultReorderTimeout = 5 * time.Millisecond

// Ephemeral port range used when Listen is given port 0.
const (
	firstEphemeralPort = 49152
	lastEphemeralPort  = 65535
)

var (
	// ErrAddrInUse is returned (wrapped) by Listen when the address is already bound.
	ErrAddrInUse = errors.New("fakenet: address already in use")
	// ErrNoListener is returned (wrapped) by Inject when nobody listens on the destination.
	ErrNoListener = errors.New("fakenet: no listener at destination")
	// ErrQueueFull is returned (wrapped) by Inject when the destination's receive queue is full.
	ErrQueueFull = errors.New("fakenet: receive queue full")
)

// Config sets the impairments of a Network. The zero value is a perfect, instant network.
type Config struct {
	// Seed seeds the PCG generator that decides every datagram's fate: the same seed and
	// the same order of sends give the same decisions.
	Seed uint64
	// Loss is the probability, in [0,1], that a datagram is dropped.
	Loss float64
	// Reorder is the probability, in [0,1], that a datagram (each copy of a duplicated
	// one separately) is held back at delivery time and released right after the next
	// datagram on the same (from, to) path is delivered, or after ReorderTimeout.
	Reorder float64
	// Duplicate is the probability, in [0,1], that a datagram is delivered twice.
	Duplicate float64
	// Corrupt is the probability, in [0,1], that one uniformly chosen bit of a non-empty
	// datagram is flipped (both copies of a duplicated datagram carry the same flip).
	Corrupt float64
	// Delay is the fixed one-way latency; 0 delivers synchronously inside WriteTo.
	Delay time.Duration
	// Jitter adds a uniformly random extra latency in [0, Jitter) to each copy.
	Jitter time.Duration
	// ReorderTimeout bounds how long a reordered datagram is held when no later datagram
	// follows on its path; 0 means DefaultReorderTimeout.
	ReorderTimeout time.Duration
	// QueueLen is the receive queue length of sockets created by later Listen calls;
	// 0 means DefaultQueueLen. A datagram arriving at a full queue is dropped (QueueFull).
	QueueLen int
}

// Validate reports whether c is usable: probabilities in [0,1] and no negative durations
// or queue length.
func (c Config) Validate() error {
	probs := []struct {
		name string
		v    float64
	}{{"Loss", c.Loss}, {"Reorder", c.Reorder}, {"Duplicate", c.Duplicate}, {"Corrupt", c.Corrupt}}
	for _, p := range probs {
		if math.IsNaN(p.v) || p.v < 0 || p.v > 1 {
			return fmt.Errorf("fakenet: %s = %v, want a probability in [0,1]", p.name, p.v)
		}
	}
	durs := []struct {
		name string
		v    time.Duration
	}{{"Delay", c.Delay}, {"Jitter", c.Jitter}, {"ReorderTimeout", c.ReorderTimeout}}
	for _, d := range durs {
		if d.v < 0 {
			return fmt.Errorf("fakenet: %s = %v, want >= 0", d.name, d.v)
		}
	}
	if c.QueueLen < 0 {
		return fmt.Errorf("fakenet: QueueLen = %d, want >= 0", c.QueueLen)
	}
	return nil
}

// Datagram is one datagram as seen by an Intercept hook or given to Inject.
type Datagram struct {
	From, To netip.AddrPort
	Payload  []byte
}

// Stats counts what a Network did. Each copy of a duplicated datagram counts once in
// Delivered, QueueFull or NoListener.
type Stats struct {
	Sent       uint64 // datagrams accepted by Conn.WriteTo
	Injected   uint64 // datagrams given to Inject
	Delivered  uint64 // datagrams placed in a receive queue
	Dropped    uint64 // datagrams dropped by Loss
	Duplicated uint64 // datagrams duplicated by Duplicate
	Reordered  uint64 // datagram copies held back by Reorder
	Corrupted  uint64 // datagrams with a bit flipped by Corrupt
	QueueFull  uint64 // datagram copies dropped because the receive queue was full
	NoListener uint64 // datagram copies dropped because nobody listened on the destination
}

// packet is a datagram in flight.
type packet struct {
	from, to netip.AddrPort
	payload  []byte
}

type pathKey struct{ from, to netip.AddrPort }

// heldPkt is a datagram held back for reordering.
type heldPkt struct {
	pkt      packet
	released bool
}

// event is a scheduled delivery (held == nil) or a reorder timeout (held != nil).
type event struct {
	at      time.Time
	seq     uint64
	pkt     packet
	reorder bool
	held    *heldPkt
}

type eventHeap []event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = event{}
	*h = old[:len(old)-1]
	return e
}

// Network is an in-memory datagram network. It is safe for concurrent use.
type Network struct {
	mu       sync.Mutex
	cfg      Config
	pcg      *rand.PCG
	rng      *rand.Rand
	conns    map[netip.AddrPort]*Conn
	nextPort uint16
	hook     func(Datagram) []Datagram
	stats    Stats
	held     map[pathKey][]*heldPkt
	closed   bool
	done     chan struct{}

	// scheduler
	events  eventHeap
	seq     uint64
	running bool
	wake    chan struct{}
	wg      sync.WaitGroup
}

func seedPCG(seed uint64) (uint64, uint64) { return seed, seed ^ 0x9e3779b97f4a7c15 }

// New returns a Network with impairments cfg, or an error if cfg is invalid.
func New(cfg Config) (*Network, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pcg := rand.NewPCG(seedPCG(cfg.Seed))
	return &Network{
		cfg:      cfg,
		pcg:      pcg,
		rng:      rand.New(pcg),
		conns:    make(map[netip.AddrPort]*Conn),
		nextPort: firstEphemeralPort,
		held:     make(map[pathKey][]*heldPkt),
		done:     make(chan struct{}),
		wake:     make(chan struct{}, 1),
	}, nil
}

// Config returns the impairments in force.
func (n *Network) Config() Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg
}

// SetConfig replaces the impairments for datagrams sent from now on; datagrams already in
// flight keep their fate. The generator is re-seeded only if cfg.Seed differs from the
// current seed, so toggling impairments keeps one deterministic stream. QueueLen applies to
// sockets created afterwards.
func (n *Network) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return net.ErrClosed
	}
	if cfg.Seed != n.cfg.Seed {
		n.pcg.Seed(seedPCG(cfg.Seed))
	}
	n.cfg = cfg
	return nil
}

// Listen binds a socket to addr, which needs a valid IP (IPv4 and IPv6 are distinct; no
// wildcard matching: a datagram reaches the socket only if sent to exactly its address).
// Port 0 allocates a free port in 49152-65535 on that IP. Listen fails with ErrAddrInUse if
// addr is bound, and with net.ErrClosed after Close.
func (n *Network) Listen(addr netip.AddrPort) (*Conn, error) {
	if !addr.Addr().IsValid() {
		return nil, fmt.Errorf("fakenet: listen %v: invalid address", addr)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("fakenet: listen %v: %w", addr, net.ErrClosed)
	}
	if addr.Port() == 0 {
		found := false
		for range lastEphemeralPort - firstEphemeralPort + 1 {
			p := n.nextPort
			if n.nextPort == lastEphemeralPort {
				n.nextPort = firstEphemeralPort
			} else {
				n.nextPort++
			}
			if _, used := n.conns[netip.AddrPortFrom(addr.Addr(), p)]; !used {
				addr = netip.AddrPortFrom(addr.Addr(), p)
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("fakenet: listen %v: no free port", addr)
		}
	} else if _, used := n.conns[addr]; used {
		return nil, fmt.Errorf("fakenet: listen %v: %w", addr, ErrAddrInUse)
	}
	ql := n.cfg.QueueLen
	if ql == 0 {
		ql = DefaultQueueLen
	}
	c := &Conn{
		net:  n,
		addr: addr,
		q:    make(chan packet, ql),
		done: make(chan struct{}),
		rdl:  deadline{cancel: make(chan struct{})},
	}
	n.conns[addr] = c
	return c, nil
}

// Intercept installs hook as a man-in-the-middle on every datagram sent by Conn.WriteTo,
// before impairments. The hook gets the datagram (its Payload is the network's own copy
// and may be modified in place) and returns the datagrams to send instead: none drops it,
// and it may modify, duplicate, or redirect by returning Datagrams with other From/To. The
// network owns the returned payloads. The hook runs on the writer's goroutine without
// locks held, possibly concurrently for concurrent writers; it may call Inject, Stats or
// SetConfig. Datagrams from Inject are not intercepted. A nil hook removes it.
func (n *Network) Intercept(hook func(d Datagram) []Datagram) {
	n.mu.Lock()
	n.hook = hook
	n.mu.Unlock()
}

// Inject delivers a copy of d immediately, as if sent from d.From, bypassing the intercept
// hook and all impairments (for forged or replayed datagrams in tests). Unlike WriteTo it
// reports a failed delivery: ErrNoListener or ErrQueueFull (wrapped), or net.ErrClosed
// after Close.
func (n *Network) Inject(d Datagram) error {
	if !d.To.IsValid() {
		return fmt.Errorf("fakenet: inject to %v: invalid address", d.To)
	}
	p := packet{from: d.From, to: d.To, payload: bytes.Clone(d.Payload)}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return fmt.Errorf("fakenet: inject to %v: %w", d.To, net.ErrClosed)
	}
	n.stats.Injected++
	if err := n.enqueueLocked(p); err != nil {
		return fmt.Errorf("fakenet: inject to %v: %w", d.To, err)
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// Close closes every socket, discards datagrams in flight, stops the scheduler goroutine
// and waits for it. It is safe to call more than once.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	close(n.done)
	for _, c := range n.conns {
		c.closeLocked()
	}
	n.conns = nil
	n.held = nil
	n.events = nil
	n.mu.Unlock()
	n.wg.Wait()
	return nil
}

// send is Conn.WriteTo after its checks; p.payload is already a private copy.
func (n *Network) send(c *Conn, p packet) error {
	n.mu.Lock()
	if c.closed {
		n.mu.Unlock()
		return net.ErrClosed
	}
	n.stats.Sent++
	hook := n.hook
	if hook == nil {
		n.impairLocked(p, time.Now())
		n.mu.Unlock()
		return nil
	}
	n.mu.Unlock()

	out := hook(Datagram{From: p.from, To: p.to, Payload: p.payload})
	if len(out) == 0 {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	now := time.Now()
	for _, d := range out {
		n.impairLocked(packet{from: d.From, to: d.To, payload: d.Payload}, now)
	}
	return nil
}

// impairLocked decides p's fate and delivers or schedules its copies.
func (n *Network) impairLocked(p packet, now time.Time) {
	cfg := &n.cfg
	if cfg.Loss > 0 && n.rng.Float64() < cfg.Loss {
		n.stats.Dropped++
		return
	}
	if cfg.Corrupt > 0 && len(p.payload) > 0 && n.rng.Float64() < cfg.Corrupt {
		b := bytes.Clone(p.payload) // the payload may be shared by hook-made duplicates
		bit := n.rng.IntN(len(b) * 8)
		b[bit/8] ^= 1 << (bit % 8)
		p.payload = b
		n.stats.Corrupted++
	}
	copies := 1
	if cfg.Duplicate > 0 && n.rng.Float64() < cfg.Duplicate {
		copies = 2
		n.stats.Duplicated++
	}
	for range copies {
		reorder := cfg.Reorder > 0 && n.rng.Float64() < cfg.Reorder
		d := cfg.Delay
		if cfg.Jitter > 0 {
			d += time.Duration(n.rng.Int64N(int64(cfg.Jitter)))
		}
		if d == 0 {
			n.deliverLocked(p, reorder, now)
		} else {
			n.scheduleLocked(event{at: now.Add(d), pkt: p, reorder: reorder})
		}
	}
}

// deliverLocked delivers p at the end of its latency: it holds it back if reorder is set,
// otherwise enqueues it and then releases whatever was held on its path.
func (n *Network) deliverLocked(p packet, reorder bool, now time.Time) {
	path := pathKey{p.from, p.to}
	if reorder {
		n.stats.Reordered++
		h := &heldPkt{pkt: p}
		n.held[path] = append(n.held[path], h)
		timeout := n.cfg.ReorderTimeout
		if timeout == 0 {
			timeout = DefaultReorderTimeout
		}
		n.scheduleLocked(event{at: now.Add(timeout), held: h})
		return
	}
	_ = n.enqueueLocked(p)
	if hs := n.held[path]; len(hs) > 0 {
		delete(n.held, path)
		for _, h := range hs {
			h.released = true
			_ = n.enqueueLocked(h.pkt)
		}
	}
}

// releaseLocked handles a reorder timeout: it delivers h if still held.
func (n *Network) releaseLocked(h *heldPkt) {
	if h.released {
		return
	}
	h.released = true
	path := pathKey{h.pkt.from, h.pkt.to}
	hs := n.held[path]
	for i, x := range hs {
		if x == h {
			hs = append(hs[:i], hs[i+1:]...)
			break
		}
	}
	if len(hs) == 0 {
		delete(n.held, path)
	} else {
		n.held[path] = hs
	}
	_ = n.enqueueLocked(h.pkt)
}

// enqueueLocked puts p in its destination's receive queue without blocking.
func (n *Network) enqueueLocked(p packet) error {
	c := n.conns[p.to] // closed sockets are removed from the map
	if c == nil {
		n.stats.NoListener++
		return ErrNoListener
	}
	select {
	case c.q <- p:
		n.stats.Delivered++
		return nil
	default:
		n.stats.QueueFull++
		return ErrQueueFull
	}
}

// scheduleLocked adds e to the scheduler, starting its goroutine if none runs.
func (n *Network) scheduleLocked(e event) {
	n.seq++
	e.seq = n.seq
	heap.Push(&n.events, e)
	if !n.running {
		n.running = true
		n.wg.Add(1)
		go n.run()
		return
	}
	if n.events[0].seq == e.seq { // new earliest event: let the scheduler re-arm its timer
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
}

// run is the scheduler goroutine; it exits when no events are pending or on Close.
func (n *Network) run() {
	defer n.wg.Done()
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		n.mu.Lock()
		if n.closed {
			n.running = false
			n.mu.Unlock()
			return
		}
		now := time.Now()
		for len(n.events) > 0 && !n.events[0].at.After(now) {
			e := heap.Pop(&n.events).(event)
			if e.held != nil {
				n.releaseLocked(e.held)
			} else {
				n.deliverLocked(e.pkt, e.reorder, now)
			}
		}
		if len(n.events) == 0 {
			n.running = false
			n.mu.Unlock()
			return
		}
		wait := n.events[0].at.Sub(now)
		n.mu.Unlock()
		if t == nil {
			t = time.NewTimer(wait)
		} else {
			t.Reset(wait)
		}
		select {
		case <-t.C:
		case <-n.wake:
		case <-n.done:
		}
	}
}
