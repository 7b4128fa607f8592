package app

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The operator's retransmission, driven through the client's timer function on a fake
// clock: no test here sleeps or measures real time.

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (f *fakeClock) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) advance(d time.Duration) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
	return f.t
}

// sent is one message the client handed its channel.
type sent struct {
	at   time.Time
	kind PacketKind
	msg  Message
}

// fakeChannel records the client's messages (parsed copies) and, as a DownlinkCounter,
// reports the counts set in down.
type fakeChannel struct {
	clock  *fakeClock
	mu     sync.Mutex
	sent   []sent
	notify chan struct{}
	down   struct{ received, missing atomic.Uint64 }
}

func newFakeChannel(clock *fakeClock) *fakeChannel {
	return &fakeChannel{clock: clock, notify: make(chan struct{}, 1)}
}

func (f *fakeChannel) Send(msg []byte, kind PacketKind, _ time.Time) bool {
	var m Message
	if err := ParseMessage(append([]byte(nil), msg...), &m); err != nil {
		panic(err)
	}
	f.mu.Lock()
	f.sent = append(f.sent, sent{f.clock.now(), kind, m})
	f.mu.Unlock()
	select {
	case f.notify <- struct{}{}:
	default:
	}
	return true
}
func (f *fakeChannel) Reconnect()            {}
func (f *fakeChannel) NoSession(error) error { return nil }
func (f *fakeChannel) Shutdown(bool)         {}

// of returns the messages of kind sent so far.
func (f *fakeChannel) of(kind PacketKind) []sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []sent
	for _, s := range f.sent {
		if s.kind == kind {
			out = append(out, s)
		}
	}
	return out
}

// counting is a DownlinkCounter channel.
type countingChannel struct{ *fakeChannel }

func (c countingChannel) Downlink() (uint64, uint64) {
	return c.down.received.Load(), c.down.missing.Load()
}

// hookCounts counts the hooks the tests look at.
type hookCounts struct {
	NopHooks
	unexpected atomic.Int64
	estimates  atomic.Int64
}

func (h *hookCounts) Dropped(r DropReason) {
	if r == DropUnexpected {
		h.unexpected.Add(1)
	}
}
func (h *hookCounts) LinkEstimate(LinkEstimate) { h.estimates.Add(1) }

// rig is a client on a fake channel and clock, logged in.
type rig struct {
	t     *testing.T
	clock *fakeClock
	ch    *fakeChannel
	hooks *hookCounts
	c     *Client
	up    ClientUpcalls
}

