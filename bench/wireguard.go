package main

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// wgBatchSize is wireguard-go's own batch (conn.IdealBatchSize): packets per tun read and
// per sendmmsg in the wireguard-go-batch contender.
const wgBatchSize = conn.IdealBatchSize

// wgTransportOverhead is a WireGuard transport message's header (16) and tag (16).
const wgTransportOverhead = 32

// wgTransportType is the first byte of a WireGuard transport (data) message.
const wgTransportType = 4

// countingBind is the default wireguard-go Bind with its data datagrams counted, to measure
// the bytes on the wire.
type countingBind struct {
	conn.Bind
	datagrams atomic.Uint64
	bytes     atomic.Uint64
}

func (b *countingBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	for _, p := range bufs {
		if len(p) > wgTransportOverhead && p[0] == wgTransportType {
			b.datagrams.Add(1)
			b.bytes.Add(uint64(len(p)))
		}
	}
	return b.Bind.Send(bufs, ep)
}

// wgPeer is one wireguard-go device with its in-memory tun.
type wgPeer struct {
	dev  *device.Device
	tun  *memTun
	bind *countingBind
	priv *ecdh.PrivateKey
	port int
}

func newWGPeer(packet []byte, batch int) (*wgPeer, error) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	p := &wgPeer{tun: newMemTun(packet, batch), bind: &countingBind{Bind: conn.NewDefaultBind()}, priv: priv}
	p.dev = device.NewDevice(p.tun, p.bind, device.NewLogger(device.LogLevelSilent, ""))
	if err := p.dev.IpcSet(fmt.Sprintf("private_key=%x\nlisten_port=0\n", priv.Bytes())); err != nil {
		p.dev.Close()
		return nil, err
	}
	if err := p.dev.Up(); err != nil {
		p.dev.Close()
		return nil, err
	}
	cfg, err := p.dev.IpcGet()
	if err != nil {
		p.dev.Close()
		return nil, err
	}
	for line := range strings.SplitSeq(cfg, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			p.port, _ = strconv.Atoi(v)
		}
	}
	if p.port == 0 {
		p.dev.Close()
		return nil, errors.New("wireguard-go: no listen port")
	}
	return p, nil
}

// addPeer lets p talk to other at 127.0.0.1, routing allowed (one /32) to it.
func (p *wgPeer) addPeer(other *wgPeer, allowed string) error {
	return p.dev.IpcSet(fmt.Sprintf("public_key=%x\nendpoint=127.0.0.1:%d\nallowed_ip=%s\n",
		other.priv.PublicKey().Bytes(), other.port, allowed))
}

// runWireGuard runs two wireguard-go devices in this process, each with an in-memory tun,
// talking over real UDP on loopback through conn.NewDefaultBind (StdNetBind). The sending
// tun hands the device one inner IPv4/UDP packet carrying size payload bytes per slot,
// batch packets per read (1: one datagram per sendmmsg, no GSO); the receiving tun counts
// the packets the other device delivers. StdNetBind receives with recvmmsg (and UDP GRO
// where the kernel has it) whatever the batch: that is wireguard-go's own receive path.
func runWireGuard(_ context.Context, size int, d time.Duration, batch int) (result, error) {
	name := "wireguard-go"
	if batch > 1 {
		name = "wireguard-go-batch"
	}
	a4, b4 := [4]byte{10, 77, 0, 1}, [4]byte{10, 77, 0, 2}
	packet := innerPacket(a4, b4, size)
	a, err := newWGPeer(packet, batch)
	if err != nil {
		return result{}, err
	}
	defer a.dev.Close()
	b, err := newWGPeer(nil, batch)
	if err != nil {
		return result{}, err
	}
	defer b.dev.Close()
	if err := a.addPeer(b, "10.77.0.2/32"); err != nil {
		return result{}, err
	}
	if err := b.addPeer(a, "10.77.0.1/32"); err != nil {
		return result{}, err
	}

	// Warm up: the first packets trigger the handshake; wait until one gets through.
	deadline := time.Now().Add(20 * time.Second)
	for b.tun.received.Load() == 0 {
		if time.Now().After(deadline) {
			return result{}, errors.New("wireguard-go: no packet through the tunnel after 20s")
		}
		select {
		case a.tun.warm <- struct{}{}:
		default:
		}
		time.Sleep(10 * time.Millisecond)
	}
	settle(&b.tun.received)
	b.tun.received.Store(0)
	a.bind.datagrams.Store(0)
	a.bind.bytes.Store(0)

	start := time.Now()
	a.tun.setMode(tunGenerate)
	time.Sleep(d)
	a.tun.setMode(tunStopped)
	elapsed := time.Since(start)
	settle(&b.tun.received)

	r := result{name: name, size: size, sent: a.tun.sent.Load(), received: b.tun.received.Load(), elapsed: elapsed}
	inner := innerHeaderSize + size
	padded := min((inner+device.PaddingMultiple-1)/device.PaddingMultiple*device.PaddingMultiple, wgMTU)
	if n := a.bind.datagrams.Load(); n > 0 {
		r.overhead = int((a.bind.bytes.Load()+n/2)/n) - size
	}
	r.note = fmt.Sprintf("overhead %d = %d WireGuard header+tag + %d inner IPv4/UDP headers + %d padding (inner packet %d B padded to %d)",
		r.overhead, wgTransportOverhead, innerHeaderSize, padded-inner, inner, padded)
	if batch > 1 {
		r.note += fmt.Sprintf("; %d packets per tun read, sendmmsg with UDP GSO where available", batch)
	}
	return r, nil
}
