package main

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/dronelink/dronelink/pkg/link"
)

// handshakeOperators is how many operator keys the pre-built initiations come from.
const handshakeOperators = 4

// maxHandshakes bounds --handshakes: each drone-side session needs a distinct 16-bit index.
const maxHandshakes = 60000

// handshakeSet is a batch of pre-built initiations with the keys that made them, in an
// order the drone accepts (timestamps strictly increase per operator key).
type handshakeSet struct {
	ids         *identities
	initiations [][]byte
}

// buildInitiations makes n initiations round-robin over the operator keys, each key's in
// timestamp order, building in parallel (one goroutine per key).
func buildInitiations(ids *identities, n int) (*handshakeSet, error) {
	k := len(ids.operators)
	perKey := make([][][]byte, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for op := range k {
		wg.Go(func() {
			for i := op; i < n; i += k {
				h, err := link.NewInitiator(link.InitiatorConfig{PSK: ids.psk, OperatorKey: ids.operators[op],
					DronePublic: &ids.drone.PublicKey}, uint16(i+1), 0)
				if err != nil {
					errs[op] = err
					return
				}
				pkt, err := h.Initiation(time.Now())
				if err != nil {
					errs[op] = err
					return
				}
				perKey[op] = append(perKey[op], pkt)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	set := &handshakeSet{ids: ids}
	for i := range n {
		set.initiations = append(set.initiations, perKey[i%k][i/k])
	}
	return set, nil
}

// runHandshakes measures the drone's cost of a handshake with bits-bit RSA keys (drone and
// operators): CheckInitiation (length, PSK MAC), AcceptInitiation (freshness, signature
// verify, RSA-OAEP unwrap, X25519, key schedule, response) and NewSession, on n pre-built
// initiations, on one goroutine. It returns the initiations too, for the memory section.
func runHandshakes(bits, n int) (handshakeResult, *handshakeSet, error) {
	ids, err := newIdentities(bits, handshakeOperators)
	if err != nil {
		return handshakeResult{}, nil, err
	}
	set, err := buildInitiations(ids, n)
	if err != nil {
		return handshakeResult{}, nil, err
	}
	r, _, err := acceptAll(set)
	if err != nil {
		return handshakeResult{}, nil, err
	}
	r.name = fmt.Sprintf("rsa-%d", bits)
	return r, set, nil
}

// acceptAll runs every initiation of set through a fresh Responder and keeps the sessions.
func acceptAll(set *handshakeSet) (handshakeResult, []*link.Session, error) {
	responder, err := link.NewResponder(link.ResponderConfig{PSK: set.ids.psk, DroneKey: link.NewDroneKey(set.ids.drone),
		Operators: newBenchAuth(set.ids).LookupKey})
	if err != nil {
		return handshakeResult{}, nil, err
	}
	sessions := make([]*link.Session, 0, len(set.initiations))
	out := make([]byte, 0, link.MaxDatagramSize)
	var init link.Initiation
	runtime.GC()
	cpu0, cpuKnown := processCPU()
	start := time.Now()
	for i, pkt := range set.initiations {
		if err := responder.CheckInitiation(pkt, &init); err != nil {
			return handshakeResult{}, nil, fmt.Errorf("initiation %d: %w", i, err)
		}
		local := uint16(i + 1)
		_, acc, err := responder.AcceptInitiation(out[:0], &init, local, 0)
		if err != nil {
			return handshakeResult{}, nil, fmt.Errorf("initiation %d: %w", i, err)
		}
		s, err := link.NewSession(&acc.Keys, local, acc.OperatorIndex, 0, time.Now())
		clear(acc.Keys.Send[:])
		clear(acc.Keys.Recv[:])
		if err != nil {
			return handshakeResult{}, nil, err
		}
		sessions = append(sessions, s)
	}
	wall := time.Since(start)
	cpu1, _ := processCPU()
	return handshakeResult{n: len(sessions), wall: wall, cpu: cpu1 - cpu0, cpuKnown: cpuKnown}, sessions, nil
}
