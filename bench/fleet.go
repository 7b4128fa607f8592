package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/dronelink/dronelink/internal/natstest"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/relay"
)

// The fleet mode (issue #16): many drones, each a link.Server in this process, stream
// telemetry to one operator each (a link.Client in this process) and take a command every
// few seconds from it, through the NATS relay on a cluster of nats-server processes on
// loopback, and over direct UDP on loopback as the baseline, one after the other.

// Fleet transports.
const (
	fleetRelay = "relay" // relay.DroneConn as the drone's only socket, relay.OperatorConn for the operator
	fleetUDP   = "udp"   // link.UDPConn each, loopback
)

// fleetKeyBits is the size of the fleet's two RSA keys (one drone key shared by every
// drone, one operator key shared by every operator): the smallest the link accepts, so
// that a thousand handshakes take seconds. The data path never touches RSA.
const fleetKeyBits = 2048

// fleetHeader is the start of every telemetry payload: the send time (nanoseconds since the
// run's start, monotonic), the drone's index and its sequence number.
const fleetHeader = 8 + 4 + 8

// fleetCommandTimeout bounds one command (link.MaxCommandLifetime bounds it too).
const fleetCommandTimeout = 15 * time.Second

// fleetOptions configure the fleet mode.
type fleetOptions struct {
	drones     int
	duration   time.Duration // the measured window
	rate       float64       // telemetry payloads per drone per second
	size       int           // telemetry payload bytes
	every      time.Duration // one command per operator this often, at a random phase
	transports []string
	nodes      int    // nats-server processes
	ramp       int    // drones started, and operators logging in, at once during setup
	rounds     int    // the transports in turn, this many times
	cpuprofile string // if set, a CPU profile of each measured window to cpuprofile.TRANSPORT-ROUND
	sameNode   bool   // each operator on its drone's node (no route between them)
}

