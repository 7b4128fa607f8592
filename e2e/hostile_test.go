package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

// Directions through the man in the middle.
const (
	toDrone    = 0
	toOperator = 1
)

type datagram struct {
	dir    int
	client netip.AddrPort
	data   []byte
}

// mitm is a man-in-the-middle UDP proxy between operators and the drone: it records every
// datagram, can hold back or drop them, and can inject forged ones as if from an operator.
type mitm struct {
	t      *testing.T
	conn   *net.UDPConn
	drone  netip.AddrPort
	mu     sync.Mutex
	flows  map[netip.AddrPort]*net.UDPConn
	log    []datagram
	filter func(d datagram) bool // false: do not forward
	wg     sync.WaitGroup
}

func newMITM(t *testing.T, drone string) *mitm {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	m := &mitm{t: t, conn: c, drone: netip.MustParseAddrPort(drone), flows: map[netip.AddrPort]*net.UDPConn{}}
	m.wg.Go(m.fromOperators)
	t.Cleanup(m.close)
	return m
}

func (m *mitm) addr() string { return m.conn.LocalAddr().String() }

func (m *mitm) close() {
	m.conn.Close()
	m.mu.Lock()
	for _, f := range m.flows {
		f.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

func (m *mitm) setFilter(f func(d datagram) bool) {
	m.mu.Lock()
	m.filter = f
	m.mu.Unlock()
}

// pass records d and reports whether to forward it.
func (m *mitm) pass(d datagram) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, datagram{d.dir, d.client, bytes.Clone(d.data)})
	return m.filter == nil || m.filter(d)
}

func (m *mitm) fromOperators() {
	buf := make([]byte, 65536)
	for {
		n, client, err := m.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		flow := m.flow(client)
		if flow != nil && m.pass(datagram{toDrone, client, buf[:n]}) {
			flow.Write(buf[:n])
		}
	}
}

// flow is the upstream socket of one operator: the drone sees it as that operator.
func (m *mitm) flow(client netip.AddrPort) *net.UDPConn {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.flows[client]; f != nil {
		return f
	}
	f, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(m.drone))
	if err != nil {
		return nil
	}
	m.flows[client] = f
	m.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, err := f.Read(buf)
			if err != nil {
				if strings.Contains(err.Error(), "closed") {
					return
				}
				continue
			}
			if m.pass(datagram{toOperator, client, buf[:n]}) {
				m.conn.WriteToUDPAddrPort(buf[:n], client)
			}
		}
	})
	return f
}

// recorded returns the recorded datagrams in one direction of one type.
func (m *mitm) recorded(dir int, typ byte) []datagram {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []datagram
	for _, d := range m.log {
		if d.dir == dir && len(d.data) > 0 && d.data[0] == 0x10|typ {
			out = append(out, d)
		}
	}
	return out
}

// injectAs sends pkt to the drone from the operator's own upstream socket.
func (m *mitm) injectAs(client netip.AddrPort, pkt []byte) {
	m.flow(client).Write(pkt)
}

// attacker is a socket of its own.
func attacker(t *testing.T, to string) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// hostileDrone starts a daemon with metrics and returns a scrape function.
func hostileDrone(t *testing.T, f *fleet, extra ...string) (*drone, func() map[string]float64) {
	t.Helper()
	metricsAddr := freePort(t)
	d := startDrone(t, f, append([]string{"--metrics", metricsAddr}, extra...)...)
	return d, func() map[string]float64 {
		s, _ := scrape(t, "http://"+metricsAddr+"/metrics")
		return s
	}
}

func drops(s map[string]float64, reason string) float64 {
	return sum(s, "dronelink_dropped_packets_total", `reason="`+reason+`"`)
}

func work(s map[string]float64) float64 { return sum(s, "dronelink_handshake_operations_total") }

// sendVia runs dronelink send through the man in the middle.
func (f *fleet) sendVia(t *testing.T, m *mitm, user, password string, message string, extra ...string) result {
	t.Helper()
	args := []string{"send", "--drone", m.addr(), "--drone-pub", f.path("drone.key.pub"), "--key", f.path(user + ".key"),
		"--psk", f.path("psk"), "--user", user, "--password-file", f.path(password)}
	return run(t, "", "dronelink", append(append(args, extra...), message)...)
}

