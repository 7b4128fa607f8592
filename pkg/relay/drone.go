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
// session limit, so that only a flood of made-up reply subjects evicts a live one.
const DefaultMaxPeers = 4096

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

	mu        sync.RWMutex
	bySubject map[string]*peer
	byAddr    map[netip.AddrPort]*peer

	out        chan outDatagram // to writeLoop
	stop       chan struct{}    // closed by Close: writeLoop returns
	writerDone chan struct{}
	stopOnce   sync.Once
	stopping   atomic.Bool
}

// peer is one downlink subject and its synthetic address.
type peer struct {
	subject string
	addr    netip.AddrPort
	heard   atomic.Int64 // unix nanoseconds of its latest datagram
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
			return copy(b, msg.Data), d.peerFor(msg.Reply), nil
		}
	}
}

// peerFor is the synthetic address of a valid downlink subject, remembering it.
func (d *DroneConn) peerFor(subject string) netip.AddrPort {
	now := time.Now().UnixNano()
	d.mu.RLock()
	p := d.bySubject[subject]
	d.mu.RUnlock()
	if p != nil {
		p.heard.Store(now)
		return p.addr
	}
	p = &peer{subject: subject, addr: d.addrOf(subject)}
	p.heard.Store(now)
	d.mu.Lock()
	defer d.mu.Unlock()
	if q := d.bySubject[subject]; q != nil { // another reader's, meanwhile
		return q.addr
	}
	if len(d.bySubject) >= d.maxPeers {
		d.evictLocked()
	}
	d.bySubject[subject] = p
	d.byAddr[p.addr] = p
	d.cfg.Logger.Debug("relay: new downlink", "subject", subject, "addr", p.addr)
	return p.addr
}

// evictLocked forgets the least recently heard peer. d.mu must be held for writing.
func (d *DroneConn) evictLocked() {
	var oldest *peer
	for _, p := range d.bySubject {
		if oldest == nil || p.heard.Load() < oldest.heard.Load() {
			oldest = p
		}
	}
	if oldest != nil {
		delete(d.bySubject, oldest.subject)
		delete(d.byAddr, oldest.addr)
	}
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