// parseFleetTransports checks a comma-separated list of fleet transports.
func parseFleetTransports(s string) ([]string, error) {
	var out []string
	for t := range strings.SplitSeq(s, ",") {
		t = strings.TrimSpace(t)
		if t != fleetRelay && t != fleetUDP {
			return nil, fmt.Errorf("%q is not a fleet transport (relay, udp)", t)
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// check validates the options of an enabled fleet mode.
func (o fleetOptions) check() error {
	switch {
	case o.drones < 1 || o.drones > 20000:
		return errors.New("--fleet must be 0..20000")
	case o.duration <= 0:
		return errors.New("--fleet-duration must be positive")
	case o.rate <= 0 || o.rate > 1000:
		return errors.New("--fleet-rate must be above 0 and at most 1000 per second")
	case o.size < fleetHeader || o.size > link.MaxTelemetryPayload:
		return fmt.Errorf("--fleet-size must be %d..%d (the payload carries a %d-byte send time, drone and sequence number)",
			fleetHeader, link.MaxTelemetryPayload, fleetHeader)
	case o.every <= 0:
		return errors.New("--fleet-command-every must be positive")
	case len(o.transports) == 0:
		return errors.New("--fleet-transport is empty")
	case o.nodes < 1 || o.nodes > 9:
		return errors.New("--fleet-nodes must be 1..9")
	case o.ramp < 1:
		return errors.New("--fleet-ramp must be at least 1")
	case o.rounds < 1:
		return errors.New("--fleet-rounds must be at least 1")
	}
	return nil
}

// fleetResult is one run of the fleet over one transport.
type fleetResult struct {
	transport string
	round     int
	drones    int
	window    time.Duration // telemetry was sent for this long
	offered   float64       // drones × rate, per second
	setup     time.Duration // drones listening, every operator logged in and its first command acknowledged

	sent      uint64 // Broadcast reached the drone's operator
	unsent    uint64 // Broadcast reached nobody (no logged-in session) or failed
	delivered uint64 // payloads the operators' OnTelemetry got
	reordered uint64 // delivered with a sequence number below one delivered before
	foreign   uint64 // payloads of another drone, or too short: must be 0
	linkDrops uint64 // datagrams or messages the link layers refused (replay, decrypt, ...), both sides
	linkDowns uint64 // links that fell silent for three keepalive intervals, both sides
	lat       []time.Duration
	cmdRTT    []time.Duration // Ack.RoundTrip of every acknowledged command
	cmdFailed int

	cpu, idleCPU         time.Duration // this process, over the window and over the idle period
	busy, idleBusy       float64       // the whole machine's busy share over the window and the idle period (-1: unknown)
	steal                float64       // the share the hypervisor took from the machine over the window (in busy)
	natsCPU, natsIdleCPU time.Duration // the nats-server processes (relay only)
	natsCPUKnown         bool
	idleFor              time.Duration
	gcs                  uint32        // collections in this process during the window
	schedP99, schedMax   time.Duration // the Go scheduler's latency over the window (runnable to running), this process

	// Memory per drone, in bytes: drones alone; with their operators logged in; after one
	// command each (the drone's de-duplication table for the operator); after the run.
	heapDrone, heapPair, heapCmd, heapEnd float64
	rssPair, rssEnd                       float64 // resident memory, after setup and after the run

	nats *fleetNATS // relay only
}

// fleetNATS accounts for every datagram through the relay during the window, in each
// direction: what the link layer wrote to the relay conns, what the NATS servers accepted
// from those connections and forwarded to the receiving ones (their /connz counters), and
// what the receiving link layer read.
type fleetNATS struct {
	down, up         natsFlow
	clientDrops      [relay.DropNoResponders + 1]uint64 // the relay's drop hooks, drones and operators together
	disconnects      uint64
	serverSlow       int64 // connections the servers cut as slow consumers (/varz)
	serverSlowRoutes int64
}

// natsFlow is one direction's datagrams.
type natsFlow struct {
	written   uint64 // link.Hooks.PacketSent on the sending ends
	accepted  int64  // the servers' in_msgs of the sending ends' connections
	forwarded int64  // the servers' out_msgs to the receiving ends' connections
	read      uint64 // link.Hooks.PacketReceived on the receiving ends
	slack     uint64 // datagrams written or read while the servers' counters were being read
}

func (f natsFlow) String() string {
	return fmt.Sprintf("written=%d accepted=%d forwarded=%d read=%d never-accepted=%d lost-in-nats=%d lost-after-nats=%d (each ±%d)",
		f.written, f.accepted, f.forwarded, f.read, int64(f.written)-f.accepted, f.accepted-f.forwarded, f.forwarded-int64(f.read), f.slack)
}

// lines are the result's output lines.
func (r *fleetResult) lines() []string {
	slices.Sort(r.lat)
	slices.Sort(r.cmdRTT)
	pct := func(n, of uint64) float64 {
		if of == 0 {
			return 0
		}
		return 100 * float64(n) / float64(of)
	}
	lost := int64(r.sent) - int64(r.delivered)
	head := fmt.Sprintf("fleet %s round=%d drones=%d", r.transport, r.round, r.drones)
	out := []string{
		fmt.Sprintf("%s telemetry: offered=%.0f/s sent=%d unsent=%d delivered=%d (%.3f%%) rate=%.0f/s lost=%d reordered=%d p50=%s p99=%s max=%s link-drops=%d link-downs=%d",
			head, r.offered, r.sent, r.unsent, r.delivered, pct(r.delivered, r.sent), float64(r.delivered)/r.window.Seconds(),
			lost, r.reordered, ms(percentile(r.lat, 0.5)), ms(percentile(r.lat, 0.99)), ms(percentile(r.lat, 1)), r.linkDrops, r.linkDowns),
		fmt.Sprintf("%s commands: acked=%d failed=%d p50=%s p99=%s max=%s",
			head, len(r.cmdRTT), r.cmdFailed, ms(percentile(r.cmdRTT, 0.5)), ms(percentile(r.cmdRTT, 0.99)), ms(percentile(r.cmdRTT, 1))),
	}
	per1k := func(cpu time.Duration) string {
		if r.sent == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1fms", float64(cpu)/float64(time.Millisecond)/(float64(r.sent)/1000))
	}
	idle := func(cpu time.Duration) string {
		return fmt.Sprintf("%.0f%%", 100*cpu.Seconds()/max(r.idleFor.Seconds(), 1e-9))
	}
	natsCPU, natsIdle := "-", "-"
	if r.natsCPUKnown {
		natsCPU, natsIdle = per1k(r.natsCPU), idle(r.natsIdleCPU)
	}
	out = append(out,
		fmt.Sprintf("%s cpu: cpu/1k-msg=%s nats-cpu/1k-msg=%s machine-busy=%s others=%s steal=%s idle-cpu=%s nats-idle-cpu=%s machine-idle-busy=%s others=%s gc=%d sched-p99=%s sched-max=%s setup=%.1fs",
			head, per1k(r.cpu), natsCPU, share(r.busy), others(r.busy, r.cpu+r.natsCPU, r.window), share(r.steal), idle(r.idleCPU), natsIdle,
			share(r.idleBusy), others(r.idleBusy, r.idleCPU+r.natsIdleCPU, r.idleFor), r.gcs, ms(r.schedP99), ms(r.schedMax), r.setup.Seconds()),
		fmt.Sprintf("%s memory: heap/drone=%s heap/pair=%s heap/pair+cmd=%s rss/pair+cmd=%s heap-end/pair=%s rss-end/pair=%s",
			head, kb(r.heapDrone), kb(r.heapPair), kb(r.heapCmd), kb(r.rssPair), kb(r.heapEnd), kb(r.rssEnd)))
	if n := r.nats; n != nil {
		var drops []string
		for reason, c := range n.clientDrops {
			if c > 0 {
				drops = append(drops, fmt.Sprintf("%s=%d", relay.DropReason(reason), c))
			}
		}
		if len(drops) == 0 {
			drops = append(drops, "none")
		}
		out = append(out,
			fmt.Sprintf("%s nats down: %s", head, n.down),
			fmt.Sprintf("%s nats up: %s", head, n.up),
			fmt.Sprintf("%s nats: client-drops=%s disconnects=%d server-slow-consumers=%d (routes %d)",
				head, strings.Join(drops, ","), n.disconnects, n.serverSlow, n.serverSlowRoutes))
	}
	return out
}

// share formats a share of the machine as a percentage, "-" if unknown.
func share(f float64) string {
	if f < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*f)
}

// others is the share of the machine busy with other work than the fleet's (this process
// and the nats-servers) while it used ours over d: other programs, the kernel's work
// charged to nobody, the hypervisor's steal.
func others(busy float64, ours, d time.Duration) string {
	if busy < 0 || d <= 0 {
		return "-"
	}
	return share(max(0, busy-ours.Seconds()/(d.Seconds()*float64(runtime.NumCPU()))))
}

// ticks are the clock ticks of every CPU since boot (/proc/stat): busy (steal included),
// stolen by the hypervisor, and all.
type ticks struct {
	busy, steal, total uint64
	ok                 bool
}

// machineTicks reads the ticks.
func machineTicks() (t ticks) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return t
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return t
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice, already in user and nice]
	for i, f := range fields[1:9] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return ticks{}
		}
		t.total += n
		if i != 3 && i != 4 { // idle, iowait
			t.busy += n
		}
		if i == 7 {
			t.steal = n
		}
	}
	t.ok = true
	return t
}

