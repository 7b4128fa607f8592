package relay

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dronelink/dronelink/pkg/link"
)

// DefaultMaxPeers bounds the downlink subjects a drone remembers: far above the link's
// session limit. When it is reached, a new subject takes the place of one the drone never
// answered, else of one it has not answered for PeerKeepTime; a subject it answered
// within that time (an operator in a session hears at least the drone's keepalives) is
// never forgotten, and a new subject is dropped instead (DropPeerTable). Anyone allowed to
// publish on the uplink can make up reply subjects, without any dronelink secret, and the
// drone answers none of them: they take each other's places, never an operator's.
const DefaultMaxPeers = 4096

// PeerKeepTime is how long a downlink subject the drone answered is kept for sure: the
// link's idle time, after which the drone forgets the session too.
const PeerKeepTime = link.SessionIdleTimeout

// peerPort is the port of every synthetic address; the address alone tells peers apart.
const peerPort = 1

// WriteQueue bounds the drone's datagrams that wait for the NATS client (about a second of
// a busy drone's traffic). WriteTo never waits: beyond the queue a datagram is dropped
// (DropBacklog), as a full UDP socket would drop it, so a server that takes them slowly or
// not at all costs datagrams, never the drone's writers (its command executor, login
// workers and telemetry, which serve the UDP socket's operators too).
const WriteQueue = 1024

var (
	errClosed      = fmt.Errorf("relay: %w", net.ErrClosed)
	errUnknownPeer = errors.New("relay: no downlink subject for this address (forgotten)")
	errBacklog     = errors.New("relay: too many datagrams wait for the NATS server (dropped)")
)

// outDatagram is a datagram waiting for the NATS client.
type outDatagram struct {
	subject string
	data    []byte
}

// DroneConn is the drone's end of the relay: a link.ExtraConn that reads the drone's
// uplink subject and answers each operator on its downlink subject. Safe for concurrent
// use; ReadFrom is meant for one reader.
type DroneConn struct {
	*natsConn
	prefix   string   // DownlinkPrefix of the drone id
	net      [6]byte  // the /48 of the synthetic addresses: 0xfd and 40 random bits (RFC 4193)
	key      [32]byte // keys the hash from a subject to its address
	maxPeers int
	now      func() int64 // unix nanoseconds; a counter in tests

	mu        sync.RWMutex
	bySubject map[string]*peer
	byAddr    map[netip.AddrPort]*peer
	// unanswered lists peers in the order they were added, those the drone had not
	// answered when evictLocked last looked at them first: the first to go.
	unanswered []*peer

	out        chan outDatagram // to writeLoop
	stop       chan struct{}    // closed by Close: writeLoop returns
	writerDone chan struct{}
	stopOnce   sync.Once
	stopping   atomic.Bool
}

// peer is one downlink subject and its synthetic address.
type peer struct {
	subject  string
	addr     netip.AddrPort
	heard    atomic.Int64 // unix nanoseconds of its latest datagram
	answered atomic.Int64 // unix nanoseconds of the drone's latest datagram to it; 0: never
}

var _ link.ExtraConn = (*DroneConn)(nil)

