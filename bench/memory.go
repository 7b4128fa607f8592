package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"time"

	"github.com/dronelink/dronelink/pkg/link"
)

// heapAlloc is the live heap after a full collection (two, so sync.Pool victims are gone too).
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// memoryLine formats one memory figure.
func memoryLine(name string, n int, before, after uint64, note string) string {
	per := 0.0
	if after > before {
		per = float64(after-before) / float64(n)
	}
	return fmt.Sprintf("memory %s n=%d bytes/session=%.0f # %s", name, n, per, note)
}

// runMemory measures idle sessions three ways: n bare link.NewSession objects; drone-side
// sessions from Responder.AcceptInitiation + NewSession on the pre-built initiations; and
// the sessions a running link.Server holds after answering those initiations over UDP.
func runMemory(ctx context.Context, n int, set *handshakeSet) ([]string, error) {
	var lines []string
	if n > 0 {
		l, err := sessionMemory(n)
		if err != nil {
			return nil, err
		}
		lines = append(lines, l)
	}
	if set != nil {
		before := heapAlloc()
		_, sessions, err := acceptAll(set)
		if err != nil {
			return nil, err
		}
		after := heapAlloc()
		runtime.KeepAlive(sessions)
		lines = append(lines, memoryLine("responder", len(sessions), before, after,
			"Responder.AcceptInitiation + NewSession, per pre-built initiation"))
		l, err := serverMemory(ctx, set)
		if err != nil {
			return nil, err
		}
		lines = append(lines, l)
	}
	return lines, nil
}

// sessionMemory creates n sessions with random keys and the default replay window.
func sessionMemory(n int) (string, error) {
	sessions := make([]*link.Session, n)
	keys := make([]link.SessionKeys, n)
	for i := range keys {
		rand.Read(keys[i].Send[:])
		rand.Read(keys[i].Recv[:])
	}
	now := time.Now()
	before := heapAlloc()
	for i := range sessions {
		s, err := link.NewSession(&keys[i], uint16(i%65535+1), uint16(i%65535+1), 0, now)
		if err != nil {
			return "", err
		}
		sessions[i] = s
	}
	after := heapAlloc()
	runtime.KeepAlive(sessions)
	runtime.KeepAlive(keys) // allocated before the first reading: must not be freed before the second
	return memoryLine("link.NewSession", n, before, after, "two ChaCha20-Poly1305 AEADs, counters, 2048-packet replay window"), nil
}

// serverMemory sends the pre-built initiations one by one to a fresh link.Server over UDP,
// waits for each response, and measures the heap the server's sessions hold.
func serverMemory(_ context.Context, set *handshakeSet) (string, error) {
	n := len(set.initiations)
	dr, err := startDrone(set.ids, nil, func(c *link.ServerConfig) {
		c.MaxSessions = max(n, link.DefaultMaxSessions)
		c.MaxSessionsPerKey = n
	})
	if err != nil {
		return "", err
	}
	defer dr.stop()
	sock, err := listenLoopback()
	if err != nil {
		return "", err
	}
	defer sock.Close()
	to := dr.server.LocalAddr()
	buf := make([]byte, link.ReadBufferSize)
	before := heapAlloc()
	for i, pkt := range set.initiations {
		if _, err := sock.WriteToUDPAddrPort(pkt, to); err != nil {
			return "", err
		}
		sock.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, _, err := sock.ReadFromUDPAddrPort(buf)
		if err != nil {
			return "", fmt.Errorf("initiation %d: no response: %w", i, err)
		}
		if typ, ok := link.PeekType(buf[:m]); !ok || typ != link.TypeResponse {
			return "", fmt.Errorf("initiation %d: answered with type %d, not a response", i, typ)
		}
	}
	after := heapAlloc()
	runtime.KeepAlive(set) // the initiations must not be freed between the two readings
	if got := len(dr.server.Sessions()); got != n {
		return "", fmt.Errorf("server holds %d sessions, want %d", got, n)
	}
	return memoryLine("link.Server", n, before, after, "a running drone's session table after n handshakes over UDP (unconfirmed, idle)"), nil
}