// shares are the machine's busy and stolen shares from t to later, -1 if unknown.
func (t ticks) shares(later ticks) (busy, steal float64) {
	if !t.ok || !later.ok || later.total <= t.total {
		return -1, -1
	}
	d := float64(later.total - t.total)
	return float64(later.busy-t.busy) / d, float64(later.steal-t.steal) / d
}

// kb formats bytes as kB (10^3 bytes).
func kb(b float64) string { return fmt.Sprintf("%.1fkB", b/1e3) }

// fleetRelayHooks counts the relay's events over a whole side of the fleet.
type fleetRelayHooks struct {
	drops       [relay.DropNoResponders + 1]atomic.Uint64
	disconnects atomic.Uint64
}

func (h *fleetRelayHooks) Connected(string) {}
func (h *fleetRelayHooks) Disconnected()    { h.disconnects.Add(1) }
func (h *fleetRelayHooks) Reconnected()     {}
func (h *fleetRelayHooks) Dropped(r relay.DropReason) {
	if int(r) < len(h.drops) {
		h.drops[r].Add(1)
	}
}

// fleetPackets counts the datagrams of one side of the fleet (every drone, or every
// operator), all kinds together: the link's hooks.
type fleetPackets struct {
	link.NopHooks
	sent, received, drops, downs atomic.Uint64
}

// Dropped implements link.Hooks: a datagram or message the link layer refused.
func (p *fleetPackets) Dropped(link.DropReason) { p.drops.Add(1) }

// LinkState implements link.Hooks: count the links that fell silent.
func (p *fleetPackets) LinkState(up bool) {
	if !up {
		p.downs.Add(1)
	}
}

// PacketSent implements link.Hooks: one datagram written.
func (p *fleetPackets) PacketSent(link.PacketKind, int) { p.sent.Add(1) }

// PacketReceived implements link.Hooks. The link reports each datagram it reads with its
// size, and the application layer each message inside with size 0: only the first count.
func (p *fleetPackets) PacketReceived(_ link.PacketKind, size int) {
	if size > 0 {
		p.received.Add(1)
	}
}

// fleetDrone is one simulated drone.
type fleetDrone struct {
	id     string
	server *link.Server
	addr   netip.AddrPort // what its operator dials
	cancel context.CancelFunc
	done   chan error

	sent, unsent uint64 // written by its sender goroutine only
}

// fleetOperator is one operator and what it measured.
type fleetOperator struct {
	index  uint32
	client *link.Client
	t0     time.Time
	total  *atomic.Uint64 // payloads delivered across the fleet, for settling

	mu        sync.Mutex
	lat       []time.Duration
	delivered uint64
	reordered uint64
	foreign   uint64
	lastSeq   uint64
	cmdRTT    []time.Duration
	cmdFailed int
}

