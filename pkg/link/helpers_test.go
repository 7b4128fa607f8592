package link

import (
	"context"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// Test keys are 2048-bit (the minimum) so the suite stays fast; size tests use 4096.
var (
	keysOnce  sync.Once
	testDrone *rsa.PrivateKey
	testOp1   *rsa.PrivateKey
	testOp2   *rsa.PrivateKey
	testOther *rsa.PrivateKey
	testPSK   crypto.PSK
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var wg sync.WaitGroup
		for _, k := range []**rsa.PrivateKey{&testDrone, &testOp1, &testOp2, &testOther} {
			wg.Go(func() {
				key, err := crypto.GenerateRSAKey(cryptorand.Reader, 2048)
				if err != nil {
					panic(err)
				}
				*k = key
			})
		}
		wg.Wait()
		var err error
		if testPSK, err = crypto.GeneratePSK(cryptorand.Reader); err != nil {
			panic(err)
		}
	})
}

// testUser is one user of testAuth.
type testUser struct {
	password string
	role     Role
	keys     []crypto.KeyID
}

// testAuth is an in-memory Authenticator that counts its calls.
type testAuth struct {
	mu      sync.Mutex
	pubs    map[crypto.KeyID]*rsa.PublicKey
	users   map[string]testUser
	lookups atomic.Int64
	logins  atomic.Int64
}

func newTestAuth() *testAuth {
	return &testAuth{pubs: map[crypto.KeyID]*rsa.PublicKey{}, users: map[string]testUser{}}
}

func (a *testAuth) add(name, password string, role Role, keys ...*rsa.PrivateKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u := testUser{password: password, role: role}
	for _, k := range keys {
		id := crypto.KeyIDOf(&k.PublicKey)
		a.pubs[id] = &k.PublicKey
		u.keys = append(u.keys, id)
	}
	a.users[name] = u
}

func (a *testAuth) remove(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range a.users[name].keys {
		delete(a.pubs, id)
	}
	delete(a.users, name)
}

func (a *testAuth) LookupKey(id crypto.KeyID) (*rsa.PublicKey, bool) {
	a.lookups.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pubs[id]
	return p, ok
}

func (a *testAuth) Login(user string, password []byte, key crypto.KeyID) (Role, LoginStatus) {
	a.logins.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.users[user]
	if !ok {
		return RoleNone, LoginUnknownUser
	}
	found := false
	for _, k := range u.keys {
		found = found || k == key
	}
	if !found {
		return RoleNone, LoginKeyNotAuthorised
	}
	if u.password != string(password) {
		return RoleNone, LoginWrongPassword
	}
	return u.role, LoginOK
}

func (a *testAuth) Authorize(user string, key crypto.KeyID) (Role, LoginStatus) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.users[user]
	if !ok {
		return RoleNone, LoginUnknownUser
	}
	for _, k := range u.keys {
		if k == key {
			return u.role, LoginOK
		}
	}
	return RoleNone, LoginKeyNotAuthorised
}

// countingDroneKey counts RSA unwraps, to prove forged traffic never reaches them.
type countingDroneKey struct {
	DroneKey
	unwraps atomic.Int64
}

func (k *countingDroneKey) UnwrapSecret(w []byte) ([]byte, error) {
	k.unwraps.Add(1)
	return k.DroneKey.UnwrapSecret(w)
}

// execLog records every executed command, to check at-most-once.
type execLog struct {
	mu    sync.Mutex
	count map[[2]uint64]int
	total int
}

func newExecLog() *execLog { return &execLog{count: map[[2]uint64]int{}} }

func (l *execLog) handler(_ context.Context, cmd Command) (AckStatus, []byte) {
	l.mu.Lock()
	l.count[[2]uint64{uint64(cmd.OperatorKey[0]) | uint64(cmd.OperatorKey[1])<<8, cmd.ID}]++
	l.total++
	l.mu.Unlock()
	return AckOK, append([]byte("done:"), cmd.Payload...)
}

func (l *execLog) check(t *testing.T, want int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total != want {
		t.Errorf("executed %d commands, want %d", l.total, want)
	}
	for id, n := range l.count {
		if n != 1 {
			t.Errorf("command %v executed %d times", id, n)
		}
	}
}

