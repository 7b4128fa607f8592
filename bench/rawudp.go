package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dronelink/dronelink/pkg/link"
)

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

// runRawUDPBatch is raw-udp through the batched socket path dronelink-batch uses,
// link.UDPConn's WriteBatch/ReadBatch (sendmmsg with UDP GSO, recvmmsg), link.BatchSize
// datagrams per call and no cryptography: the ceiling of the batched path.
func runRawUDPBatch(_ context.Context, _ *env, size int, d time.Duration) (result, error) {
	txc, rxc, to, err := udpPair()
	if err != nil {
		return result{}, err
	}
	tx, rx := link.NewUDPConn(txc), link.NewUDPConn(rxc)
	defer tx.Close()
	var received atomic.Uint64
	var wg sync.WaitGroup
	wg.Go(func() {
		msgs := make([]link.Datagram, link.BatchSize)
		for i := range msgs {
			msgs[i].Buf = make([]byte, link.ReadBufferSize)
		}
		for {
			n, err := rx.ReadBatch(msgs)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			received.Add(uint64(n))
		}
	})
	payload := make([]byte, size)
	msgs := make([]link.Datagram, link.BatchSize)
	for i := range msgs {
		msgs[i] = link.Datagram{Buf: payload, Addr: to}
	}
	var sent uint64
	_, elapsed := drive(d, func() bool {
		n, _ := tx.WriteBatch(msgs)
		sent += uint64(n)
		return false
	}, &received)
	rx.Close()
	wg.Wait()
	return result{name: "raw-udp-batch", size: size, sent: sent, received: received.Load(), elapsed: elapsed,
		note: fmt.Sprintf("link.UDPConn WriteBatch/ReadBatch: sendmmsg with UDP GSO, recvmmsg, %d datagrams per call", link.BatchSize)}, nil
}
