package main

import (
	"encoding/binary"
	"os"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
)

// Inner packet layout of the wireguard-go contender: IPv4 and UDP headers around the payload.
const (
	wgMTU           = 1420 // wireguard-go's default tunnel MTU
	ipv4HeaderSize  = 20
	udpHeaderSize   = 8
	innerHeaderSize = ipv4HeaderSize + udpHeaderSize
)

// memTun modes: the sending tun idles, emits warm-up packets on demand, generates packets
// as fast as the device reads them, or stops.
const (
	tunIdle int32 = iota
	tunGenerate
	tunStopped
)

// memTun is an in-memory tun.Device. As the sending side it generates one fixed inner
// packet per slot on every Read while generating (the device reads as fast as it can
// encrypt and send: the sender at full speed); as the receiving side it counts the packets
// the device writes to it.
type memTun struct {
	packet []byte // the inner packet Read hands out
	batch  int    // packets per Read while generating

	mode     atomic.Int32
	wake     chan struct{} // a mode change
	warm     chan struct{} // one warm-up packet each
	sent     atomic.Uint64 // packets handed to the device while generating
	received atomic.Uint64 // packets the device wrote (delivered through the tunnel)
	events   chan tun.Event
	closed   chan struct{}
	once     sync.Once
}

func newMemTun(packet []byte, batch int) *memTun {
	return &memTun{packet: packet, batch: batch, wake: make(chan struct{}, 1), warm: make(chan struct{}, 1),
		events: make(chan tun.Event), closed: make(chan struct{})}
}

// setMode switches the generator and wakes a blocked Read.
func (t *memTun) setMode(m int32) {
	t.mode.Store(m)
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *memTun) File() *os.File { return nil }

func (t *memTun) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		switch t.mode.Load() {
		case tunGenerate:
			n := min(t.batch, len(bufs))
			for i := range n {
				sizes[i] = copy(bufs[i][offset:], t.packet)
			}
			t.sent.Add(uint64(n))
			return n, nil
		case tunIdle:
			select {
			case <-t.warm:
				sizes[0] = copy(bufs[0][offset:], t.packet)
				return 1, nil
			case <-t.wake:
			case <-t.closed:
				return 0, os.ErrClosed
			}
		default:
			select {
			case <-t.wake:
			case <-t.closed:
				return 0, os.ErrClosed
			}
		}
	}
}

func (t *memTun) Write(bufs [][]byte, offset int) (int, error) {
	n := 0
	for _, b := range bufs {
		if len(b) > offset {
			n++
		}
	}
	t.received.Add(uint64(n))
	return len(bufs), nil
}

func (t *memTun) MTU() (int, error)        { return wgMTU, nil }
func (t *memTun) Name() (string, error)    { return "memtun", nil }
func (t *memTun) Events() <-chan tun.Event { return t.events }
func (t *memTun) BatchSize() int           { return t.batch }

func (t *memTun) Close() error {
	t.once.Do(func() {
		close(t.closed)
		close(t.events)
	})
	return nil
}

// innerPacket builds an IPv4/UDP packet from src to dst carrying size zero bytes.
func innerPacket(src, dst [4]byte, size int) []byte {
	p := make([]byte, innerHeaderSize+size)
	p[0] = 0x45 // version 4, 5 words of header
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64 // TTL
	p[9] = 17 // UDP
	copy(p[12:16], src[:])
	copy(p[16:20], dst[:])
	var sum uint32
	for i := 0; i < ipv4HeaderSize; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], 40000) // source port
	binary.BigEndian.PutUint16(p[22:], 40001) // destination port
	binary.BigEndian.PutUint16(p[24:], uint16(udpHeaderSize+size))
	return p // UDP checksum 0: none (allowed over IPv4)
}