// recordingConn wraps a PacketConn and counts received data datagrams that are exact
// repeats of one received before: the only datagrams the replay filter may reject. It is
// a BatchConn, reading in batches when the wrapped conn can, so tests over UDP run the
// endpoints' batched receive path.
type recordingConn struct {
	PacketConn
	mu      sync.Mutex
	seen    map[[32]byte]bool
	repeats int
	audited bool   // a replayAudit consumes pending
	pending []bool // per non-empty datagram read and not yet handled: was it a repeat?

	returned uint64              // datagrams handed to the endpoint's reader
	handled  uint64              // of those, how many it has finished with (it asked for more)
	lastAt   map[[32]byte]uint64 // datagram digest -> its last position in returned (1-based)
}

func newRecordingConn(c PacketConn) *recordingConn {
	return &recordingConn{PacketConn: c, seen: map[[32]byte]bool{}, lastAt: map[[32]byte]uint64{}}
}

// entered notes that the reader asks for more: it has handled everything returned so far
// (the endpoints' read loop handles a whole batch before it reads again).
func (r *recordingConn) entered() {
	r.mu.Lock()
	r.handled = r.returned
	r.mu.Unlock()
}

// waitHandled waits until the reader has finished with pkt, returned after position start.
func (r *recordingConn) waitHandled(t *testing.T, pkt []byte, start uint64) {
	t.Helper()
	sum := sha256.Sum256(pkt)
	waitFor(t, "the endpoint to handle the datagram", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		at := r.lastAt[sum]
		return at > start && r.handled >= at
	})
}

// position is how many datagrams the reader has been handed so far.
func (r *recordingConn) position() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.returned
}

func (r *recordingConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	r.entered()
	n, a, err := r.PacketConn.ReadFrom(b)
	if err == nil {
		r.record(b[:n])
	}
	return n, a, err
}

func (r *recordingConn) ReadBatch(msgs []Datagram) (int, error) {
	r.entered()
	n, err := readBatchOf(r.PacketConn, msgs)
	for i := range n {
		r.record(msgs[i].Buf[:msgs[i].N])
	}
	return n, err
}

func (r *recordingConn) WriteBatch(msgs []Datagram) (int, error) {
	return writeBatchOf(r.PacketConn, msgs)
}

func (r *recordingConn) record(pkt []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.returned++
	r.lastAt[sha256.Sum256(pkt)] = r.returned
	if len(pkt) == 0 {
		return // never data, never a repeat; its PacketReceived has size 0 and pops nothing
	}
	repeat := false
	if pkt[0] == typeByte(TypeData) {
		sum := sha256.Sum256(pkt)
		repeat = r.seen[sum]
		if repeat {
			r.repeats++
		}
		r.seen[sum] = true
	}
	if r.audited {
		r.pending = append(r.pending, repeat)
	}
}

// next is whether the next datagram to be handled was a repeat. Endpoints call
// Hooks.PacketReceived with the datagram's size once for every datagram, in the order
// read, before anything else (and again with size 0 for the message inside a decrypted
// data datagram, which replayAudit does not count).
func (r *recordingConn) next() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) == 0 {
		return false
	}
	repeat := r.pending[0]
	r.pending = r.pending[1:]
	return repeat
}

