package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
)

// rawBatchSize is how many datagrams raw-udp-batch moves per sendmmsg/recvmmsg.
const rawBatchSize = 32

// listenLoopback opens a UDP socket on 127.0.0.1 with a free port.
func listenLoopback() (*net.UDPConn, error) {
	return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
}

// udpPair opens a sender and a receiver socket and returns the receiver's address.
func udpPair() (tx, rx *net.UDPConn, to netip.AddrPort, err error) {
	if rx, err = listenLoopback(); err != nil {
		return nil, nil, to, err
	}
	if tx, err = listenLoopback(); err != nil {
		rx.Close()
		return nil, nil, to, err
	}
	return tx, rx, rx.LocalAddr().(*net.UDPAddr).AddrPort(), nil
}

// runRawUDP is the physical limit: a plain Go sender and receiver, one datagram per syscall,
// the same calls dronelink's UDPConn makes (WriteToUDPAddrPort, ReadFromUDPAddrPort).
func runRawUDP(_ context.Context, _ *env, size int, d time.Duration) (result, error) {
	tx, rx, to, err := udpPair()
	if err != nil {
		return result{}, err
	}
	defer tx.Close()
	var received atomic.Uint64
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			received.Add(1)
		}
	})
	payload := make([]byte, size)
	sent, elapsed := drive(d, func() bool {
		_, err := tx.WriteToUDPAddrPort(payload, to)
		return err == nil
	}, &received)
	rx.Close()
	wg.Wait()
	return result{name: "raw-udp", size: size, sent: sent, received: received.Load(), elapsed: elapsed}, nil
}

// runRawUDPBatch is raw-udp with sendmmsg/recvmmsg of rawBatchSize datagrams per syscall
// (golang.org/x/net/ipv4 WriteBatch/ReadBatch): the ceiling batching could reach.
func runRawUDPBatch(_ context.Context, _ *env, size int, d time.Duration) (result, error) {
	tx, rx, to, err := udpPair()
	if err != nil {
		return result{}, err
	}
	defer tx.Close()
	var received atomic.Uint64
	var wg sync.WaitGroup
	wg.Go(func() {
		pc := ipv4.NewPacketConn(rx)
		msgs := make([]ipv4.Message, rawBatchSize)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		for {
			n, err := pc.ReadBatch(msgs, 0)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			received.Add(uint64(n))
		}
	})
	pc := ipv4.NewPacketConn(tx)
	dst := net.UDPAddrFromAddrPort(to)
	payload := make([]byte, size)
	msgs := make([]ipv4.Message, rawBatchSize)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{payload}
		msgs[i].Addr = dst
	}
	var sent uint64
	_, elapsed := drive(d, func() bool {
		n, err := pc.WriteBatch(msgs, 0)
		if err == nil {
			sent += uint64(n)
		}
		return false
	}, &received)
	rx.Close()
	wg.Wait()
	return result{name: "raw-udp-batch", size: size, sent: sent, received: received.Load(), elapsed: elapsed,
		note: "sendmmsg/recvmmsg, 32 datagrams per syscall"}, nil
}