func newRig(t *testing.T, fixed, counting bool) *rig {
	t.Helper()
	clock := newFakeClock()
	r := &rig{t: t, clock: clock, ch: newFakeChannel(clock), hooks: &hookCounts{}}
	var channel ClientChannel = r.ch
	if counting {
		channel = countingChannel{r.ch}
	}
	var err error
	r.c, r.up, err = NewClient(ClientConfig{Channel: channel, User: "alice", Password: []byte("pw"), Now: clock.now,
		Hooks: r.hooks, FixedTimers: fixed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r
}

// login establishes a session and answers the login.
func (r *rig) login() {
	r.t.Helper()
	r.up.Established(false, r.clock.now())
	logins := r.ch.of(KindLogin)
	if len(logins) == 0 {
		r.t.Fatal("no login sent")
	}
	r.up.Receive(AppendLoginResult(nil, logins[0].msg.ID, LoginOK, RolePilot), r.clock.now(), 0)
	if r.c.Role() != RolePilot {
		r.t.Fatal("not logged in")
	}
}

// command issues a command on its own goroutine and waits until it has been sent. The
// returned channel yields its outcome.
func (r *rig) command(payload string) (uint64, <-chan Ack) {
	r.t.Helper()
	before := len(r.ch.of(KindCommand))
	ctx, cancel := context.WithCancel(context.Background())
	r.t.Cleanup(cancel)
	done := make(chan Ack, 1)
	go func() {
		ack, _ := r.c.CommandWith(ctx, []byte(payload), CommandOptions{Independent: true})
		done <- ack
	}()
	guard := time.NewTimer(time.Minute) // a bound for a broken build, not a measurement
	defer guard.Stop()
	for len(r.ch.of(KindCommand)) == before {
		select {
		case <-r.ch.notify:
		case <-guard.C:
			r.t.Fatal("the command was never sent")
		}
	}
	// The client sends all copies of a transmission under its lock: once the lock is
	// free, the last copy has gone out too, at the same fake instant, before the test
	// moves the clock on.
	r.c.mu.Lock()
	//lint:ignore SA2001 the empty critical section waits for the sender to finish
	r.c.mu.Unlock()
	return r.ch.of(KindCommand)[before].msg.ID, done
}

// ack delivers the drone's acknowledgement of id.
func (r *rig) ack(id uint64, status AckStatus) {
	r.up.Receive(AppendAck(nil, id, status, nil), r.clock.now(), 0)
}

// transmissions groups the command datagrams of id by the instant they went out.
func (r *rig) transmissions(id uint64) (times []time.Time, copies []int) {
	for _, s := range r.ch.of(KindCommand) {
		if s.msg.ID != id {
			continue
		}
		if n := len(times); n > 0 && times[n-1].Equal(s.at) {
			copies[n-1]++
			continue
		}
		times, copies = append(times, s.at), append(copies, 1)
	}
	return times, copies
}

// runFor ticks the client every step of fake time for d.
func (r *rig) runFor(d, step time.Duration) {
	for end := r.clock.now().Add(d); r.clock.now().Before(end); {
		r.c.tick(r.clock.advance(step))
	}
}

// The retransmission timer: RequestRetryInitial before any round-trip sample, then the
// RFC 6298 timeout of the samples (3R after the first, SRTT + G once steady, RTOMin on
// loopback, RequestRetryMax at most), doubled after each transmission, plus up to a
// quarter of jitter; the fixed timers with FixedTimers.
func TestRetransmissionTimer(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		name    string
		fixed   bool
		samples []time.Duration
		rto     time.Duration
	}{
		{"no sample", false, nil, RequestRetryInitial},
		{"handshake sample", false, []time.Duration{40 * ms}, 120 * ms},
		{"steady 40 ms", false, repeat(40*ms, 40), 50 * ms},
		{"loopback", false, repeat(100*time.Microsecond, 40), RTOMin},
		{"satellite", false, []time.Duration{5 * time.Second}, RequestRetryMax},
		{"fixed timers", true, repeat(40*ms, 40), RequestRetryInitial},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, c.fixed, false)
			r.login()
			for _, s := range c.samples {
				r.up.RoundTripSample(s)
			}
			if got := r.c.Estimate().RTO; !c.fixed && c.samples != nil && got != c.rto {
				t.Fatalf("RTO %v, want %v", got, c.rto)
			}
			id, _ := r.command("hover")
			r.runFor(2600*ms, ms)
			times, _ := r.transmissions(id)
			if len(times) < 3 {
				t.Fatalf("%d transmissions in 2.6 s", len(times))
			}
			silentAt := SilentAfter
			if !c.fixed && c.samples != nil {
				silentAt = max(SilentAfter, 2*c.rto)
			}
			for i := 1; i < len(times); i++ {
				base := c.rto
				if times[i-1].Sub(times[0]) >= silentAt {
					base = RequestRetryInitial
				}
				d := min(base<<(i-1), RequestRetryMax)
				if gap := times[i].Sub(times[i-1]); gap < d || gap > d+d/4+ms {
					t.Errorf("transmission %d after %v, want %v to %v", i+1, gap, d, d+d/4+ms)
				}
			}
		})
	}
}