// onTelemetry is the operator's OnTelemetry: one-way latency and sequence of a payload.
func (o *fleetOperator) onTelemetry(p []byte) {
	now := time.Since(o.t0)
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(p) < fleetHeader || binary.LittleEndian.Uint32(p[8:]) != o.index {
		o.foreign++
		return
	}
	o.lat = append(o.lat, now-time.Duration(binary.LittleEndian.Uint64(p)))
	if seq := binary.LittleEndian.Uint64(p[12:]); seq <= o.lastSeq {
		o.reordered++
	} else {
		o.lastSeq = seq
	}
	o.delivered++
	o.total.Add(1)
}

// fleet is one run's drones and operators.
type fleet struct {
	o       fleetOptions
	ids     *identities
	cluster *natstest.Cluster // relay only
	t0      time.Time

	drones    []*fleetDrone
	operators []*fleetOperator
	delivered atomic.Uint64

	dronePackets, operatorPackets fleetPackets
	droneRelay, operatorRelay     fleetRelayHooks
}

// runFleetMode runs the fleet mode: the transports in turn, rounds times, then the
// difference of the command round trip's p99 between the relay and UDP in each round.
func runFleetMode(ctx context.Context, o fleetOptions, w io.Writer) error {
	need := uint64(2*o.drones + 256)
	switch limit, err := raiseFileLimit(need); {
	case err != nil:
		fmt.Fprintf(w, "# open files: %v (the fleet needs about %d)\n", err, need)
	case limit < need:
		fmt.Fprintf(w, "# open files: soft limit %d, at the hard limit, below the %d the fleet needs: expect failures\n", limit, need)
	default:
		fmt.Fprintf(w, "# open files: soft limit %d (set with setrlimit, so the nats-server processes inherit it; the fleet needs about %d)\n", limit, need)
	}
	operatorNode := "the next node: every datagram crosses a route"
	if o.sameNode {
		operatorNode = "the same node (--fleet-same-node: no route)"
	}
	fmt.Fprintf(w, "# fleet: %d drones (a link.Server each, in this process), each streaming %g telemetry payloads/s of %d bytes\n"+
		"# (send time, drone, sequence; Server.Broadcast) to one operator (a link.Client each, in this process), which sends\n"+
		"# a command every %v at a random phase (CommandWith, Independent); %v measured once every operator has logged\n"+
		"# in and sent a first command (setup %d at a time). One RSA-%d drone key for all drones, one operator key for all\n"+
		"# operators, logins a string compare. relay = relay.DroneConn as each drone's only socket (its own NATS\n"+
		"# connection) and relay.OperatorConn for each operator, on a %d-node nats-server cluster on loopback (drone i on\n"+
		"# node i mod %d, its operator on %s); udp = a link.UDPConn each on 127.0.0.1.\n"+
		"# telemetry p50/p99 = one way, Broadcast to OnTelemetry; commands p50/p99 = Ack.RoundTrip; cpu/1k-msg = CPU time\n"+
		"# over the window per 1,000 telemetry payloads sent (this process: getrusage; nats-servers: /proc/PID/stat);\n"+
		"# machine-busy = all CPUs (/proc/stat), others = the part not ours, steal = the hypervisor's; gc = collections in\n"+
		"# this process; sched- = its goroutines' wait from runnable to running; idle-cpu, nats-idle-cpu = before the window,\n"+
		"# the fleet logged in but silent, as a share of one core (machine-idle-busy, others: of all CPUs then); heap = live\n"+
		"# heap after GC, rss = VmRSS after returning free memory, as a difference from before the fleet, per drone (kB = 1000 B)\n",
		o.drones, o.rate, o.size, o.every, o.duration, o.ramp, fleetKeyBits, o.nodes, o.nodes, operatorNode)
	ids, err := newIdentities(fleetKeyBits, 1)
	if err != nil {
		return err
	}
	var cluster *natstest.Cluster
	if slices.Contains(o.transports, fleetRelay) {
		dir, err := os.MkdirTemp("", "dronelink-fleet-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin, err := natstest.BuildServer(dir)
		if err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		cluster, err = natstest.StartCluster(sctx, bin, dir, o.nodes, "")
		cancel()
		if err != nil {
			return err
		}
		defer cluster.Close()
	}
	p99 := map[string][]time.Duration{}
	for round := 1; round <= o.rounds; round++ {
		for _, t := range o.transports {
			r, err := runFleet(ctx, o, ids, cluster, t, round)
			if err != nil {
				return fmt.Errorf("fleet %s round %d: %w", t, round, err)
			}
			for _, l := range r.lines() {
				fmt.Fprintln(w, l)
			}
			p99[t] = append(p99[t], percentile(r.cmdRTT, 0.99))
		}
		if len(p99[fleetRelay]) == round && len(p99[fleetUDP]) == round {
			d := p99[fleetRelay][round-1] - p99[fleetUDP][round-1]
			verdict := "met"
			if d > 10*time.Millisecond {
				verdict = "NOT met"
			}
			fmt.Fprintf(w, "fleet-goal round=%d command p99 relay-udp=%+.2fms (goal: at most 10ms: %s)\n", round, float64(d)/float64(time.Millisecond), verdict)
		}
	}
	return nil
}

// runFleet sets up a fleet over transport, lets it idle, measures it for the window and
// tears it down.
func runFleet(ctx context.Context, o fleetOptions, ids *identities, cluster *natstest.Cluster, transport string, round int) (*fleetResult, error) {
	f := &fleet{o: o, ids: ids, t0: time.Now()}
	if transport == fleetRelay {
		f.cluster = cluster
	}
	r := &fleetResult{transport: transport, round: round, drones: o.drones, offered: float64(o.drones) * o.rate}
	defer f.stop()

	heap0, rss0 := heapAlloc(), selfRSS()
	start := time.Now()
	if err := f.startDrones(transport); err != nil {
		return nil, err
	}
	r.heapDrone = perDrone(heapAlloc(), heap0, o.drones)
	if err := f.startOperators(ctx, transport); err != nil {
		return nil, err
	}
	setup := time.Since(start)
	r.heapPair = perDrone(heapAlloc(), heap0, o.drones)
	start = time.Now()
	if err := f.firstCommands(); err != nil {
		return nil, err
	}
	r.setup = setup + time.Since(start)
	r.heapCmd, r.rssPair = perDrone(heapAlloc(), heap0, o.drones), perDrone(selfRSS(), rss0, o.drones)

	// The fleet logged in and silent: what it costs to keep it so (timers, keepalives,
	// NATS pings).
	r.idleFor = min(3*time.Second, o.duration/4)
	cpu0, nats0, natsOK := f.cpu()
	ticks0 := machineTicks()
	time.Sleep(r.idleFor)
	cpu1, nats1, _ := f.cpu()
	r.idleBusy, _ = ticks0.shares(machineTicks())
	r.idleCPU, r.natsIdleCPU = cpu1-cpu0, nats1-nats0

	// Room for every latency sample, allocated after the memory readings.
	expect := int(o.rate*o.duration.Seconds()*1.1) + 2
	for _, op := range f.operators {
		op.mu.Lock()
		op.lat = make([]time.Duration, 0, expect)
		op.mu.Unlock()
	}
	var snap0 natsSnapshot
	if transport == fleetRelay {
		var err error
		if snap0, err = f.natsSnapshot(ctx); err != nil {
			return nil, err
		}
	}
	drops0 := f.relayDrops()
	linkDrops0 := f.dronePackets.drops.Load() + f.operatorPackets.drops.Load()
	linkDowns0 := f.dronePackets.downs.Load() + f.operatorPackets.downs.Load()
	disc0 := f.droneRelay.disconnects.Load() + f.operatorRelay.disconnects.Load()

	// The window.
	if o.cpuprofile != "" {
		pf, err := os.Create(fmt.Sprintf("%s.%s-%d", o.cpuprofile, transport, round))
		if err != nil {
			return nil, err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return nil, err
		}
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	sched0 := schedLatencies()
	cpu0, nats0, _ = f.cpu()
	ticks0 = machineTicks()
	windowStart := time.Since(f.t0)
	wctx, endWindow := context.WithCancel(ctx)
	var senders, commanders sync.WaitGroup
	period := time.Duration(float64(time.Second) / o.rate)
	for i, d := range f.drones {
		phase := rand.N(period)
		senders.Go(func() { d.stream(wctx, f.t0, i, o.size, phase, period) })
	}
	for _, op := range f.operators {
		phase := rand.N(o.every)
		commanders.Go(func() { op.command(wctx, f.t0.Add(windowStart+phase), o.every) })
	}
	time.Sleep(o.duration)
	endWindow()
	senders.Wait()
	r.window = time.Since(f.t0) - windowStart
	cpu1, nats1, _ = f.cpu()
	r.busy, r.steal = ticks0.shares(machineTicks())
	runtime.ReadMemStats(&ms1)
	r.schedP99, r.schedMax = sched0.since(schedLatencies())
	r.gcs = ms1.NumGC - ms0.NumGC
	if o.cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	r.cpu, r.natsCPU, r.natsCPUKnown = cpu1-cpu0, nats1-nats0, natsOK && transport == fleetRelay
	commanders.Wait()
	settleQuiet(&f.delivered, 300*time.Millisecond, 10*time.Second)
	if transport == fleetRelay {
		// The relay counts NATS's client-side drops once a second (watchDrops): if a
		// datagram written is still missing, give it the time to count them.
		downW, downR := f.dronePackets.sent.Load()-snap0.down.written, f.operatorPackets.received.Load()-snap0.down.read
		upW, upR := f.operatorPackets.sent.Load()-snap0.up.written, f.dronePackets.received.Load()-snap0.up.read
		if downW != downR || upW != upR {
			time.Sleep(1200 * time.Millisecond)
		}
		snap1, err := f.natsSnapshot(ctx)
		if err != nil {
			return nil, err
		}
		n := &fleetNATS{down: snap1.down.minus(snap0.down), up: snap1.up.minus(snap0.up)}
		drops1 := f.relayDrops()
		for i := range n.clientDrops {
			n.clientDrops[i] = drops1[i] - drops0[i]
		}
		n.disconnects = f.droneRelay.disconnects.Load() + f.operatorRelay.disconnects.Load() - disc0
		n.serverSlow, n.serverSlowRoutes = snap1.slow-snap0.slow, snap1.slowRoutes-snap0.slowRoutes
		r.nats = n
	}
	r.linkDrops = f.dronePackets.drops.Load() + f.operatorPackets.drops.Load() - linkDrops0
	r.linkDowns = f.dronePackets.downs.Load() + f.operatorPackets.downs.Load() - linkDowns0
	for _, d := range f.drones {
		r.sent += d.sent
		r.unsent += d.unsent
	}
	sampleBytes := 0
	for _, op := range f.operators {
		op.mu.Lock()
		r.delivered += op.delivered
		r.reordered += op.reordered
		r.foreign += op.foreign
		r.lat = append(r.lat, op.lat...)
		r.cmdRTT = append(r.cmdRTT, op.cmdRTT...)
		r.cmdFailed += op.cmdFailed
		sampleBytes += 8 * (cap(op.lat) + cap(op.cmdRTT))
		op.mu.Unlock()
	}
	// The memory after the run, without this harness's own latency samples.
	sampleBytes += 8 * (cap(r.lat) + cap(r.cmdRTT))
	r.heapEnd = perDrone(max(heapAlloc(), uint64(sampleBytes))-uint64(sampleBytes), heap0, o.drones)
	r.rssEnd = perDrone(selfRSS(), rss0, o.drones)
	if r.foreign > 0 {
		return nil, fmt.Errorf("%d telemetry payloads reached the wrong operator or were cut short", r.foreign)
	}
	return r, nil
}

// perDrone is (now - base) / n in bytes, 0 if memory shrank.
func perDrone(now, base uint64, n int) float64 {
	if now <= base {
		return 0
	}
	return float64(now-base) / float64(n)
}

// selfRSS is this process's VmRSS in bytes once the free memory is returned to the OS
// (so that what an earlier run freed does not count), 0 where /proc cannot tell.
func selfRSS() uint64 {
	debug.FreeOSMemory()
	rss, _, err := readStatus(os.Getpid())
	if err != nil {
		return 0
	}
	return uint64(rss) * 1024
}

// parallel runs fn(0..n-1), width at a time, and returns the first error; after an error
// no new call starts.
func parallel(n, width int, fn func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, width)
	for i := range n {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// nodeURL is the client URL of the node for connection i, round robin.
func (f *fleet) nodeURL(i int) []string {
	return []string{f.cluster.Nodes[i%len(f.cluster.Nodes)].URL}
}

// startDrones starts every drone: its socket and its link.Server.
func (f *fleet) startDrones(transport string) error {
	f.drones = make([]*fleetDrone, f.o.drones)
	auth := newBenchAuth(f.ids)
	droneKey := link.NewDroneKey(f.ids.drone)
	return parallel(f.o.drones, f.o.ramp, func(i int) error {
		d := &fleetDrone{id: fmt.Sprintf("drone-%04d", i), done: make(chan error, 1)}
		var conn link.PacketConn
		switch transport {
		case fleetRelay:
			dc, err := relay.Listen(relay.Config{URLs: f.nodeURL(i), DroneID: d.id, Hooks: &f.droneRelay})
			if err != nil {
				return err
			}
			conn, d.addr = dc, relay.DroneAddr
		default:
			uc, err := link.ListenUDP("127.0.0.1:0")
			if err != nil {
				return err
			}
			conn, d.addr = uc, uc.LocalAddr()
		}
		srv, err := link.NewServer(link.ServerConfig{
			Conn: conn, PSK: f.ids.psk, DroneKey: droneKey, Auth: auth, Handler: acknowledge, Hooks: &f.dronePackets,
		})
		if err != nil {
			conn.Close()
			return err
		}
		d.server = srv
		ctx, cancel := context.WithCancel(context.Background())
		d.cancel = cancel
		go func() { d.done <- srv.Run(ctx) }()
		f.drones[i] = d
		return nil
	})
}

// startOperators logs one operator in to each drone, ramp at a time.
func (f *fleet) startOperators(ctx context.Context, transport string) error {
	f.operators = make([]*fleetOperator, f.o.drones)
	return parallel(f.o.drones, f.o.ramp, func(i int) error {
		d := f.drones[i]
		op := &fleetOperator{index: uint32(i), t0: f.t0, total: &f.delivered}
		var conn link.PacketConn
		switch transport {
		case fleetRelay:
			node := i + 1 // the next node: the datagrams cross a route
			if f.o.sameNode {
				node = i
			}
			oc, err := relay.Dial(relay.Config{URLs: f.nodeURL(node), DroneID: d.id, Hooks: &f.operatorRelay})
			if err != nil {
				return err
			}
			conn = oc
		default:
			uc, err := link.ListenUDP("127.0.0.1:0")
			if err != nil {
				return err
			}
			conn = uc
		}
		dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		c, err := link.Dial(dctx, link.ClientConfig{
			Conn: conn, Drone: d.addr, PSK: f.ids.psk, OperatorKey: f.ids.operators[0], DronePublic: &f.ids.drone.PublicKey,
			User: pilotName, Password: []byte(pilotPassword), Hooks: &f.operatorPackets, OnTelemetry: op.onTelemetry,
		})
		if err != nil {
			conn.Close()
			return fmt.Errorf("operator of %s: %w", d.id, err)
		}
		op.client = c
		f.operators[i] = op
		return nil
	})
}

// firstCommands has every operator send one command, ramp at a time, before the
// measurement: a drone makes its de-duplication table for an operator at the operator's
// first command, once.
func (f *fleet) firstCommands() error {
	return parallel(len(f.operators), f.o.ramp, func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), fleetCommandTimeout)
		defer cancel()
		ack, err := f.operators[i].client.CommandWith(ctx, []byte("first"), link.CommandOptions{Independent: true})
		if err != nil || ack.Status != link.AckOK {
			return fmt.Errorf("first command to %s: %v %v", f.drones[i].id, ack.Status, err)
		}
		return nil
	})
}