// Record a whole session, then replay all of it, from the operator's address and from
// another: nothing executes twice, and the replayed initiations cost no RSA.
func TestHostileReplayWholeSession(t *testing.T) {
	f := newFleet(t)
	d, metrics := hostileDrone(t, f)
	m := newMITM(t, d.addr)
	if r := f.sendVia(t, m, "alice", "alice.pw", "arm motors"); r.code != 0 {
		t.Fatalf("send: %d %s", r.code, r.stderr)
	}
	before := metrics()
	session := append(m.recorded(toDrone, link.TypeInitiation), m.recorded(toDrone, link.TypeData)...)
	evil := attacker(t, d.addr)
	for round := range 3 {
		for _, dg := range session {
			if round == 0 {
				m.injectAs(dg.client, dg.data)
			} else {
				evil.Write(dg.data)
			}
		}
	}
	inits := float64(3 * len(m.recorded(toDrone, link.TypeInitiation)))
	var after map[string]float64
	waitFor(t, "the replays to be dropped", func() bool {
		after = metrics()
		return drops(after, "stale")-drops(before, "stale") >= inits
	})
	time.Sleep(200 * time.Millisecond)
	after = metrics()
	if d.executed("arm motors") != 1 {
		t.Fatalf("replayed session executed the command %d times", d.executed("arm motors"))
	}
	if w := work(after) - work(before); w != 0 {
		t.Errorf("replayed initiations cost %v RSA/X25519 operations", w)
	}
	t.Logf("replayed %d datagrams x3: stale +%v, unknown_session +%v, replay +%v", len(session),
		drops(after, "stale")-drops(before, "stale"), drops(after, "unknown_session")-drops(before, "unknown_session"),
		drops(after, "replay")-drops(before, "replay"))
}

// The drone's own datagrams reflected back to it are rejected; the operator is unaffected.
func TestHostileReflection(t *testing.T) {
	f := newFleet(t)
	d, metrics := hostileDrone(t, f)
	m := newMITM(t, d.addr)
	var reflected atomic.Int64
	m.setFilter(func(dg datagram) bool {
		if dg.dir == toOperator {
			reflected.Add(1)
			go m.injectAs(dg.client, bytes.Clone(dg.data))
		}
		return true
	})
	if r := f.sendVia(t, m, "alice", "alice.pw", "reflect me"); r.code != 0 {
		t.Fatalf("send under reflection: %d %s", r.code, r.stderr)
	}
	waitFor(t, "the reflections to be dropped", func() bool {
		s := metrics()
		return drops(s, "unexpected")+drops(s, "decrypt")+drops(s, "unknown_session")+drops(s, "malformed") >= float64(reflected.Load())
	})
	if d.executed("reflect me") != 1 {
		t.Fatalf("executed %d times", d.executed("reflect me"))
	}
}

