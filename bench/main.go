// Command bench is the side-by-side throughput harness: it runs dronelink's real data path
// next to plain Go UDP, pion/dtls v3 (PSK, AES-128-GCM) and wireguard-go on loopback, in one
// invocation, one after another, and prints one line per contender and the ratios of
// dronelink to each. Optional sections measure command goodput over a lossy link, the
// drone's handshake rate and the memory of idle sessions. Two modes run alone: the
// daemon's memory through logins, and a fleet of drones through the NATS relay and over UDP.
//
//	go run ./bench [--duration 2s] [--rounds 3] [--size 64 | --sizes 64,256,1200]
//	               [--contenders LIST] [--batch] [--loss 0.1,0.3] [--loss-duration 10s]
//	               [--delay 20ms] [--baseline=true] [--concurrency 16] [--cold 100 --cold-loss 0.3]
//	               [--handshakes 200] [--rsa-bits 3072,2048]
//	               [--sessions 10000] [--cpuprofile FILE]
//	go run ./bench --daemon-memory 3 [--daemon-bin PATH] [--daemon-flags "..."]
//	               [--argon2 m=65536,t=1,p=2] [--memory-watch 30s]
//	go run ./bench --fleet 1000 [--fleet-duration 30s] [--fleet-rate 10] [--fleet-size 64]
//	               [--fleet-command-every 10s] [--fleet-transport relay,udp] [--fleet-nodes 3]
//	               [--fleet-ramp 32] [--fleet-rounds 1] [--fleet-same-node]
//
// Numbers are noisy (about ±15% between runs on a shared 2-core machine): only ratios
// measured within one run mean anything. See BENCHMARKS.md.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dronelink/dronelink/pkg/link"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// options are the parsed flags.
type options struct {
	duration    time.Duration
	rounds      int
	sizes       []int
	contenders  []string
	losses      []float64
	delay       time.Duration
	baseline    bool
	cold        int
	coldLosses  []float64
	coldTimeout time.Duration
	concurrency int
	lossFor     time.Duration
	handshakes  int
	rsaBits     []int
	sessions    int
	cpuprofile  string
	mavlinkAggs []time.Duration
	mavlinkFor  time.Duration
	daemonMem   daemonMemOptions
	fleet       fleetOptions
}

// defaultContenders run when --contenders is not given; --batch adds the batched variants.
var defaultContenders = []string{"raw-udp", "dronelink", "dronelink-batch", "pion-dtls", "wireguard-go"}

