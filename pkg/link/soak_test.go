package link

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/link/fakenet"
)

var (
	soakDuration = flag.Duration("soak", 20*time.Second, "how long TestLossySoak runs (make soak: 5m)")
	soakSeed     = flag.Uint64("soak-seed", 0, "seed of TestLossySoak's lossy network (0: from the clock; the test logs it)")
)

// TestLossySoak runs two operators against the drone for -soak over a link with 30% loss,
// 10% reordering and 5% duplication, rekeying every 10 seconds: no command may be lost or
// executed twice, and the replay filter may never reject a datagram on its first arrival.
func TestLossySoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak skipped in -short mode")
	}
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("lossy network seed %d (replay a failure with -args -soak-seed %d)", seed, seed)
	n, err := fakenet.New(fakenet.Config{Seed: seed, Loss: 0.30, Reorder: 0.10, Duplicate: 0.05,
		Jitter: time.Millisecond, QueueLen: 1 << 14})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	sconn, err := n.Listen(droneAddr)
	if err != nil {
		t.Fatal(err)
	}
	var serverAudit *replayAudit
	r := startServer(t, sconn, func(c *ServerConfig) {
		serverAudit = &replayAudit{Hooks: c.Hooks}
		c.Hooks = serverAudit
		c.DedupCapacity = 1 << 20
	})
	serverAudit.attach(r.conn)

	deadline := time.Now().Add(*soakDuration)
	var acked, failed atomic.Int64
	var audits []*replayAudit
	var wg sync.WaitGroup
	for i, op := range []string{"alice", "bob"} {
		conn, err := n.Listen(netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("10.0.1.%d", i+1)), 0))
		if err != nil {
			t.Fatal(err)
		}
		rec := newRecordingConn(conn)
		audit := &replayAudit{Hooks: &Counters{}}
		audit.attach(rec)
		audits = append(audits, audit)
		cfg := clientConfig(rec, r.address, op)
		cfg.Hooks = audit
		cfg.RekeyAfterTime = 10 * time.Second
		c := dial(t, cfg)
		for w := range 8 {
			wg.Go(func() {
				for k := 0; time.Now().Before(deadline); k++ {
					payload := fmt.Sprintf("%s worker %d command %d", op, w, k)
					ctx, cancel := context.WithTimeout(context.Background(), MaxCommandLifetime)
					ack, err := c.CommandWith(ctx, []byte(payload), CommandOptions{Independent: true}) // several streams in flight
					cancel()
					if err != nil || ack.Status != AckOK {
						failed.Add(1)
						t.Errorf("%q: %v %v", payload, ack.Status, err)
						return
					}
					acked.Add(1)
				}
			})
		}
	}
	wg.Wait()
	r.execs.check(t, int(acked.Load()))
	if f := serverAudit.false.Load(); f != 0 {
		t.Errorf("the drone rejected %d first arrivals as replays", f)
	}
	for i, a := range audits {
		if f := a.false.Load(); f != 0 {
			t.Errorf("operator %d rejected %d first arrivals as replays", i, f)
		}
	}
	// Each operator rekeys every 10 s after its own session began; its dial over this
	// link takes a variable time, so the last due rekey may fall just after the commands
	// stop. Wait for the rekeys due, instead of expecting them inside the window.
	want := uint64(*soakDuration / (10 * time.Second))
	waitFor(t, fmt.Sprintf("%d rekeys", want), func() bool { return r.hooks.Rekeys.Load() >= want })
	rekeys := r.hooks.Rekeys.Load()
	t.Logf("soak %v: %d commands acknowledged and executed once, %d failed, %d rekeys, %d true replays dropped; network %+v",
		*soakDuration, acked.Load(), failed.Load(), rekeys, r.hooks.Drop(DropReplay), n.Stats())
}
