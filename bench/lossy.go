package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dronelink/dronelink/internal/lossproxy"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/metrics"
)

// lossyResult is the command goodput and round trips over one lossy link.
type lossyResult struct {
	loss        float64
	window      time.Duration // how long new commands were started
	inWindow    int           // commands acknowledged within the window
	acked       int           // commands acknowledged, in the window or after it
	failed      int
	rtts        []time.Duration // of every acknowledged command
	attempts    int             // transmissions of the acknowledged commands
	proxyDrops  uint64
	proxyTotals uint64
}

func (r lossyResult) line() string {
	slices.Sort(r.rtts)
	return fmt.Sprintf("lossy loss=%.0f%% cmd/s=%.0f p50=%s p99=%s acked=%d failed=%d tx/cmd=%.2f proxy-dropped=%d/%d",
		r.loss*100, float64(r.inWindow)/r.window.Seconds(), ms(percentile(r.rtts, 0.50)), ms(percentile(r.rtts, 0.99)),
		r.acked, r.failed, float64(r.attempts)/float64(max(r.acked, 1)), r.proxyDrops, r.proxyDrops+r.proxyTotals)
}

// percentile of sorted durations (nearest rank), 0 if empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

// runLossy puts internal/lossproxy (loss rate each way) between a link.Client and a
// link.Server, both with metrics, and keeps concurrency commands of size bytes in flight
// with Client.Command for d. Goodput counts the acknowledgements that arrived within d;
// commands still in flight at the end are waited for, so slow retransmitted ones count in
// the round-trip percentiles (no survivor bias).
func runLossy(ctx context.Context, e *env, loss float64, size int, d time.Duration, concurrency int) (lossyResult, error) {
	ids, err := e.identities()
	if err != nil {
		return lossyResult{}, err
	}
	size = min(size, link.MaxCommandPayload)
	reg := prometheus.NewRegistry()
	droneHooks, err := metrics.New(reg, metrics.Options{Role: metrics.RoleDrone})
	if err != nil {
		return lossyResult{}, err
	}
	pilotHooks, err := metrics.New(reg, metrics.Options{Role: metrics.RoleOperator})
	if err != nil {
		return lossyResult{}, err
	}
	dr, err := startDrone(ids, droneHooks, func(c *link.ServerConfig) {
		// Remember every command id of the run: the default bound (4096 per key for a
		// minute) is for radio rates, not loopback ones.
		c.DedupCapacity = 1 << 18
	})
	if err != nil {
		return lossyResult{}, err
	}
	defer dr.stop()
	proxy, err := lossproxy.Start(lossproxy.Config{Target: dr.server.LocalAddr().String(), Loss: loss, Seed: 1})
	if err != nil {
		return lossyResult{}, err
	}
	defer proxy.Close()
	pilot, err := dialPilot(ctx, ids, 0, proxy.Addr(), pilotHooks, nil)
	if err != nil {
		return lossyResult{}, err
	}
	defer pilot.Close()
	statsBefore := proxy.Stats()

	payload := make([]byte, size)
	r := lossyResult{loss: loss}
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	r.window = d
	for range concurrency {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				ack, err := pilot.CommandWith(ctx, payload, link.CommandOptions{Independent: true}) // many in flight at once
				done := time.Now()
				mu.Lock()
				if err != nil || ack.Status != link.AckOK {
					r.failed++
				} else {
					r.acked++
					if !done.After(deadline) {
						r.inWindow++
					}
					r.attempts += ack.Attempts
					r.rtts = append(r.rtts, ack.RoundTrip)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	st := proxy.Stats()
	r.proxyDrops = st.Dropped - statsBefore.Dropped
	r.proxyTotals = st.Forwarded - statsBefore.Forwarded
	return r, nil
}