// On a silent link (requests unanswered and nothing heard) the client falls back to one
// copy and the fixed backoff: after the first seconds it sends no more than one datagram
// per command per RequestRetryMax, what the fixed timers send at their fastest. The
// extra traffic of the adaptive timers is bounded to the first seconds.
func TestSilentLinkGetsNoMoreTraffic(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		r := newRig(t, fixed, false)
		r.login()
		for range 40 {
			r.up.RoundTripSample(40 * time.Millisecond)
		}
		id, _ := r.command("land")
		start := r.clock.now()
		r.runFor(25*time.Second, 5*time.Millisecond)
		times, copies := r.transmissions(id)
		var early, late int // datagrams in the first 3 s and after
		for i, at := range times {
			if at.Sub(start) < 3*time.Second {
				early += copies[i]
			} else {
				late += copies[i]
				if copies[i] != 1 {
					t.Errorf("fixed %v: %d copies at %v on a silent link", fixed, copies[i], at.Sub(start))
				}
			}
		}
		t.Logf("fixed %v: %d datagrams in the first 3 s, %d in the next 22 s", fixed, early, late)
		if limit := int(22*time.Second/RequestRetryMax) + 1; late > limit {
			t.Errorf("fixed %v: %d datagrams in 22 s of silence, more than one per %v (%d)", fixed, late, RequestRetryMax, limit)
		}
		// Adaptive: at most log2(RequestRetryMax/RTO)+1 transmissions of MaxCopies before the
		// silence shows, then single copies; the fixed timers send 4 in 3 s.
		if !fixed && early > 14 {
			t.Errorf("%d datagrams in the first 3 s of silence", early)
		}
		if est := r.c.Estimate(); !fixed && (!est.Silent || est.Copies != 1) {
			t.Errorf("estimate on a silent link: %+v", est)
		}
		// Anything heard ends the silence.
		r.up.Receive(AppendKeepalive(nil), r.clock.now(), 0)
		if est := r.c.Estimate(); est.Silent {
			t.Errorf("still silent after the drone was heard: %+v", est)
		}
	}
}

// Copies: as many as the loss estimate asks for, each flagged CommandAckTwice when more
// than one goes out; the channel's datagram counts move the estimate.
func TestCopiesFollowTheLossEstimate(t *testing.T) {
	r := newRig(t, false, true)
	r.login()
	if logins := r.ch.of(KindLogin); len(logins) != MaxCopies {
		t.Errorf("%d copies of the first login, want %d (a radio link is lossy until shown otherwise)", len(logins), MaxCopies)
	}
	check := func(copies int) uint64 {
		t.Helper()
		id, done := r.command("hover")
		times, n := r.transmissions(id)
		if len(times) != 1 || n[0] != copies {
			t.Fatalf("transmissions %v copies %v, want one of %d (estimate %+v)", times, n, copies, r.c.Estimate())
		}
		for _, s := range r.ch.of(KindCommand) {
			if s.msg.ID == id && (s.msg.Command.Flags&CommandAckTwice != 0) != (copies > 1) {
				t.Errorf("%d copies with flags %#x", copies, s.msg.Command.Flags)
			}
		}
		r.ack(id, AckOK)
		if ack := <-done; ack.Attempts != 1 || ack.Datagrams != copies {
			t.Errorf("ack %+v, want 1 transmission of %d datagrams", ack, copies)
		}
		return id
	}
	check(MaxCopies)
	// The drone's datagrams all arrive: a clean link, one copy.
	r.ch.down.received.Store(40)
	r.runFor(2*timerTick, time.Millisecond)
	check(1)
	// Then 30% of them go missing: copies again.
	r.ch.down.received.Store(40 + 70)
	r.ch.down.missing.Store(30)
	r.runFor(2*timerTick, time.Millisecond)
	if est := r.c.Estimate(); est.Loss < 0.2 || est.Loss > 0.4 {
		t.Errorf("loss estimate %.3f with 30 of 100 datagrams missing", est.Loss)
	}
	check(MaxCopies)
	// Fixed timers: one copy, no flag, whatever the estimate.
	f := newRig(t, true, true)
	f.login()
	if logins := f.ch.of(KindLogin); len(logins) != 1 {
		t.Errorf("fixed timers: %d copies of the login", len(logins))
	}
	f.ch.down.missing.Store(1000)
	f.runFor(2*timerTick, time.Millisecond)
	r = f
	check(1)
	if n := f.hooks.estimates.Load(); n != 0 {
		t.Errorf("fixed timers published %d estimates", n)
	}
}