// Listen connects the drone to the NATS servers of cfg and subscribes to its uplink
// subject. It fails on refused credentials or a refused subscription; with cfg.KeepTrying
// an unreachable server only delays the subscription.
func Listen(cfg Config) (*DroneConn, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = "dronelinkd " + cfg.DroneID
	}
	d := &DroneConn{
		prefix:     DownlinkPrefix(cfg.DroneID),
		maxPeers:   DefaultMaxPeers,
		now:        func() int64 { return time.Now().UnixNano() },
		bySubject:  make(map[string]*peer),
		byAddr:     make(map[netip.AddrPort]*peer),
		out:        make(chan outDatagram, WriteQueue),
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	d.net[0] = 0xfd
	if _, err := rand.Read(d.net[1:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(d.key[:]); err != nil {
		return nil, err
	}
	if d.natsConn, err = dial(cfg); err != nil {
		return nil, err
	}
	if err = d.subscribe(UplinkSubject(cfg.DroneID)); err != nil {
		d.close()
		return nil, err
	}
	go d.watchDrops()
	go d.writeLoop()
	return d, nil
}

// writeLoop hands the queued datagrams to the NATS client until Close.
func (d *DroneConn) writeLoop() {
	defer close(d.writerDone)
	for {
		select {
		case m := <-d.out:
			d.publish(m)
		case <-d.stop:
			return
		}
	}
}

// publish hands one datagram to the NATS client. It may wait while the client writes to
// the server's connection (at most FlusherTimeout).
func (d *DroneConn) publish(m outDatagram) {
	if err := d.nc().Publish(m.subject, m.data); err != nil {
		d.cfg.Hooks.Dropped(DropPublish)
	}
}

// ReadFrom implements link.PacketConn: the next uplink datagram and the synthetic address
// of its downlink subject. Messages that are not dronelink datagrams with a downlink
// subject of this drone are dropped and counted, cheapest checks first.
func (d *DroneConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	for {
		msg, err := d.nextMsg()
		if err != nil {
			if errors.Is(err, nats.ErrNoResponders) {
				continue // not ours to hear: nothing the drone sends asks for responders
			}
			return 0, netip.AddrPort{}, err
		}
		switch {
		case len(msg.Data) == 0:
			d.cfg.Hooks.Dropped(DropEmpty)
		case len(msg.Data) > link.MaxDatagramSize:
			d.cfg.Hooks.Dropped(DropOversize)
		case !validDownlink(msg.Reply, d.prefix):
			d.cfg.Hooks.Dropped(DropBadReply)
		default:
			addr, ok := d.peerFor(msg.Reply)
			if !ok {
				d.cfg.Hooks.Dropped(DropPeerTable)
				continue
			}
			return copy(b, msg.Data), addr, nil
		}
	}
}

// peerFor is the synthetic address of a valid downlink subject, remembering it; false when
// the drone remembers as many as it may, none of which it may forget (DefaultMaxPeers).
func (d *DroneConn) peerFor(subject string) (netip.AddrPort, bool) {
	now := d.now()
	d.mu.RLock()
	p := d.bySubject[subject]
	d.mu.RUnlock()
	if p != nil {
		p.heard.Store(now)
		return p.addr, true
	}
	p = &peer{subject: subject, addr: d.addrOf(subject)}
	p.heard.Store(now)
	d.mu.Lock()
	defer d.mu.Unlock()
	if q := d.bySubject[subject]; q != nil { // another reader's, meanwhile
		return q.addr, true
	}
	if len(d.bySubject) >= d.maxPeers && !d.evictLocked(now) {
		return netip.AddrPort{}, false
	}
	d.bySubject[subject] = p
	d.byAddr[p.addr] = p
	d.unanswered = append(d.unanswered, p)
	d.cfg.Logger.Debug("relay: new downlink", "subject", subject, "addr", p.addr)
	return p.addr, true
}

// evictLocked forgets one peer to make room and reports whether it found one it may
// forget: the oldest one the drone never answered (in O(1) amortised: the flood of a
// publisher who makes up reply subjects costs no scan of the table), else the least
// recently heard of those it has not answered for PeerKeepTime. d.mu must be held for
// writing.
func (d *DroneConn) evictLocked(now int64) bool {
	for len(d.unanswered) > 0 {
		p := d.unanswered[0]
		d.unanswered[0] = nil
		d.unanswered = d.unanswered[1:]
		if d.bySubject[p.subject] == p && p.answered.Load() == 0 {
			d.forgetLocked(p)
			return true
		}
	}
	var oldest *peer
	for _, p := range d.bySubject {
		if now-p.answered.Load() >= int64(PeerKeepTime) && (oldest == nil || p.heard.Load() < oldest.heard.Load()) {
			oldest = p
		}
	}
	if oldest == nil {
		return false
	}
	d.forgetLocked(oldest)
	return true
}

// forgetLocked removes p from the tables. d.mu must be held for writing.
func (d *DroneConn) forgetLocked(p *peer) {
	delete(d.bySubject, p.subject)
	delete(d.byAddr, p.addr)
}

// addrOf is subject's synthetic address: the conn's /48 and 80 bits of HMAC-SHA256 of the
// subject under the conn's random key. Keyed, so nobody can make two subjects collide;
// deterministic, so a forgotten subject heard again gets its old address back and its
// session goes on.
func (d *DroneConn) addrOf(subject string) netip.AddrPort {
	mac := hmac.New(sha256.New, d.key[:])
	mac.Write([]byte(subject))
	var a [16]byte
	copy(a[:6], d.net[:])
	copy(a[6:], mac.Sum(nil))
	return netip.AddrPortFrom(netip.AddrFrom16(a), peerPort)
}

// Owns implements link.ExtraConn: addr is in the conn's /48.
func (d *DroneConn) Owns(addr netip.AddrPort) bool {
	a := addr.Addr()
	if !a.Is6() {
		return false
	}
	b := a.As16()
	return [6]byte(b[:6]) == d.net
}

// WriteTo implements link.PacketConn: it queues b for publication on the downlink subject
// of addr, without waiting (WriteQueue).
func (d *DroneConn) WriteTo(b []byte, addr netip.AddrPort) error {
	if d.stopping.Load() {
		return errClosed
	}
	d.mu.RLock()
	p := d.byAddr[addr]
	d.mu.RUnlock()
	if p == nil {
		d.cfg.Hooks.Dropped(DropUnknownPeer)
		return errUnknownPeer
	}
	p.answered.Store(d.now())
	select {
	case d.out <- outDatagram{subject: p.subject, data: bytes.Clone(b)}:
		return nil
	default:
		d.cfg.Hooks.Dropped(DropBacklog)
		return errBacklog
	}
}

// Subject is the downlink subject of a peer address, if the conn knows it: for logs and
// status displays.
func (d *DroneConn) Subject(addr netip.AddrPort) (string, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if p := d.byAddr[addr]; p != nil {
		return p.subject, true
	}
	return "", false
}

// AddrName implements link.AddrNamer: "relay:" and the downlink subject of addr, or "" if
// the conn does not know it.
func (d *DroneConn) AddrName(addr netip.AddrPort) string {
	if subject, ok := d.Subject(addr); ok {
		return "relay:" + subject
	}
	return ""
}

// LocalAddr implements link.PacketConn: the conn's /48 with port 0.
func (d *DroneConn) LocalAddr() netip.AddrPort {
	var a [16]byte
	copy(a[:6], d.net[:])
	return netip.AddrPortFrom(netip.AddrFrom16(a), 0)
}

// Close implements link.PacketConn: it publishes what is queued (the drone's last words to
// its operators), flushes it and closes the NATS connection. Safe to call more than once.
func (d *DroneConn) Close() error {
	d.stopOnce.Do(func() {
		d.stopping.Store(true)
		close(d.stop)
		<-d.writerDone
		for {
			select {
			case m := <-d.out:
				d.publish(m)
				continue
			default:
			}
			break
		}
	})
	d.close()
	return nil
}