// readBatchOf reads through c's ReadBatch when it has one, else one datagram by ReadFrom.
func readBatchOf(c PacketConn, msgs []Datagram) (int, error) {
	if bc, ok := c.(BatchConn); ok {
		return bc.ReadBatch(msgs)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	n, a, err := c.ReadFrom(msgs[0].Buf)
	if err != nil {
		return 0, err
	}
	msgs[0].N, msgs[0].Addr = n, a
	return 1, nil
}

// writeBatchOf writes through c's WriteBatch when it has one, else one WriteTo each.
func writeBatchOf(c PacketConn, msgs []Datagram) (int, error) {
	if bc, ok := c.(BatchConn); ok {
		return bc.WriteBatch(msgs)
	}
	for i := range msgs {
		if err := c.WriteTo(msgs[i].Buf, msgs[i].Addr); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

// replayAudit wraps an endpoint's hooks: the endpoint's single reader handles each datagram
// in the order read, so a replay drop while the current datagram is a first arrival is a
// false rejection. Attach it to the endpoint's recordingConn before traffic flows.
type replayAudit struct {
	Hooks
	conn          *recordingConn
	false         atomic.Int64
	currentRepeat atomic.Bool
}

func (a *replayAudit) attach(c *recordingConn) {
	c.mu.Lock()
	c.audited = true
	c.mu.Unlock()
	a.conn = c
}

func (a *replayAudit) PacketReceived(k PacketKind, n int) {
	if n > 0 { // the datagram itself, not the message inside a decrypted one
		a.currentRepeat.Store(a.conn.next())
	}
	a.Hooks.PacketReceived(k, n)
}

func (a *replayAudit) Dropped(r DropReason) {
	if r == DropReplay && !a.currentRepeat.Load() {
		a.false.Add(1)
	}
	a.Hooks.Dropped(r)
}

func (r *recordingConn) Repeats() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.repeats
}

// impairedConn is a PacketConn whose sends are lost, duplicated and reordered, for
// running the lossy scenario over real UDP sockets.
type impairedConn struct {
	PacketConn
	mu                      sync.Mutex
	rng                     *rand.Rand
	loss, reorder, dup      float64
	wg                      sync.WaitGroup
	sent, dropped, reorders atomic.Int64
}

func newImpairedConn(c PacketConn, seed uint64, loss, reorder, dup float64) *impairedConn {
	return &impairedConn{PacketConn: c, rng: rand.New(rand.NewPCG(seed, seed)), loss: loss, reorder: reorder, dup: dup}
}

func (c *impairedConn) WriteTo(b []byte, addr netip.AddrPort) error {
	c.mu.Lock()
	lose, late, twice := c.rng.Float64() < c.loss, c.rng.Float64() < c.reorder, c.rng.Float64() < c.dup
	c.mu.Unlock()
	c.sent.Add(1)
	if lose {
		c.dropped.Add(1)
		return nil
	}
	copies := 1
	if twice {
		copies = 2
	}
	for range copies {
		if late {
			c.reorders.Add(1)
			p := append([]byte(nil), b...)
			c.wg.Add(1)
			time.AfterFunc(2*time.Millisecond, func() {
				defer c.wg.Done()
				_ = c.PacketConn.WriteTo(p, addr)
			})
			continue
		}
		if err := c.PacketConn.WriteTo(b, addr); err != nil {
			return err
		}
	}
	return nil
}

// ReadBatch passes reads through (only sends are impaired), batched when the wrapped conn can.
func (c *impairedConn) ReadBatch(msgs []Datagram) (int, error) {
	return readBatchOf(c.PacketConn, msgs)
}

// WriteBatch impairs each datagram as WriteTo does.
func (c *impairedConn) WriteBatch(msgs []Datagram) (int, error) {
	for i := range msgs {
		if err := c.WriteTo(msgs[i].Buf, msgs[i].Addr); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

func (c *impairedConn) Close() error {
	err := c.PacketConn.Close()
	c.wg.Wait()
	return err
}

// testLogger logs to stderr when DRONELINK_TEST_LOG is set, else discards.
func testLogger() *slog.Logger {
	if os.Getenv("DRONELINK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// waitFor polls cond until it holds or the deadline passes (no timing assertion: it only
// bounds how long a broken build takes to fail).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testCommand is the header of commands that tests build by hand: issued at the session's
// epoch, 30 s to live, not ordered against the sender's other commands.
var testCommand = CommandHeader{Flags: CommandIndependent, Lifetime: 30000}

// countersSummary lists the nonzero counters of c, to explain a failed test.
func countersSummary(c *Counters) string {
	var b strings.Builder
	add := func(name string, v uint64) {
		if v != 0 {
			fmt.Fprintf(&b, "%s=%d ", name, v)
		}
	}
	for k := range c.Received {
		add("received_"+PacketKind(k).String(), c.Received[k].Load())
		add("sent_"+PacketKind(k).String(), c.Sent[k].Load())
	}
	for r := range c.Drops {
		add("drop_"+DropReason(r).String(), c.Drops[r].Load())
	}
	for h := range c.Handshakes {
		add("handshake_"+HandshakeResult(h).String(), c.Handshakes[h].Load())
	}
	add("rekeys", c.Rekeys.Load())
	add("link_downs", c.LinkDowns.Load())
	return strings.TrimSpace(b.String())
}