// Karn's algorithm: an answer to a command that went out more than once is no round-trip
// sample (it may answer any of its transmissions); an answer to one that went out once is,
// exactly.
func TestRoundTripSamplesFromFirstTransmissionsOnly(t *testing.T) {
	r := newRig(t, false, false)
	r.login()
	r.up.RoundTripSample(100 * time.Millisecond)
	before := r.c.Estimate()
	id, done := r.command("retransmitted")
	r.runFor(before.RTO+before.RTO/4+time.Millisecond, time.Millisecond)
	if times, _ := r.transmissions(id); len(times) != 2 {
		t.Fatalf("%d transmissions, want 2", len(times))
	}
	r.ack(id, AckOK)
	if ack := <-done; ack.Attempts != 2 {
		t.Fatalf("ack %+v", ack)
	}
	if after := r.c.Estimate(); after.SRTT != before.SRTT || after.RTTVar != before.RTTVar {
		t.Errorf("a retransmitted command's answer changed the estimate: %+v, was %+v", after, before)
	}
	id, done = r.command("once")
	r.clock.advance(60 * time.Millisecond)
	r.ack(id, AckOK)
	<-done
	var want rttEstimator
	want.sample(100 * time.Millisecond)
	want.sample(60 * time.Millisecond)
	if after := r.c.Estimate(); after.SRTT != want.srtt || after.RTTVar != want.rttvar {
		t.Errorf("estimate %+v, want SRTT %v RTTVAR %v", after, want.srtt, want.rttvar)
	}
	// A second copy of the acknowledgement changes nothing.
	est := r.c.Estimate()
	r.ack(id, AckOK)
	if r.c.Estimate() != est {
		t.Error("a duplicate acknowledgement changed the estimate")
	}
}

// The drone sends the result of a password check twice; the operator takes the first and
// ignores the second quietly, while a result for a login it never sent is still counted
// as unexpected.
func TestDuplicateLoginResultIgnored(t *testing.T) {
	r := newRig(t, false, false)
	r.login()
	id := r.ch.of(KindLogin)[0].msg.ID
	r.up.Receive(AppendLoginResult(nil, id, LoginOK, RolePilot), r.clock.now(), 0)
	if n := r.hooks.unexpected.Load(); n != 0 {
		t.Errorf("the second copy of the login result counted %d unexpected", n)
	}
	r.up.Receive(AppendLoginResult(nil, id+1, LoginOK, RolePilot), r.clock.now(), 0)
	if n := r.hooks.unexpected.Load(); n != 1 {
		t.Errorf("a result for another login counted %d unexpected, want 1", n)
	}
}

// recordingPeer counts what the drone sends a session, by message type and id.
type recordingPeer struct {
	nopPeer
	mu     sync.Mutex
	counts map[[2]uint64]int
	notify chan struct{}
}

func (p *recordingPeer) Send(msg []byte, _ PacketKind) bool {
	var m Message
	if ParseMessage(msg, &m) == nil {
		p.mu.Lock()
		p.counts[[2]uint64{uint64(m.Type), m.ID}]++
		p.mu.Unlock()
		select {
		case p.notify <- struct{}{}:
		default:
		}
	}
	return true
}

func (p *recordingPeer) count(typ byte, id uint64) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[[2]uint64{uint64(typ), id}]
}

func (p *recordingPeer) await(t *testing.T, typ byte, id uint64, n int) {
	t.Helper()
	guard := time.NewTimer(time.Minute) // a bound for a broken build, not a measurement
	defer guard.Stop()
	for p.count(typ, id) < n {
		select {
		case <-p.notify:
		case <-guard.C:
			t.Fatalf("message type %d id %d sent %d times, waiting for %d", typ, id, p.count(typ, id), n)
		}
	}
}