// stop closes every operator, then every drone.
func (f *fleet) stop() {
	_ = parallel(len(f.operators), 64, func(i int) error {
		if op := f.operators[i]; op != nil {
			op.client.Close()
		}
		return nil
	})
	_ = parallel(len(f.drones), 64, func(i int) error {
		if d := f.drones[i]; d != nil {
			d.cancel()
			<-d.done
		}
		return nil
	})
}

// stream sends the drone's telemetry from phase on, every period, until ctx ends.
func (d *fleetDrone) stream(ctx context.Context, t0 time.Time, index, size int, phase, period time.Duration) {
	p := make([]byte, size)
	binary.LittleEndian.PutUint32(p[8:], uint32(index))
	t := time.NewTimer(phase)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for seq := uint64(1); ; seq++ {
		binary.LittleEndian.PutUint64(p[12:], seq)
		binary.LittleEndian.PutUint64(p, uint64(time.Since(t0)))
		if n, err := d.server.Broadcast(p); err == nil && n == 1 {
			d.sent++
		} else {
			d.unsent++
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// command sends one command at first and every `every` after it, until ctx ends, and
// records each one's round trip.
func (o *fleetOperator) command(ctx context.Context, first time.Time, every time.Duration) {
	payload := []byte("fleet command")
	t := time.NewTimer(time.Until(first))
	defer t.Stop()
	for next := first; ; {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(context.Background(), fleetCommandTimeout)
		ack, err := o.client.CommandWith(cctx, payload, link.CommandOptions{Independent: true})
		cancel()
		o.mu.Lock()
		if err != nil || ack.Status != link.AckOK {
			o.cmdFailed++
		} else {
			o.cmdRTT = append(o.cmdRTT, ack.RoundTrip)
		}
		o.mu.Unlock()
		next = next.Add(every)
		t.Reset(time.Until(next))
	}
}

// cpu is this process's CPU time and the nats-server processes' (false where /proc
// cannot tell).
func (f *fleet) cpu() (self, nats time.Duration, natsOK bool) {
	self, _ = processCPU()
	if f.cluster == nil {
		return self, 0, false
	}
	natsOK = true
	for _, n := range f.cluster.Nodes {
		c, err := procCPU(n.PID())
		if err != nil {
			natsOK = false
			continue
		}
		nats += c
	}
	return self, nats, natsOK
}

// procCPU is the user and system CPU time of process pid, all its threads, from
// /proc/PID/stat (utime and stime, in clock ticks of USER_HZ = 100 per second, which
// Linux uses on every architecture Go runs on here).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(s[end+1:]) // from field 3 (state) on
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(fields[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * (time.Second / 100), nil
}

// natsCounts are the servers' message counters of one side's connections.
type natsCounts struct{ in, out int64 }

// natsSnapshot is every counter of the datagram flows through the relay at one time, and
// the servers' counts of the connections they cut as slow consumers.
type natsSnapshot struct {
	down, up         natsFlow
	slow, slowRoutes int64
}

// minus is the flow between two snapshots; the slack of both counts.
func (f natsFlow) minus(g natsFlow) natsFlow {
	return natsFlow{written: f.written - g.written, accepted: f.accepted - g.accepted, forwarded: f.forwarded - g.forwarded,
		read: f.read - g.read, slack: f.slack + g.slack}
}

// natsSnapshot reads the link layers' counters, the servers' and the link layers' again.
// The servers cannot be read at the same instant as this process's counters: the
// datagrams written or read meanwhile (keepalives, mostly) are the snapshot's slack.
func (f *fleet) natsSnapshot(ctx context.Context) (natsSnapshot, error) {
	dw, dr := f.dronePackets.sent.Load(), f.dronePackets.received.Load()
	ow, or := f.operatorPackets.sent.Load(), f.operatorPackets.received.Load()
	conns, err := f.connz(ctx)
	if err != nil {
		return natsSnapshot{}, err
	}
	dw2, dr2 := f.dronePackets.sent.Load(), f.dronePackets.received.Load()
	ow2, or2 := f.operatorPackets.sent.Load(), f.operatorPackets.received.Load()
	snap := natsSnapshot{
		down: natsFlow{written: dw, accepted: conns[true].in, forwarded: conns[false].out, read: or, slack: dw2 - dw + or2 - or},
		up:   natsFlow{written: ow, accepted: conns[false].in, forwarded: conns[true].out, read: dr, slack: ow2 - ow + dr2 - dr},
	}
	for _, node := range f.cluster.Nodes {
		var v server.Varz
		if err := node.Monitor(ctx, "/varz", &v); err != nil {
			return natsSnapshot{}, err
		}
		snap.slow += v.SlowConsumers
		if v.SlowConsumersStats != nil {
			snap.slowRoutes += int64(v.SlowConsumersStats.Routes)
		}
	}
	return snap, nil
}

// connz sums the servers' in_msgs and out_msgs over the drones' connections (key true) and
// over the operators' (false), closed ones included (a reconnected end's first connection
// still counts).
func (f *fleet) connz(ctx context.Context) (map[bool]natsCounts, error) {
	sums := map[bool]natsCounts{}
	for _, n := range f.cluster.Nodes {
		for offset := 0; ; {
			var cz server.Connz
			if err := n.Monitor(ctx, fmt.Sprintf("/connz?state=any&limit=1024&offset=%d", offset), &cz); err != nil {
				return nil, err
			}
			for _, c := range cz.Conns {
				drone := strings.HasPrefix(c.Name, "dronelinkd ")
				if !drone && !strings.HasPrefix(c.Name, "dronelink ") {
					continue
				}
				s := sums[drone]
				s.in += c.InMsgs
				s.out += c.OutMsgs
				sums[drone] = s
			}
			offset += len(cz.Conns)
			if len(cz.Conns) == 0 || offset >= cz.Total {
				break
			}
		}
	}
	return sums, nil
}

// relayDrops are the relay's drops so far, drones and operators together.
func (f *fleet) relayDrops() (out [relay.DropNoResponders + 1]uint64) {
	for i := range out {
		out[i] = f.droneRelay.drops[i].Load() + f.operatorRelay.drops[i].Load()
	}
	return out
}

// settleQuiet waits until counter has not moved for quiet (at most limit).
func settleQuiet(counter *atomic.Uint64, quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	last, since := counter.Load(), time.Now()
	for time.Since(since) < quiet && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if n := counter.Load(); n != last {
			last, since = n, time.Now()
		}
	}
}

// schedHistogram is the Go runtime's histogram of scheduling latencies (the time a
// goroutine waited, runnable, for a thread to run it) at one time.
type schedHistogram struct {
	counts  []uint64
	buckets []float64 // seconds: bucket i is [buckets[i], buckets[i+1])
}

// schedLatencies reads /sched/latencies:seconds.
func schedLatencies() schedHistogram {
	sample := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return schedHistogram{}
	}
	h := sample[0].Value.Float64Histogram()
	return schedHistogram{counts: slices.Clone(h.Counts), buckets: h.Buckets}
}

// since is the 99th percentile and the largest latency (each bucket's upper bound) of the
// goroutines scheduled between h and later.
func (h schedHistogram) since(later schedHistogram) (p99, largest time.Duration) {
	if len(h.counts) == 0 || len(later.counts) != len(h.counts) {
		return 0, 0
	}
	diff := make([]uint64, len(h.counts))
	var total uint64
	for i := range diff {
		diff[i] = later.counts[i] - h.counts[i]
		total += diff[i]
	}
	upper := func(i int) time.Duration {
		b := later.buckets[i+1]
		if b > 1e9 { // the last bucket is unbounded
			b = later.buckets[i]
		}
		return time.Duration(b * float64(time.Second))
	}
	var seen uint64
	for i, c := range diff {
		if c == 0 {
			continue
		}
		seen += c
		if p99 == 0 && float64(seen) >= 0.99*float64(total) {
			p99 = upper(i)
		}
		largest = upper(i)
	}
	return p99, largest
}