// parseOptions reads the command line.
func parseOptions(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	var err error
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "how long each contender sends")
	fs.IntVar(&o.rounds, "rounds", 3, "run the contenders this many times, interleaved, and report each one's median run")
	size := fs.Int("size", 64, "payload bytes per datagram (one size)")
	sizes := fs.String("sizes", "", "comma-separated payload sizes, e.g. 64,256,1200 (instead of --size)")
	contenders := fs.String("contenders", strings.Join(defaultContenders, ","),
		"comma-separated contenders (empty: no throughput table): "+strings.Join(contenderNames(), ", "))
	batch := fs.Bool("batch", false, "also run the batched variants (raw-udp-batch, wireguard-go-batch)")
	loss := fs.String("loss", "", "comma-separated loss rates for the lossy command mode, e.g. 0.1,0.3 (off if empty)")
	fs.DurationVar(&o.delay, "delay", 0, "one-way delay the lossy proxy adds to every datagram, e.g. 20ms")
	fs.BoolVar(&o.baseline, "baseline", true, "also run the lossy and cold-start modes with the fixed timers (link.ClientConfig.FixedTimers)")
	fs.IntVar(&o.cold, "cold", 0, "cold starts per --cold-loss rate: handshake, argon2id login and one command, as dronelink send (0: off)")
	coldLoss := fs.String("cold-loss", "0.3", "comma-separated loss rates for the cold starts")
	fs.DurationVar(&o.coldTimeout, "cold-timeout", 15*time.Second, "give up on a cold start after this long (dronelink send's default --timeout)")
	fs.IntVar(&o.concurrency, "concurrency", 16, "commands in flight in the lossy mode")
	fs.DurationVar(&o.lossFor, "loss-duration", 10*time.Second, "how long each loss rate keeps commands in flight")
	fs.IntVar(&o.handshakes, "handshakes", 200, "drone-side handshakes per RSA key size (0: skip handshakes)")
	bits := fs.String("rsa-bits", "3072,2048", "drone and operator RSA key sizes for the handshake rate")
	fs.IntVar(&o.sessions, "sessions", 10000, "idle sessions for the memory figure (0: skip)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run to this file (fleet mode: of each measured window, to FILE.TRANSPORT-ROUND)")
	mavAggs := fs.String("mavlink", "", "MAVLink mode: comma-separated aggregation timers, e.g. 0,20ms,50ms (off if empty)")
	fs.DurationVar(&o.mavlinkFor, "mavlink-duration", 5*time.Second, "how long each MAVLink run streams")
	fs.IntVar(&o.daemonMem.logins, "daemon-memory", 0, "daemon memory mode, alone: run dronelinkd and read its resident memory idle, during this many simultaneous logins and after (0: off)")
	fs.StringVar(&o.daemonMem.bin, "daemon-bin", "", "daemon memory mode: the dronelinkd to run (default: build ./cmd/dronelinkd with CGO_ENABLED=0)")
	daemonFlags := fs.String("daemon-flags", "", "daemon memory mode: extra dronelinkd flags, space-separated, e.g. \"--login-workers 2\"")
	argon2Params := fs.String("argon2", "m=65536,t=1,p=2", "daemon memory mode: argon2id parameters of the users' password hashes (m in KiB)")
	fs.DurationVar(&o.daemonMem.watch, "memory-watch", 30*time.Second, "daemon memory mode: how long to keep reading after the logins")
	fs.DurationVar(&o.daemonMem.settle, "memory-settle", 2*time.Second, "daemon memory mode: idle time between the daemon's start and the idle reading")
	fs.IntVar(&o.fleet.drones, "fleet", 0, "fleet mode, alone: this many drones in this process stream telemetry to one operator each and take its commands, through the NATS relay and over UDP (0: off)")
	fs.DurationVar(&o.fleet.duration, "fleet-duration", 30*time.Second, "fleet mode: how long the fleet is measured, after every operator logged in")
	fs.Float64Var(&o.fleet.rate, "fleet-rate", 10, "fleet mode: telemetry payloads per drone per second")
	fs.IntVar(&o.fleet.size, "fleet-size", 64, "fleet mode: telemetry payload bytes")
	fs.DurationVar(&o.fleet.every, "fleet-command-every", 10*time.Second, "fleet mode: each operator sends one command this often, at a random phase")
	fleetTransports := fs.String("fleet-transport", "relay,udp", "fleet mode: comma-separated transports, run in turn: relay (NATS cluster), udp (direct, loopback)")
	fs.IntVar(&o.fleet.nodes, "fleet-nodes", 3, "fleet mode: nats-server processes in the cluster")
	fs.IntVar(&o.fleet.ramp, "fleet-ramp", 32, "fleet mode: drones started, and operators logging in, at once during setup")
	fs.IntVar(&o.fleet.rounds, "fleet-rounds", 1, "fleet mode: run the transports in turn this many times")
	fs.BoolVar(&o.fleet.sameNode, "fleet-same-node", false, "fleet mode: each operator on its drone's nats-server (default: on the next one, across a route)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.fleet.drones != 0 {
		if o.fleet.transports, err = parseFleetTransports(*fleetTransports); err != nil {
			return nil, fmt.Errorf("--fleet-transport: %w", err)
		}
		if err := o.fleet.check(); err != nil {
			return nil, err
		}
		if o.daemonMem.logins > 0 {
			return nil, errors.New("--fleet and --daemon-memory each run alone: use one")
		}
	}
	o.daemonMem.flags = strings.Fields(*daemonFlags)
	if o.daemonMem.argon2, err = parseArgon2(*argon2Params); err != nil {
		return nil, fmt.Errorf("--argon2: %w", err)
	}
	if o.daemonMem.logins < 0 || o.daemonMem.logins > 64 {
		return nil, errors.New("--daemon-memory must be 0..64")
	}
	if o.daemonMem.watch < 0 || o.daemonMem.settle < 0 {
		return nil, errors.New("--memory-watch and --memory-settle must not be negative")
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	sizeSet := false
	fs.Visit(func(f *flag.Flag) { sizeSet = sizeSet || f.Name == "size" })
	switch {
	case *sizes != "" && sizeSet:
		return nil, errors.New("use --size or --sizes, not both")
	case *sizes != "":
		list, err := parseInts(*sizes)
		if err != nil {
			return nil, fmt.Errorf("--sizes: %w", err)
		}
		o.sizes = list
	default:
		o.sizes = []int{*size}
	}
	for _, s := range o.sizes {
		if s < 1 || s > maxPayload {
			return nil, fmt.Errorf("payload size %d outside 1..%d", s, maxPayload)
		}
	}
	if o.duration <= 0 {
		return nil, errors.New("--duration must be positive")
	}
	if o.rounds < 1 {
		return nil, errors.New("--rounds must be at least 1")
	}
	for name := range strings.SplitSeq(*contenders, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if findContender(name) == nil {
			return nil, fmt.Errorf("unknown contender %q (known: %s)", name, strings.Join(contenderNames(), ", "))
		}
		if !slices.Contains(o.contenders, name) {
			o.contenders = append(o.contenders, name)
		}
	}
	if *batch {
		for _, name := range []string{"raw-udp-batch", "wireguard-go-batch"} {
			if !slices.Contains(o.contenders, name) {
				o.contenders = append(o.contenders, name)
			}
		}
	}
	if o.losses, err = parseRates("--loss", *loss); err != nil {
		return nil, err
	}
	if o.coldLosses, err = parseRates("--cold-loss", *coldLoss); err != nil {
		return nil, err
	}
	if o.concurrency < 1 {
		return nil, errors.New("--concurrency must be at least 1")
	}
	if o.delay < 0 || o.delay > 10*time.Second {
		return nil, errors.New("--delay must be 0 to 10s")
	}
	if o.cold < 0 || o.coldTimeout <= 0 {
		return nil, errors.New("--cold must not be negative and --cold-timeout must be positive")
	}
	if o.cold > 0 && len(o.coldLosses) == 0 {
		return nil, errors.New("--cold needs --cold-loss")
	}
	if o.lossFor <= 0 {
		return nil, errors.New("--loss-duration must be positive")
	}
	if o.handshakes < 0 || o.handshakes > maxHandshakes {
		return nil, fmt.Errorf("--handshakes must be 0..%d", maxHandshakes)
	}
	list, err := parseInts(*bits)
	if err != nil {
		return nil, fmt.Errorf("--rsa-bits: %w", err)
	}
	o.rsaBits = list
	if o.sessions < 0 {
		return nil, errors.New("--sessions must not be negative")
	}
	if *mavAggs != "" {
		for f := range strings.SplitSeq(*mavAggs, ",") {
			f = strings.TrimSpace(f)
			if f == "0" {
				f = "0s"
			}
			a, err := time.ParseDuration(f)
			if err != nil || a < 0 || a > time.Second {
				return nil, fmt.Errorf("--mavlink: %q is not an aggregation time of 0 to 1s", f)
			}
			o.mavlinkAggs = append(o.mavlinkAggs, a)
		}
	}
	if o.mavlinkFor <= 0 {
		return nil, errors.New("--mavlink-duration must be positive")
	}
	return o, nil
}

