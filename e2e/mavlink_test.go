package e2e

// End-to-end tests of the MAVLink tunnel: the real dronelinkd and dronelink gcs, with a
// MAVLink implementation nobody here wrote (node-mavlink, e2e/mavlinkpeer) as both the
// autopilot and the ground station.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/internal/lossproxy"
)

// needNode skips (or on CI fails) without node and the peer's npm packages.
func needNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat("mavlinkpeer/node_modules/node-mavlink/package.json")
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node-mavlink is not installed (%v) and CI is set: .ci/run must run npm ci in e2e/mavlinkpeer", err)
		}
		t.Skipf("node or node-mavlink missing (%v): run npm ci in e2e/mavlinkpeer", err)
	}
	return node
}

// mavFrame is one frame a peer received, as node-mavlink parsed it.
type mavFrame struct {
	MsgID    uint32         `json:"msgid"`
	Name     string         `json:"name"`
	SysID    int            `json:"sysid"`
	Hex      string         `json:"hex"`
	Signed   bool           `json:"signed"`
	CRCError bool           `json:"crcError"`
	Fields   map[string]any `json:"fields"`
}

// mavPeer is a running node-mavlink endpoint (e2e/mavlinkpeer/peer.js).
type mavPeer struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	addr   string
	mu     sync.Mutex
	frames []mavFrame
	dgrams int
	events []map[string]any
	done   chan struct{}
}

