package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
)

// maxPayload is the largest payload any contender is asked for: a WireGuard inner packet
// (28 bytes of IPv4 and UDP headers plus the payload) must fit the 1420-byte tunnel MTU.
const maxPayload = wgMTU - innerHeaderSize

// result is one contender's run at one payload size.
type result struct {
	name     string
	size     int           // payload bytes per datagram actually carried
	sent     uint64        // datagrams the sender handed to the contender
	received uint64        // payloads the receiver got
	elapsed  time.Duration // how long the sender sent
	overhead int           // bytes on the wire per datagram minus the payload
	note     string        // what the reader needs to know (clamping, what overhead counts)
}

// pps is delivered payloads per second of sending.
func (r result) pps() float64 { return float64(r.received) / r.elapsed.Seconds() }

// mbps is the delivered payload (goodput) in megabits per second.
func (r result) mbps() float64 { return r.pps() * float64(r.size) * 8 / 1e6 }

// loss is 1 - received/sent, as a percentage.
func (r result) loss() float64 {
	if r.sent == 0 || r.received >= r.sent {
		return 0
	}
	return 100 * (1 - float64(r.received)/float64(r.sent))
}

// line is the contender's table line: NAME pps=N mbps=M overhead=B loss=P%.
func (r result) line() string {
	return fmt.Sprintf("%s pps=%.0f mbps=%.1f overhead=%d loss=%.1f%%", r.name, r.pps(), r.mbps(), r.overhead, r.loss())
}

// printMachine prints what the numbers were measured on.
func printMachine(w io.Writer, o *options) {
	fmt.Fprintf(w, "# machine: %d cores (%s), %s %s/%s, GOMAXPROCS=%d\n",
		runtime.NumCPU(), cpuModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0))
	if o.daemonMem.logins > 0 || o.fleet.drones > 0 {
		return // the daemon memory and fleet modes run alone and describe themselves
	}
	fmt.Fprintf(w, "# loopback 127.0.0.1, sender and receiver in this process sharing the cores, %v per contender\n"+
		"# and round, %d interleaved round(s), each line the contender's median round by pps;\n"+
		"# pps = payloads delivered per second of sending, mbps = payload goodput, overhead = wire bytes per datagram\n"+
		"# minus payload, loss = 1 - received/sent; one datagram per syscall unless the name ends in -batch.\n"+
		"# Noisy (about ±15%% between runs): only ratios within one run count.\n", o.duration, o.rounds)
}

// printTable prints the lines of one payload size and the ratios of dronelink (and of
// dronelink-batch) to the others.
func printTable(w io.Writer, size int, results []result, notes []string) {
	fmt.Fprintf(w, "\n# payload %d bytes\n", size)
	for _, r := range results {
		fmt.Fprintln(w, r.line())
	}
	for _, ours := range results {
		if ours.name != "dronelink" && ours.name != "dronelink-batch" {
			continue
		}
		for _, r := range results {
			if r.name == ours.name || r.pps() == 0 || (ours.name == "dronelink" && r.name == "dronelink-batch") {
				continue
			}
			fmt.Fprintf(w, "ratio %s/%s=%.2f\n", ours.name, r.name, ours.pps()/r.pps())
		}
	}
	for _, n := range notes {
		fmt.Fprintln(w, "# "+n)
	}
}

// cpuModel is the CPU's model name from /proc/cpuinfo, or "unknown CPU".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// drive calls send as fast as it can for d and counts the datagrams it reports sent, then
// waits until the receiver's count settles. It returns the sent count and the sending time.
func drive(d time.Duration, send func() bool, received *atomic.Uint64) (uint64, time.Duration) {
	var stop atomic.Bool
	t := time.AfterFunc(d, func() { stop.Store(true) })
	defer t.Stop()
	var sent uint64
	start := time.Now()
	for !stop.Load() {
		if send() {
			sent++
		}
	}
	elapsed := time.Since(start)
	settle(received)
	return sent, elapsed
}

// settle waits until a receive counter has stopped moving for 30 ms (at most one second),
// so datagrams still in socket buffers when the sender stops are counted.
func settle(received *atomic.Uint64) {
	deadline := time.Now().Add(time.Second)
	last, still := received.Load(), 0
	for still < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		if n := received.Load(); n != last {
			last, still = n, 0
		} else {
			still++
		}
	}
}