// parseRates parses a comma-separated list of loss rates in [0,1) (none if s is empty).
func parseRates(flag, s string) ([]float64, error) {
	if s == "" {
		return nil, nil
	}
	var out []float64
	for f := range strings.SplitSeq(s, ",") {
		p, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || p < 0 || p >= 1 {
			return nil, fmt.Errorf("%s: %q is not a rate in [0,1)", flag, f)
		}
		out = append(out, p)
	}
	return out, nil
}

// parseInts parses a comma-separated list of positive integers.
func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// run is the whole harness: flags, then each section in turn. It returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	if o.fleet.drones > 0 {
		o.fleet.cpuprofile = o.cpuprofile // the measured windows only, not the setup's RSA
	} else if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if err := runSections(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

// runSections runs every section the options ask for and prints its lines.
func runSections(ctx context.Context, o *options, w io.Writer) error {
	e := &env{}
	printMachine(w, o)
	if o.fleet.drones > 0 {
		// Alone: the fleet takes both cores, and its figures are its own.
		return runFleetMode(ctx, o.fleet, w)
	}
	if o.daemonMem.logins > 0 {
		// Alone: anything else running in this process would share the cores with the
		// daemon and its logins.
		fmt.Fprintf(w, "\n# daemon memory: dronelinkd as its own process; VmRSS from /proc/PID/status before the logins\n"+
			"# (idle, after %v), sampled every %v from the logins on; peak = the larger of the samples and VmHWM\n"+
			"# (hwm, the kernel's high-water mark, which catches a peak between samples); and\n"+
			"# after the last login was answered (1 s, 10 s, end of a %v watch; under30MB = first sample below 30 MB)\n",
			o.daemonMem.settle, rssSampleEvery, o.daemonMem.watch)
		r, err := runDaemonMemory(ctx, o.daemonMem)
		if err != nil {
			return fmt.Errorf("daemon memory: %w", err)
		}
		fmt.Fprintln(w, r.line())
		return nil
	}
	for _, size := range o.sizes {
		if len(o.contenders) == 0 {
			break
		}
		results, notes, err := runThroughput(ctx, e, o.contenders, size, o.duration, o.rounds)
		if err != nil {
			return err
		}
		printTable(w, size, results, notes)
	}
	if len(o.losses) > 0 {
		fmt.Fprintf(w, "\n# lossy link: link.Client.Command through internal/lossproxy (loss each way, delay one way) to a\n"+
			"# link.Server, %d commands in flight for %v; cmd/s = acknowledgements within that time; p50/p99 = round\n"+
			"# trip from first transmission to ack, retransmissions included; tx/cmd = command datagrams per command\n"+
			"# (copies and retransmissions), acks/cmd = the drone's acknowledgement datagrams per command; est- = the\n"+
			"# pilot's estimate at the end. lossy-fixed = the same with the fixed timers (FixedTimers), the baseline\n",
			o.concurrency, o.lossFor)
		for _, p := range o.losses {
			for _, fixed := range []bool{true, false} {
				if fixed && !o.baseline {
					continue
				}
				r, err := runLossy(ctx, e, p, o.delay, o.sizes[0], o.lossFor, o.concurrency, fixed)
				if err != nil {
					return fmt.Errorf("lossy %.0f%%: %w", p*100, err)
				}
				fmt.Fprintln(w, r.line())
			}
		}
	}
	if o.cold > 0 {
		fmt.Fprintf(w, "\n# cold start: as dronelink send, %d times per loss rate: a new link.Client (RSA-%d keys), handshake,\n"+
			"# argon2id login (default parameters), one command, through internal/lossproxy (loss each way, delay\n"+
			"# one way); each run timed from before Dial to the acknowledgement (at most %v). cold-fixed = the fixed\n"+
			"# timers (FixedTimers), interleaved run by run; tx/cmd = command datagrams\n", o.cold, linkKeyBits, o.coldTimeout)
		for _, p := range o.coldLosses {
			adaptive, fixed, err := runCold(ctx, e, p, o.delay, o.cold, o.coldTimeout, o.baseline)
			if err != nil {
				return fmt.Errorf("cold %.0f%%: %w", p*100, err)
			}
			if o.baseline {
				fmt.Fprintln(w, fixed.line())
			}
			fmt.Fprintln(w, adaptive.line())
		}
	}
	if len(o.mavlinkAggs) > 0 {
		fmt.Fprintf(w, "\n# MAVLink: a simulated autopilot streams ATTITUDE 50 Hz, GLOBAL_POSITION_INT 10 Hz, SYS_STATUS 2 Hz\n"+
			"# and HEARTBEAT 1 Hz to a ground station, which sends COMMAND_LONG 1 Hz back, for %v: through the tunnel\n"+
			"# (link.Server + tunnel.Drone, link.Client + tunnel.GCS) at each aggregation timer, and directly over UDP.\n"+
			"# overhead/frame = link bytes per frame beyond the frame itself (downlink); latency = sender to receiver\n",
			o.mavlinkFor)
		r, err := runMAVLink(ctx, e, 0, o.mavlinkFor, true, false)
		if err != nil {
			return fmt.Errorf("mavlink direct: %w", err)
		}
		fmt.Fprintln(w, r.line())
		for _, agg := range o.mavlinkAggs {
			r, err := runMAVLink(ctx, e, agg, o.mavlinkFor, false, false)
			if err != nil {
				return fmt.Errorf("mavlink agg %v: %w", agg, err)
			}
			fmt.Fprintln(w, r.line())
		}
		r, err = runMAVLink(ctx, e, o.mavlinkAggs[len(o.mavlinkAggs)-1], o.mavlinkFor, false, true)
		if err != nil {
			return fmt.Errorf("mavlink flood: %w", err)
		}
		fmt.Fprintln(w, r.line())
	}
	var prebuilt *handshakeSet
	if o.handshakes > 0 {
		fmt.Fprintf(w, "\n# handshakes: drone side = CheckInitiation + AcceptInitiation + NewSession on pre-built\n"+
			"# initiations from %d operator keys, one goroutine; hs/cpu-s = handshakes per CPU-second of the process\n",
			handshakeOperators)
		for _, bits := range o.rsaBits {
			r, set, err := runHandshakes(bits, o.handshakes)
			if err != nil {
				return fmt.Errorf("handshakes rsa-%d: %w", bits, err)
			}
			prebuilt = set
			fmt.Fprintln(w, r.line())
		}
		r, err := runPionHandshakes(ctx, o.duration)
		if err != nil {
			return fmt.Errorf("pion-dtls handshakes: %w", err)
		}
		fmt.Fprintln(w, r.line())
	}
	if o.sessions > 0 || prebuilt != nil {
		fmt.Fprintf(w, "\n# memory of idle sessions: runtime.MemStats.HeapAlloc after GC, before and after\n")
		lines, err := runMemory(ctx, o.sessions, prebuilt)
		if err != nil {
			return fmt.Errorf("memory: %w", err)
		}
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
	return nil
}

// runThroughput runs each contender for one payload size, one after another, rounds
// times (interleaved, so a burst of background load hits every contender alike), and
// keeps each contender's median run by packets per second.
func runThroughput(ctx context.Context, e *env, names []string, size int, d time.Duration, rounds int) ([]result, []string, error) {
	runs := make([][]result, len(names))
	for range rounds {
		for i, name := range names {
			r, err := findContender(name).run(ctx, e, size, d)
			if err != nil {
				return nil, nil, fmt.Errorf("%s (%d B): %w", name, size, err)
			}
			runs[i] = append(runs[i], r)
		}
	}
	var results []result
	var notes []string
	for _, rs := range runs {
		slices.SortFunc(rs, func(a, b result) int { return cmp.Compare(a.pps(), b.pps()) })
		r := rs[len(rs)/2]
		results = append(results, r)
		if r.note != "" {
			notes = append(notes, r.name+": "+r.note)
		}
	}
	return results, notes, nil
}

// contender is one side of the comparison: it sends size-byte payloads one way for d and
// reports what was delivered.
type contender struct {
	name string
	run  func(ctx context.Context, e *env, size int, d time.Duration) (result, error)
}

// contenders in table order.
var contenders = []contender{
	{"raw-udp", runRawUDP},
	{"raw-udp-batch", runRawUDPBatch},
	{"dronelink", func(ctx context.Context, e *env, size int, d time.Duration) (result, error) {
		return runDronelink(ctx, e, size, d, true, 1)
	}},
	{"dronelink-batch", func(ctx context.Context, e *env, size int, d time.Duration) (result, error) {
		return runDronelink(ctx, e, size, d, true, link.BatchSize)
	}},
	{"dronelink-nometrics", func(ctx context.Context, e *env, size int, d time.Duration) (result, error) {
		return runDronelink(ctx, e, size, d, false, 1)
	}},
	{"pion-dtls", runPionDTLS},
	{"wireguard-go", func(ctx context.Context, _ *env, size int, d time.Duration) (result, error) {
		return runWireGuard(ctx, size, d, 1)
	}},
	{"wireguard-go-batch", func(ctx context.Context, _ *env, size int, d time.Duration) (result, error) {
		return runWireGuard(ctx, size, d, wgBatchSize)
	}},
}

func findContender(name string) *contender {
	for i := range contenders {
		if contenders[i].name == name {
			return &contenders[i]
		}
	}
	return nil
}

func contenderNames() []string {
	names := make([]string, len(contenders))
	for i, c := range contenders {
		names[i] = c.name
	}
	return names
}