// startPeer runs peer.js with args (--role, --bind, --remote ...) and waits until it is bound.
func startPeer(t *testing.T, name string, args ...string) *mavPeer {
	t.Helper()
	node := needNode(t)
	p := &mavPeer{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(node, append([]string{filepath.Join("mavlinkpeer", "peer.js")}, args...)...)
	p.cmd.Stderr = os.Stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct {
				Ready  string         `json:"ready"`
				Dgram  string         `json:"dgram"`
				Frames []mavFrame     `json:"frames"`
				Other  map[string]any `json:"-"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line.Ready != "" {
				ready <- line.Ready
				continue
			}
			var ev map[string]any
			_ = json.Unmarshal(sc.Bytes(), &ev)
			p.mu.Lock()
			if line.Dgram != "" {
				p.dgrams++
				p.frames = append(p.frames, line.Frames...)
			} else {
				p.events = append(p.events, ev)
			}
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
		}
		p.cmd.Wait()
	})
	select {
	case p.addr = <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start", name)
	}
	return p
}

// do sends one command line to the peer.
func (p *mavPeer) do(cmd map[string]any) {
	p.t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

// sendMsg builds and sends one message of node-mavlink class name with fields; it returns
// the frame's bytes (hex) as the peer built them.
func (p *mavPeer) sendMsg(name string, fields map[string]any, opts ...string) string {
	p.t.Helper()
	p.mu.Lock()
	before := len(p.events)
	p.mu.Unlock()
	cmd := map[string]any{"send": name, "fields": fields}
	for _, o := range opts {
		switch o {
		case "signed":
			cmd["signed"] = true
		case "v1":
			cmd["version"] = 1
		}
	}
	p.do(cmd)
	var sent string
	waitFor(p.t, p.name+" to send "+name, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.events[before:] {
			if s, ok := e["sent"].(string); ok {
				sent = s
				return true
			}
		}
		return false
	})
	return sent
}

// received returns a copy of the frames received so far.
func (p *mavPeer) received() []mavFrame {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]mavFrame(nil), p.frames...)
}

// count counts received frames matching pred.
func (p *mavPeer) count(pred func(f mavFrame) bool) int {
	n := 0
	for _, f := range p.received() {
		if pred(f) {
			n++
		}
	}
	return n
}

// waitFrame waits until a received frame matches pred.
func (p *mavPeer) waitFrame(what string, pred func(f mavFrame) bool) mavFrame {
	p.t.Helper()
	var got mavFrame
	waitFor(p.t, p.name+" to receive "+what, func() bool {
		for _, f := range p.received() {
			if pred(f) {
				got = f
				return true
			}
		}
		return false
	})
	return got
}

func hexIs(h string) func(mavFrame) bool { return func(f mavFrame) bool { return f.Hex == h } }

func isMsg(id uint32) func(mavFrame) bool { return func(f mavFrame) bool { return f.MsgID == id } }

func fieldNum(f mavFrame, name string) float64 {
	v, _ := f.Fields[name].(float64)
	return v
}

// gcsTool is a running dronelink gcs.
type gcsTool struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder
	done   chan error
}

func (g *gcsTool) errors() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stderr.String()
}

type gcsWriter struct{ g *gcsTool }

func (w gcsWriter) Write(p []byte) (int, error) {
	transcript.output(p)
	w.g.mu.Lock()
	defer w.g.mu.Unlock()
	return w.g.stderr.Write(p)
}

// startGCS runs dronelink gcs with args and waits until its link is up.
func startGCS(t *testing.T, args ...string) *gcsTool {
	t.Helper()
	g := &gcsTool{done: make(chan error, 1)}
	g.cmd = exec.Command(filepath.Join(binDir, "dronelink"), append([]string{"gcs"}, args...)...)
	g.cmd.Stderr = gcsWriter{g}
	g.cmd.Stdout = gcsWriter{g}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.done <- g.cmd.Wait() }()
	t.Cleanup(func() {
		if g.cmd.ProcessState == nil {
			g.cmd.Process.Signal(os.Interrupt)
			select {
			case err := <-g.done:
				if err != nil {
					t.Errorf("dronelink gcs: %v\n%s", err, g.errors())
				}
			case <-time.After(10 * time.Second):
				g.cmd.Process.Kill()
				t.Errorf("dronelink gcs did not stop on SIGINT")
			}
		}
	})
	waitFor(t, "dronelink gcs to log in", func() bool {
		select {
		case err := <-g.done:
			t.Fatalf("dronelink gcs exited: %v\n%s", err, g.errors())
		default:
		}
		return strings.Contains(g.errors(), "link up")
	})
	return g
}

// tunnelRig is a drone with the tunnel on, its autopilot, and the fleet.
type tunnelRig struct {
	f         *fleet
	d         *drone
	autopilot *mavPeer
	mavAddr   string
}

// newTunnelRig starts dronelinkd --mavlink-listen and an autopilot that talks to it first
// (a heartbeat), as an autopilot behind mavlink-router's client endpoint would.
func newTunnelRig(t *testing.T, extra ...string) *tunnelRig {
	t.Helper()
	needNode(t)
	r := &tunnelRig{f: newFleet(t), mavAddr: freePort(t)}
	r.d = startDrone(t, r.f, append([]string{"--mavlink-listen", r.mavAddr}, extra...)...)
	r.autopilot = startPeer(t, "autopilot", "--role", "autopilot", "--remote", r.mavAddr)
	r.autopilot.sendMsg("Heartbeat", map[string]any{"type": 2, "autopilot": 3, "systemStatus": 4})
	return r
}

// gcsFor starts a ground station peer and dronelink gcs for user towards it; drone is
// where gcs sends (the drone or a proxy in front of it).
func (r *tunnelRig) gcsFor(t *testing.T, user, drone string, extra ...string) (*mavPeer, *gcsTool) {
	t.Helper()
	return r.gcsVia(t, user, []string{"--drone", drone}, extra...)
}

// gcsVia is gcsFor with the flags that say how to reach the drone (--drone, or the relay's).
func (r *tunnelRig) gcsVia(t *testing.T, user string, reach []string, extra ...string) (*mavPeer, *gcsTool) {
	t.Helper()
	station := startPeer(t, "ground station of "+user, "--role", "gcs", "--bind", "127.0.0.1:0")
	args := append(append(reach[:len(reach):len(reach)], "--drone-pub", r.f.path("drone.key.pub"), "--key", r.f.path(user+".key"),
		"--psk", r.f.path("psk"), "--user", user, "--password-file", r.f.path(user+".pw"), "--to", station.addr), extra...)
	g := startGCS(t, args...)
	// A ground station that listens learns where the tunnel is from the first frame it gets,
	// as QGroundControl does from the autopilot's heartbeat.
	waitFor(t, "the autopilot's heartbeat at the ground station of "+user, func() bool {
		r.autopilot.do(map[string]any{"send": "Heartbeat", "fields": map[string]any{"type": 2, "autopilot": 3}})
		return waitUntil(200*time.Millisecond, func() bool { return station.count(isMsg(0)) > 0 })
	})
	return station, g
}

var (
	armFields  = map[string]any{"command": 400, "targetSystem": 1, "targetComponent": 1, "_param1": 1}
	listFields = map[string]any{"targetSystem": 1, "targetComponent": 1}
)

// A pilot's ground station and the autopilot see each other's frames byte for byte, signed
// and MAVLink 1 frames included; an ARM is acknowledged through the tunnel and a parameter
// list download completes.
func TestMAVLinkPilot(t *testing.T) {
	r := newTunnelRig(t)
	station, _ := r.gcsFor(t, "alice", r.d.addr)
	for i := range 5 {
		h := r.autopilot.sendMsg("Attitude", map[string]any{"timeBootMs": 1000 + i, "roll": 0.1 * float64(i)})
		station.waitFrame(fmt.Sprintf("attitude %d byte for byte", i), hexIs(h))
	}
	v1 := r.autopilot.sendMsg("Attitude", map[string]any{"timeBootMs": 99}, "v1")
	station.waitFrame("a MAVLink 1 frame byte for byte", hexIs(v1))

	arm := station.sendMsg("CommandLong", armFields)
	r.autopilot.waitFrame("the pilot's ARM byte for byte", hexIs(arm))
	ack := station.waitFrame("the ARM's COMMAND_ACK", isMsg(77))
	if fieldNum(ack, "command") != 400 || fieldNum(ack, "result") != 0 {
		t.Fatalf("COMMAND_ACK %v", ack.Fields)
	}
	signed := station.sendMsg("CommandLong", armFields, "signed")
	got := r.autopilot.waitFrame("the signed frame byte for byte", hexIs(signed))
	if !got.Signed {
		t.Fatal("the signed frame arrived unsigned")
	}
	station.sendMsg("ParamRequestList", listFields)
	waitFor(t, "the parameter list download", func() bool {
		seen := map[float64]bool{}
		for _, f := range station.received() {
			if f.MsgID == 22 {
				seen[fieldNum(f, "paramIndex")] = true
			}
		}
		return len(seen) == 20
	})
	for _, f := range append(station.received(), r.autopilot.received()...) {
		if f.CRCError {
			t.Fatal("a peer saw a frame with a bad checksum")
		}
	}
}

// An observer receives the telemetry, but its ARM, SET_MODE, PARAM_SET, MANUAL_CONTROL and
// HEARTBEAT never reach the autopilot; its PARAM_REQUEST_LIST does, and the daemon logs the
// refusals with the user's name.
func TestMAVLinkObserver(t *testing.T) {
	r := newTunnelRig(t)
	station, _ := r.gcsFor(t, "olga", r.d.addr)
	h := r.autopilot.sendMsg("Attitude", map[string]any{"timeBootMs": 7})
	station.waitFrame("telemetry", hexIs(h))
	denied := []string{
		station.sendMsg("CommandLong", armFields),
		station.sendMsg("SetMode", map[string]any{"targetSystem": 1, "baseMode": 1, "customMode": 4}),
		station.sendMsg("ParamSet", map[string]any{"targetSystem": 1, "targetComponent": 1, "paramId": "ARMING_CHECK", "paramValue": 0, "paramType": 9}),
		station.sendMsg("ManualControl", map[string]any{"target": 1, "x": 500, "z": 1000}),
		station.sendMsg("Heartbeat", map[string]any{"type": 6, "autopilot": 8}),
	}
	// The tunnel answers the refused ARM in its own name, so the ground station says why.
	denial := station.waitFrame("the refused ARM's COMMAND_ACK", func(f mavFrame) bool {
		return f.MsgID == 77 && fieldNum(f, "command") == 400 && fieldNum(f, "result") == 2
	})
	if denial.SysID != 1 {
		t.Errorf("the denial speaks for system %d, want the vehicle's (1)", denial.SysID)
	}
	allowed := station.sendMsg("ParamRequestList", listFields)
	// The frames travel in order on one path: once the allowed one is through, any denied one
	// forwarded would be there too.
	r.autopilot.waitFrame("the observer's PARAM_REQUEST_LIST", hexIs(allowed))
	station.waitFrame("a parameter value", isMsg(22))
	for _, d := range denied {
		if r.autopilot.count(hexIs(d)) != 0 {
			t.Fatalf("an observer's frame reached the autopilot: %s", d)
		}
	}
	if r.autopilot.count(func(f mavFrame) bool { return f.SysID == 255 && f.MsgID == 0 }) != 0 {
		t.Fatal("the observer's heartbeat reached the autopilot")
	}
	_, errs := r.d.output()
	if !strings.Contains(errs, "frame refused") || !strings.Contains(errs, "user=olga") {
		t.Fatalf("no refusal logged with the user's name:\n%s", errs)
	}
}

// A pilot and an observer at once over a link losing 30% each way: the pilot's ARM is still
// acknowledged through MAVLink's own retries, telemetry loss stays close to the link's, and
// no frame is delivered twice.
func TestMAVLinkLossy(t *testing.T) {
	r := newTunnelRig(t)
	proxy, err := lossproxy.Start(lossproxy.Config{Target: r.d.addr, Loss: 0.3, Duplicate: 0.1, Reorder: 0.1, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	pilot, _ := r.gcsFor(t, "alice", proxy.Addr().String(), "--timeout", "60s")
	observer, _ := r.gcsFor(t, "olga", proxy.Addr().String(), "--timeout", "60s")

	// The ground station retries the ARM every 500 ms until acknowledged, as QGroundControl does.
	deadline := time.Now().Add(30 * time.Second)
	for pilot.count(isMsg(77)) == 0 {
		if time.Now().After(deadline) {
			_, errs := r.d.output()
			t.Fatalf("the ARM was never acknowledged (autopilot got %d ARMs)\ndronelinkd:\n%s", r.autopilot.count(isMsg(76)), errs)
		}
		pilot.sendMsg("CommandLong", armFields)
		waitUntil(500*time.Millisecond, func() bool { return pilot.count(isMsg(77)) > 0 })
	}

	r.autopilot.do(map[string]any{"stream": []map[string]any{{"send": "Attitude", "hz": 100}}, "seconds": 3})
	streamed := 0
	waitFor(t, "the autopilot to stream", func() bool {
		r.autopilot.mu.Lock()
		defer r.autopilot.mu.Unlock()
		for _, e := range r.autopilot.events {
			if m, ok := e["streamed"].(map[string]any); ok {
				streamed = int(m["Attitude"].(float64))
				return true
			}
		}
		return false
	})
	// Markers after the stream, resent until a station has one (the link loses them too;
	// waitUntil is the resend timer, not a synchronisation). The paths autopilot → drone →
	// gcs → station keep order, so a marker that arrived follows every ATTITUDE sent before
	// it, except those the proxy was holding back (reordering); so: a first marker, then no
	// datagram held in the proxy, then a second marker.
	marker := func(seq int) {
		for _, station := range []*mavPeer{pilot, observer} {
			waitFor(t, station.name+" to get a marker", func() bool {
				r.autopilot.do(map[string]any{"send": "Ping", "fields": map[string]any{"seq": seq}})
				return waitUntil(100*time.Millisecond, func() bool {
					return station.count(func(f mavFrame) bool { return f.MsgID == 4 && fieldNum(f, "seq") == float64(seq) }) > 0
				})
			})
		}
	}
	marker(4242)
	waitFor(t, "the proxy to hold nothing back", func() bool { return proxy.Held() == 0 })
	marker(4243)
	for _, station := range []*mavPeer{pilot, observer} {
		got := station.count(isMsg(30))
		seen := map[string]int{}
		for _, f := range station.received() {
			if seen[f.Hex]++; seen[f.Hex] > 1 && f.MsgID == 30 {
				t.Fatalf("%s got an ATTITUDE twice", station.name)
			}
		}
		rate := float64(got) / float64(streamed)
		t.Logf("%s: %d of %d telemetry frames (%.0f%%) over a link losing 30%% each way", station.name, got, streamed, 100*rate)
		if rate < 0.5 || rate > 0.9 {
			t.Errorf("%s received %.0f%% of the telemetry, want about 70%%", station.name, 100*rate)
		}
	}
}

// waitUntil polls cond for at most d and reports whether it held.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// restartDrone stops d and starts dronelinkd again on the same addresses with the same
// flags (a daemon restart: the operators' sessions are gone), and returns the new one.
func restartDrone(t *testing.T, d *drone) *drone {
	t.Helper()
	d.stop(t)
	args := d.cmd.Args[1:]
	d2 := &drone{addr: d.addr, tin: d.tin, done: make(chan error, 1)}
	d2.cmd = exec.Command(d.cmd.Path, args...)
	d2.cmd.Stdout = lockedWriter{&d2.mu, &d2.stdout}
	d2.cmd.Stderr = lockedWriter{&d2.mu, &d2.stderr}
	if err := d2.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d2.done <- d2.cmd.Wait() }()
	t.Cleanup(func() { d2.stop(t) })
	waitFor(t, "dronelinkd to start again", func() bool {
		_, errs := d2.output()
		return strings.Contains(errs, "dronelinkd started")
	})
	return d2
}

// The autopilot absent at first: the pilot's frames are dropped (counted, logged), not
// queued; once it speaks they flow. Then the drone's daemon restarts under a running
// dronelink gcs: gcs says the link is lost and back, logs in again on its own, and frames
// flow both ways again without restarting the ground station.
func TestMAVLinkAutopilotLateAndDaemonRestart(t *testing.T) {
	needNode(t)
	f := newFleet(t)
	mavAddr := freePort(t)
	d := startDrone(t, f, "--mavlink-listen", mavAddr)
	g := startGCS(t, "--drone", d.addr, "--drone-pub", f.path("drone.key.pub"), "--key", f.path("alice.key"),
		"--psk", f.path("psk"), "--user", "alice", "--password-file", f.path("alice.pw"), "--listen", "127.0.0.1:0")
	// In --listen mode the ground station speaks first, to where gcs listens.
	station := startPeer(t, "ground station", "--role", "gcs", "--remote", gcsListenAddr(t, g))
	early := station.sendMsg("CommandLong", armFields)
	waitFor(t, "the drop for want of an autopilot", func() bool {
		_, errs := d.output()
		return strings.Contains(errs, "it has not been heard yet")
	})

	autopilot := startPeer(t, "autopilot", "--role", "autopilot", "--remote", mavAddr)
	hb := autopilot.sendMsg("Heartbeat", map[string]any{"type": 2, "autopilot": 3})
	station.waitFrame("the autopilot's heartbeat", hexIs(hb))
	arm := station.sendMsg("CommandLong", armFields)
	autopilot.waitFrame("the ARM", hexIs(arm))
	if autopilot.count(hexIs(early)) != 0 {
		t.Fatal("a frame sent before the autopilot was heard was delivered later")
	}

	restartDrone(t, d)
	waitFor(t, "gcs to report the link lost and back", func() bool {
		e := g.errors()
		return strings.Contains(e, "link lost") && strings.Contains(e, "link back")
	})
	// The autopilot speaks again (mavlink-router would: it keeps streaming), and frames flow.
	waitFor(t, "telemetry after the restart", func() bool {
		h := autopilot.sendMsg("Attitude", map[string]any{"timeBootMs": 555})
		return waitUntil(300*time.Millisecond, func() bool { return station.count(hexIs(h)) > 0 })
	})
	arm2 := station.sendMsg("CommandLong", map[string]any{"command": 400, "targetSystem": 1, "targetComponent": 1, "_param1": 0})
	autopilot.waitFrame("a command after the restart", hexIs(arm2))
}

// gcsListenAddr reads the ground station address dronelink gcs --listen reports.
func gcsListenAddr(t *testing.T, g *gcsTool) string {
	t.Helper()
	const marker = "for a ground station on "
	e := g.errors()
	i := strings.Index(e, marker)
	if i < 0 {
		t.Fatalf("gcs did not say where it listens:\n%s", e)
	}
	rest := e[i+len(marker):]
	if j := strings.IndexAny(rest, " \n"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// A man in the middle holds every datagram of the pilot back for 5 s, the ARM among them,
// then releases them: the drone judges the frames late and drops them; the autopilot never
// receives that copy.
func TestMAVLinkHeldBackArm(t *testing.T) {
	r := newTunnelRig(t)
	m := newMITM(t, r.d.addr)
	station, _ := r.gcsFor(t, "alice", m.addr())
	var mu sync.Mutex
	var held []datagram
	holding := true
	m.setFilter(func(d datagram) bool {
		mu.Lock()
		defer mu.Unlock()
		if d.dir == toDrone && holding {
			held = append(held, datagram{d.dir, d.client, append([]byte(nil), d.data...)})
			return false
		}
		return true
	})
	arm := station.sendMsg("CommandLong", armFields)
	waitFor(t, "the ARM's datagram to be held", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(held) > 0
	})
	time.Sleep(5 * time.Second) // the attack: the datagrams are held this long
	mu.Lock()
	holding = false
	release := held
	mu.Unlock()
	for _, d := range release {
		if flow := m.flow(d.client); flow != nil {
			flow.Write(d.data)
		}
	}
	waitFor(t, "the drone to drop the held frames as late", func() bool {
		_, errs := r.d.output()
		return strings.Contains(errs, "late frames dropped")
	})
	// The link still works: a fresh ARM goes through (so the held one would have, had it
	// been fresh).
	fresh := station.sendMsg("CommandLong", map[string]any{"command": 400, "targetSystem": 1, "targetComponent": 1, "_param1": 1, "confirmation": 1})
	r.autopilot.waitFrame("a fresh ARM", hexIs(fresh))
	if r.autopilot.count(hexIs(arm)) != 0 {
		t.Fatal("the autopilot received the ARM that was held back 5 s")
	}
}