// The drone answers a command flagged CommandAckTwice twice, others once, and a copy of
// an answered command once more from its memory; the result of a password check twice, a
// refusal before any check once.
func TestDroneAnswersTwiceWhenAsked(t *testing.T) {
	_, up, err := NewServer(ServerConfig{Channel: noChannel{}, Auth: pilotAuth{}, DedupLifetime: time.Minute,
		Handler: func(context.Context, Command) (AckStatus, []byte) { return AckOK, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up.Start(ctx)
	defer up.Shutdown(CloseShutdown)
	peer := &recordingPeer{counts: map[[2]uint64]int{}, notify: make(chan struct{}, 1)}
	sess := up.NewSession(peer, Identity{}, 1, time.Now(), nil)
	up.Receive(sess, AppendLogin(nil, 5, "alice", []byte("pw")), time.Now())
	peer.await(t, MsgLoginResult, 5, 2)

	command := func(id uint64, flags byte) []byte {
		msg := AppendCommand(nil, id, CommandHeader{Flags: flags | CommandIndependent, Seq: id, Lifetime: 30000}, []byte("go"))
		binary.BigEndian.PutUint32(msg[1+msgIDSize+1+8:], 0) // issued at the session's epoch
		return msg
	}
	up.Receive(sess, command(1, CommandAckTwice), time.Now())
	peer.await(t, MsgAck, 1, 2)
	up.Receive(sess, command(2, 0), time.Now())
	peer.await(t, MsgAck, 2, 1)
	// The executor runs one command at a time: every answer to command 1 went out before
	// command 2 ran.
	if n := peer.count(MsgAck, 1); n != 2 {
		t.Errorf("command flagged to be answered twice: %d acks", n)
	}
	if n := peer.count(MsgAck, 2); n != 1 {
		t.Errorf("command not flagged: %d acks", n)
	}
	up.Receive(sess, command(1, CommandAckTwice), time.Now()) // answered from memory, at once
	if n := peer.count(MsgAck, 1); n != 3 {
		t.Errorf("a copy of an answered command: %d acks in all, want 3", n)
	}

	// A login refused before any password check (a wrong user) is answered once, at once.
	var refuseChecks atomic.Int64
	_, upR, err := NewServer(ServerConfig{Channel: noChannel{}, Auth: refuseAuth{&refuseChecks}, DedupLifetime: time.Minute,
		Handler: func(context.Context, Command) (AckStatus, []byte) { return AckOK, nil }})
	if err != nil {
		t.Fatal(err)
	}
	other := &recordingPeer{counts: map[[2]uint64]int{}, notify: make(chan struct{}, 1)}
	refused := upR.NewSession(other, Identity{}, 2, time.Now(), nil)
	upR.Receive(refused, AppendLogin(nil, 6, "nobody", []byte("pw")), time.Now())
	if n := other.count(MsgLoginResult, 6); n != 1 {
		t.Errorf("a refusal before the password check sent %d times", n)
	}
	// Its copy gets the same answer from memory, without the checks.
	upR.Receive(refused, AppendLogin(nil, 6, "nobody", []byte("pw")), time.Now())
	if n, checks := other.count(MsgLoginResult, 6), refuseChecks.Load(); n != 2 || checks != 1 {
		t.Errorf("a copy of a refused login: %d answers in all, %d checks", n, checks)
	}
}

// refuseAuth knows no user; it counts its cheap checks.
type refuseAuth struct{ checks *atomic.Int64 }

func (a refuseAuth) Authorize(string, Identity) (Role, LoginStatus) {
	a.checks.Add(1)
	return RoleNone, LoginUnknownUser
}
func (refuseAuth) Login(string, []byte, Identity) (Role, LoginStatus) {
	return RoleNone, LoginUnknownUser
}
