package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dronelink/dronelink/internal/lossproxy"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/metrics"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// lossyResult is the command goodput and round trips over one lossy link.
type lossyResult struct {
	name        string // "lossy", or "lossy-fixed" for the fixed timers (the baseline)
	loss        float64
	delay       time.Duration   // one way
	window      time.Duration   // how long new commands were started
	inWindow    int             // commands acknowledged within the window
	acked       int             // commands acknowledged, in the window or after it
	failed      int             // commands not acknowledged ok
	rtts        []time.Duration // of every acknowledged command
	datagrams   int             // command datagrams of the acknowledged commands, copies included
	acks        float64         // the drone's acknowledgement datagrams
	proxyDrops  uint64
	proxyTotals uint64
	estimate    link.LinkEstimate // the pilot's at the end (adaptive timers only)
}

func (r lossyResult) line() string {
	slices.Sort(r.rtts)
	acked := float64(max(r.acked, 1))
	line := fmt.Sprintf("%s loss=%.0f%% delay=%dms cmd/s=%.0f p50=%s p99=%s acked=%d failed=%d tx/cmd=%.2f acks/cmd=%.2f proxy-dropped=%d/%d",
		r.name, r.loss*100, r.delay.Milliseconds(), float64(r.inWindow)/r.window.Seconds(), ms(percentile(r.rtts, 0.50)),
		ms(percentile(r.rtts, 0.99)), r.acked, r.failed, float64(r.datagrams)/acked, r.acks/acked, r.proxyDrops,
		r.proxyDrops+r.proxyTotals)
	if r.estimate.SRTT > 0 {
		line += fmt.Sprintf(" est-srtt=%s est-rto=%s est-loss=%.1f%%", ms(r.estimate.SRTT), ms(r.estimate.RTO), 100*r.estimate.Loss)
	}
	return line
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

// lossyLink is a drone with metrics behind internal/lossproxy (loss each way, delay one
// way), for the lossy command and cold-start modes.
type lossyLink struct {
	ids   *identities
	reg   *prometheus.Registry
	drone *drone
	proxy *lossproxy.Proxy
}

// startLossyLink starts the drone and the proxy; tune may change the drone's config.
func startLossyLink(e *env, loss float64, delay time.Duration, tune func(*link.ServerConfig)) (*lossyLink, error) {
	ids, err := e.identities()
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	droneHooks, err := metrics.New(reg, metrics.Options{Role: metrics.RoleDrone})
	if err != nil {
		return nil, err
	}
	dr, err := startDrone(ids, droneHooks, tune)
	if err != nil {
		return nil, err
	}
	proxy, err := lossproxy.Start(lossproxy.Config{Target: dr.server.LocalAddr().String(), Loss: loss, Delay: delay, Seed: 1})
	if err != nil {
		dr.stop()
		return nil, err
	}
	return &lossyLink{ids: ids, reg: reg, drone: dr, proxy: proxy}, nil
}

func (l *lossyLink) stop() {
	l.proxy.Close()
	l.drone.stop()
}

// runLossy puts internal/lossproxy (loss rate each way, delay one way) between a
// link.Client and a link.Server, both with metrics, and keeps concurrency commands of size
// bytes in flight with Client.Command for d. Goodput counts the acknowledgements that
// arrived within d; commands still in flight at the end are waited for, so slow
// retransmitted ones count in the round-trip percentiles (no survivor bias). fixed runs
// the client with link.ClientConfig.FixedTimers: the baseline.
func runLossy(ctx context.Context, e *env, loss float64, delay time.Duration, size int, d time.Duration, concurrency int, fixed bool) (lossyResult, error) {
	size = min(size, link.MaxCommandPayload)
	l, err := startLossyLink(e, loss, delay, func(c *link.ServerConfig) {
		// Remember every command id of the run: the default bound (4096 per key for a
		// minute) is for radio rates, not loopback ones.
		c.DedupCapacity = 1 << 18
	})
	if err != nil {
		return lossyResult{}, err
	}
	defer l.stop()
	pilotHooks, err := metrics.New(l.reg, metrics.Options{Role: metrics.RoleOperator})
	if err != nil {
		return lossyResult{}, err
	}
	pilot, err := dialPilot(ctx, l.ids, 0, l.proxy.Addr(), pilotHooks, func(c *link.ClientConfig) { c.FixedTimers = fixed })
	if err != nil {
		return lossyResult{}, err
	}
	defer pilot.Close()
	statsBefore := l.proxy.Stats()
	acksBefore := gatherValue(l.reg, "dronelink_packets_sent_total", metrics.RoleDrone, "ack")

	payload := make([]byte, size)
	r := lossyResult{name: "lossy", loss: loss, delay: delay}
	if fixed {
		r.name = "lossy-fixed"
	}
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
					r.datagrams += ack.Datagrams
					r.rtts = append(r.rtts, ack.RoundTrip)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	st := l.proxy.Stats()
	r.proxyDrops = st.Dropped - statsBefore.Dropped
	r.proxyTotals = st.Forwarded - statsBefore.Forwarded
	r.acks = gatherValue(l.reg, "dronelink_packets_sent_total", metrics.RoleDrone, "ack") - acksBefore
	if !fixed {
		r.estimate = pilot.Estimate()
	}
	return r, nil
}

// coldResult is the time from a cold start to a command's acknowledgement, over runs.
type coldResult struct {
	name                        string // "cold", or "cold-fixed" for the fixed timers
	loss                        float64
	delay                       time.Duration
	totals                      []time.Duration // start to acknowledgement, of the runs acknowledged
	handshakes, logins, command []time.Duration // its parts
	failed                      int
	initiations, commandTx      int // initiations and command datagrams, over every run
}

// coldLimit is the bound for a cold start at 30% loss: 99 in 100 within it.
const coldLimit = 2 * time.Second

func (r coldResult) line() string {
	for _, s := range [][]time.Duration{r.totals, r.handshakes, r.logins, r.command} {
		slices.Sort(s)
	}
	within := 0
	for _, t := range r.totals {
		if t <= coldLimit {
			within++
		}
	}
	runs := len(r.totals) + r.failed
	return fmt.Sprintf("%s loss=%.0f%% delay=%dms runs=%d p50=%s p90=%s p99=%s max=%s within-%v=%d/%d"+
		" handshake-p50=%s login-p50=%s command-p50=%s initiations/run=%.2f tx/cmd=%.2f failed=%d",
		r.name, r.loss*100, r.delay.Milliseconds(), runs, ms(percentile(r.totals, 0.5)), ms(percentile(r.totals, 0.9)),
		ms(percentile(r.totals, 0.99)), ms(percentile(r.totals, 1)), coldLimit, within, runs,
		ms(percentile(r.handshakes, 0.5)), ms(percentile(r.logins, 0.5)), ms(percentile(r.command, 0.5)),
		float64(r.initiations)/float64(max(runs, 1)), float64(r.commandTx)/float64(max(len(r.totals), 1)), r.failed)
}

// runCold measures what "dronelink send" does from a cold start, runs times with the
// adaptive timers and runs times with the fixed ones (interleaved, so background load
// hits both alike): a fresh socket and link.Client (operator key of linkKeyBits), the
// handshake, the login (argon2id with the product's default parameters on the drone) and
// one command, through internal/lossproxy (loss each way, delay one way); each run is
// timed from before Dial to the acknowledgement, and given timeout. Without baseline the
// fixed timers are not run.
func runCold(ctx context.Context, e *env, loss float64, delay time.Duration, runs int, timeout time.Duration, baseline bool) (adaptive, fixed coldResult, err error) {
	ids, err := e.identities()
	if err != nil {
		return coldResult{}, coldResult{}, err
	}
	hash, err := userdb.HashPassword([]byte(pilotPassword), userdb.DefaultParams)
	if err != nil {
		return coldResult{}, coldResult{}, err
	}
	l, err := startLossyLink(e, loss, delay, func(c *link.ServerConfig) {
		c.Auth = &benchAuth{keys: newBenchAuth(ids).keys, hash: hash}
		// Back-to-back cold starts of one operator key: the per-key handshake limit (5 per
		// second) and session limit (8: a session whose close message was lost stays for
		// the idle timeout, a minute) are for a key's holder hammering the drone, not what
		// is measured here.
		c.KeyHandshakeRate, c.KeyHandshakeBurst = 1e6, 1<<20
		c.MaxSessionsPerKey = 1 << 10
	})
	if err != nil {
		return coldResult{}, coldResult{}, err
	}
	defer l.stop()
	adaptive = coldResult{name: "cold", loss: loss, delay: delay}
	fixed = coldResult{name: "cold-fixed", loss: loss, delay: delay}
	payload := []byte("land")
	for range runs {
		for _, r := range []*coldResult{&adaptive, &fixed} {
			if r == &fixed && !baseline {
				continue
			}
			if err := ctx.Err(); err != nil {
				return adaptive, fixed, err
			}
			r.run(ctx, l, payload, timeout)
		}
	}
	return adaptive, fixed, nil
}

// run is one cold start.
func (r *coldResult) run(ctx context.Context, l *lossyLink, payload []byte, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var established, loggedIn, initiations atomic.Int64
	start := time.Now()
	pilot, err := dialPilot(ctx, l.ids, 0, l.proxy.Addr(), nil, func(c *link.ClientConfig) {
		c.FixedTimers = r.name == "cold-fixed"
		c.Hooks = initiationCounter{n: &initiations}
		c.OnEvent = func(e link.Event) { // runs with the client's lock held: record only
			switch e.Kind {
			case link.EventEstablished:
				established.CompareAndSwap(0, int64(time.Since(start)))
			case link.EventLoggedIn:
				loggedIn.CompareAndSwap(0, int64(time.Since(start)))
			}
		}
	})
	r.initiations += int(initiations.Load()) // a session this short is never rekeyed
	if err != nil {
		r.failed++
		return
	}
	defer pilot.Close()
	ack, err := pilot.Command(ctx, payload)
	total := time.Since(start)
	if err != nil || ack.Status != link.AckOK {
		r.failed++
		return
	}
	hs, li := time.Duration(established.Load()), time.Duration(loggedIn.Load())
	r.totals = append(r.totals, total)
	r.handshakes = append(r.handshakes, hs)
	r.logins = append(r.logins, li-hs)
	r.command = append(r.command, total-li)
	r.commandTx += ack.Datagrams
}

// initiationCounter counts the initiations a client sends.
type initiationCounter struct {
	link.NopHooks
	n *atomic.Int64
}

// PacketSent implements link.Hooks.
func (c initiationCounter) PacketSent(kind link.PacketKind, _ int) {
	if kind == link.KindInitiation {
		c.n.Add(1)
	}
}