// A datagram of one session spliced into another (its receiver index rewritten) fails
// authentication.
func TestHostileSplice(t *testing.T) {
	f := newFleet(t)
	d, metrics := hostileDrone(t, f)
	m := newMITM(t, d.addr)
	for _, u := range []string{"alice", "olga"} {
		cmd := exec.Command(filepath.Join(binDir, "dronelink"), "listen", "--drone", m.addr(), "--drone-pub", f.path("drone.key.pub"),
			"--key", f.path(u+".key"), "--psk", f.path("psk"), "--user", u, "--password-file", f.path(u+".pw"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	// Each operator's first data datagram names its session's drone-side index.
	var a, o []byte
	waitFor(t, "both sessions", func() bool {
		clients := map[netip.AddrPort][]byte{}
		for _, dg := range m.recorded(toDrone, link.TypeData) {
			if clients[dg.client] == nil {
				clients[dg.client] = dg.data
			}
		}
		if len(clients) < 2 {
			return false
		}
		for _, p := range clients {
			if a == nil {
				a = p
			} else {
				o = p
			}
		}
		return true
	})
	before := metrics()
	spliced := bytes.Clone(a)
	copy(spliced[1:3], o[1:3])
	if bytes.Equal(spliced, a) {
		t.Skip("both sessions got the same index by chance")
	}
	attacker(t, d.addr).Write(spliced)
	waitFor(t, "the spliced datagram to fail authentication", func() bool {
		return drops(metrics(), "decrypt") > drops(before, "decrypt")
	})
}

// Every bit flip of a held command datagram is rejected, truncations and extensions too;
// the genuine datagram then executes once.
func TestHostileBitFlipsTruncationExtension(t *testing.T) {
	f := newFleet(t)
	d, metrics := hostileDrone(t, f)
	m := newMITM(t, d.addr)
	const message = "flip-test: climb to 120 m"
	cmdLen := link.DataOverhead + link.CommandHeaderSize + len(message)
	var held atomic.Pointer[datagram]
	var release atomic.Bool
	m.setFilter(func(dg datagram) bool {
		if dg.dir != toDrone || len(dg.data) != cmdLen || release.Load() {
			return true
		}
		if held.Load() == nil {
			c := datagram{dg.dir, dg.client, bytes.Clone(dg.data)}
			held.Store(&c)
		}
		return false // hold the command and its retransmissions
	})
	done := make(chan result, 1)
	go func() { done <- f.sendVia(t, m, "alice", "alice.pw", message, "--timeout", "60s") }()
	waitFor(t, "the command datagram", func() bool { return held.Load() != nil })
	pkt := held.Load()
	before := metrics()
	var forged [][]byte
	for bit := range len(pkt.data) * 8 {
		p := bytes.Clone(pkt.data)
		p[bit/8] ^= 1 << (bit % 8)
		forged = append(forged, p)
	}
	for _, cut := range []int{1, 2, 16, 17, len(pkt.data) - 8} {
		forged = append(forged, pkt.data[:len(pkt.data)-cut])
	}
	forged = append(forged, append(bytes.Clone(pkt.data), 0), append(bytes.Clone(pkt.data), make([]byte, 100)...))
	for i, p := range forged {
		m.injectAs(pkt.client, p)
		if i%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	total := func(s map[string]float64) float64 { return sum(s, "dronelink_dropped_packets_total") }
	waitFor(t, "every forgery to be dropped", func() bool { return total(metrics())-total(before) >= float64(len(forged)) })
	if n := d.executed(message); n != 0 {
		t.Fatalf("a forged datagram executed the command")
	}
	release.Store(true)
	r := <-done
	if r.code != 0 {
		t.Fatalf("send after release: %d %s", r.code, r.stderr)
	}
	if n := d.executed(message); n != 1 {
		t.Fatalf("executed %d times", n)
	}
	t.Logf("%d forgeries dropped", len(forged))
}

// A telemetry datagram held back past the replay window is rejected by the operator and
// never printed; the ones inside the window all arrive.
func TestHostileReorderBeyondWindow(t *testing.T) {
	f := newFleet(t)
	d, _ := hostileDrone(t, f)
	m := newMITM(t, d.addr)
	var heldPkt atomic.Pointer[datagram]
	var passed atomic.Int64
	m.setFilter(func(dg datagram) bool {
		if dg.dir != toOperator || len(dg.data) == 0 || dg.data[0] != 0x14 || len(dg.data) != link.DataOverhead+1+len("t-0000") {
			return true
		}
		if heldPkt.Load() == nil {
			c := datagram{dg.dir, dg.client, bytes.Clone(dg.data)}
			heldPkt.Store(&c)
			return false
		}
		passed.Add(1)
		return true
	})
	cmd := exec.Command(filepath.Join(binDir, "dronelink"), "listen", "--drone", m.addr(), "--drone-pub", f.path("drone.key.pub"),
		"--key", f.path("olga.key"), "--psk", f.path("psk"), "--user", "olga", "--password-file", f.path("olga.pw"))
	var out bytes.Buffer
	var mu sync.Mutex
	cmd.Stdout = lockedWriter{&mu, &out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	feed := attacker(t, d.tin)
	waitFor(t, "the observer to log in", func() bool {
		_, e := d.output()
		return strings.Contains(e, "user=olga")
	})
	const n = 2300 // more than the 2048-packet window
	for i := range n {
		fmt.Fprintf(feed, "t-%04d", i)
		if i%64 == 0 {
			time.Sleep(2 * time.Millisecond) // let the operator keep up
		}
	}
	waitFor(t, "the stream", func() bool { return passed.Load() >= n-1-200 })
	time.Sleep(300 * time.Millisecond)
	held := heldPkt.Load()
	counter := binary.BigEndian.Uint32(held.data[3:7])
	m.conn.WriteToUDPAddrPort(held.data, held.client)
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	printed := out.String()
	mu.Unlock()
	first := strings.SplitN(printed, "\n", 2)[0]
	if strings.Count(printed, "\n") < n-300 {
		t.Fatalf("only %d of %d telemetry lines printed", strings.Count(printed, "\n"), n)
	}
	// The held datagram carried the first t-xxxx payload after login; it must not appear.
	if strings.Count(printed, first+"\n") != 1 {
		t.Fatalf("%q printed %d times", first, strings.Count(printed, first+"\n"))
	}
	t.Logf("held datagram with counter %d released after %d later datagrams: not printed", counter, passed.Load())
}

// Floods of wrong-PSK initiations and random garbage at full speed cost the drone no RSA,
// X25519 or argon2, and a legitimate operator still completes a command meanwhile.
func TestHostileFloods(t *testing.T) {
	f := newFleet(t)
	d, metrics := hostileDrone(t, f)
	before := metrics()
	var otherPSK crypto.PSK
	rand.Read(otherPSK[:])
	key, _ := crypto.LoadPrivateKey(f.path("alice.key"))
	dronePub, _ := crypto.LoadPublicKey(f.path("drone.key.pub"))
	var inits [][]byte
	for i := range 8 {
		h, err := link.NewInitiator(link.InitiatorConfig{PSK: otherPSK, OperatorKey: key, DronePublic: dronePub}, uint16(i+1), 0)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := h.Initiation(time.Now())
		inits = append(inits, p)
	}
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			c := attacker(t, d.addr)
			junk := make([]byte, 1400)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if w == 0 {
					c.Write(inits[i%len(inits)])
				} else {
					rand.Read(junk[:64])
					c.Write(junk[:1+i%len(junk)])
				}
				sent.Add(1)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	r := f.send(t, d, "alice", "alice", "alice.pw", "during the flood", "--timeout", "60s")
	close(stop)
	wg.Wait()
	if r.code != 0 {
		t.Fatalf("legitimate command during the flood: %d %s", r.code, r.stderr)
	}
	after := metrics()
	if w := work(after) - work(before); w > 3*4 { // one handshake, or a few retries, of alice's
		t.Errorf("flood caused %v RSA/X25519 operations", w)
	}
	if l := sum(after, "dronelink_logins_total") - sum(before, "dronelink_logins_total"); l > 2 {
		t.Errorf("%v logins during the flood", l)
	}
	t.Logf("flood: %d datagrams sent, %v dropped (bad_mac %v, malformed %v), %v handshake operations",
		sent.Load(), sum(after, "dronelink_dropped_packets_total")-sum(before, "dronelink_dropped_packets_total"),
		drops(after, "bad_mac"), drops(after, "malformed"), work(after)-work(before))
}

// Password guessing is rate limited per user and per operator key: at most the burst of 5
// attempts, then 1 per second.
func TestHostileLoginBruteForce(t *testing.T) {
	f := newFleet(t)
	d, metrics := hostileDrone(t, f)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			pw := f.path(fmt.Sprintf("guess%d.pw", i))
			writeFile(t, pw, fmt.Sprintf("guess %d\n", i))
			f.send(t, d, "alice", "alice", filepath.Base(pw), "guessing", "--timeout", "3s")
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	s := metrics()
	wrong := sum(s, "dronelink_logins_total", `result="wrong_password"`)
	limited := sum(s, "dronelink_logins_total", `result="rate_limited"`)
	if allowed := 5 + elapsed.Seconds()*1 + 1; wrong > allowed {
		t.Errorf("%v password checks in %v, more than the burst of 5 plus 1/s", wrong, elapsed)
	}
	if limited == 0 {
		t.Error("no attempt was rate limited")
	}
	if d.executed("guessing") != 0 {
		t.Fatal("a guess executed a command")
	}
	t.Logf("12 guessers for %v: %v password checks, %v rate limited", elapsed.Round(time.Millisecond), wrong, limited)
}
