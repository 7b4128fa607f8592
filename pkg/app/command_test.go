package app

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"math"
	"net/netip"
	"testing"
	"time"
)

func TestStampCommand(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int32
	}{
		{0, 0}, {999 * time.Microsecond, 0}, {time.Millisecond, 1}, {90 * time.Second, 90000},
		// Before the epoch the time is rounded down, towards the past: the command must not
		// look younger than it is.
		{-time.Microsecond, -1}, {-time.Millisecond, -1}, {-1001 * time.Microsecond, -2}, {-30 * time.Second, -30000},
		{50 * 24 * time.Hour, math.MaxInt32}, {-50 * 24 * time.Hour, math.MinInt32},
	} {
		msg := AppendCommand(nil, 7, CommandHeader{Seq: 1, Lifetime: 5}, []byte("arm"))
		StampCommand(msg, c.d)
		var m Message
		if err := ParseMessage(msg, &m); err != nil {
			t.Fatal(err)
		}
		if m.Command.Issued != c.want || m.Command.Seq != 1 || m.Command.Lifetime != 5 || string(m.Payload) != "arm" {
			t.Errorf("StampCommand(%v): %+v %q, want issued %d", c.d, m.Command, m.Payload, c.want)
		}
	}
}

func TestStampTouchesOnlyItsMessages(t *testing.T) {
	epoch := time.Now()
	now, issued := epoch.Add(1500*time.Millisecond), epoch.Add(-250*time.Millisecond)
	frames := AppendFrames(nil, []byte{0xfd})
	Stamp(frames, epoch, now, issued)
	if got := binary.BigEndian.Uint32(frames[1:]); got != 1500 {
		t.Errorf("frames stamped %d, want 1500 (now)", got)
	}
	cmd := AppendCommand(nil, 1, CommandHeader{}, nil)
	Stamp(cmd, epoch, now, issued)
	var m Message
	if err := ParseMessage(cmd, &m); err != nil || m.Command.Issued != -250 {
		t.Errorf("command stamped %d (%v), want -250 (issued)", m.Command.Issued, err)
	}
	for _, msg := range [][]byte{AppendKeepalive(nil), AppendAck(nil, 1, AckOK, []byte("x")), AppendLogin(nil, 1, "a", []byte("pw")), nil} {
		before := string(msg)
		Stamp(msg, epoch, now, issued)
		if string(msg) != before {
			t.Errorf("Stamp changed % x", before)
		}
	}
}

// TestCommandAgeNeverTooSmall: whatever the link delays and however the operator's issue
// instant lies against the session's epochs, the drone's estimate is at least the true
// age (a simple model: drone epoch D, operator send epoch S >= D, issue I, arrival A).
func TestCommandAgeNeverTooSmall(t *testing.T) {
	base := time.Now()
	for _, c := range []struct {
		name                      string
		sendEpoch, issue, arrival time.Duration // after the drone's epoch
	}{
		{"at once", 0, 0, 0},
		{"issued after the session", 40 * time.Millisecond, 2 * time.Second, 2050 * time.Millisecond},
		{"issued before the session", 3 * time.Second, time.Second, 3100 * time.Millisecond},
		{"held back 2 minutes", 10 * time.Millisecond, 20 * time.Millisecond, 2 * time.Minute},
		{"slow handshake", 5 * time.Second, 5 * time.Second, 5 * time.Second},
		{"sub-millisecond", 300 * time.Microsecond, 1700 * time.Microsecond, 1900 * time.Microsecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			var issued int32
			msg := AppendCommand(nil, 1, CommandHeader{}, nil)
			StampCommand(msg, c.issue-c.sendEpoch)
			issued = int32(binary.BigEndian.Uint32(msg[1+msgIDSize+1+8:]))
			got := commandAge(base.Add(c.arrival), base, issued)
			if want := c.arrival - c.issue; got < want {
				t.Errorf("age %v, true age %v", got, want)
			}
			if want := c.arrival - c.issue + c.sendEpoch + time.Millisecond + c.arrival/1000 + c.issue/1000 + c.sendEpoch/1000; got > want {
				t.Errorf("age %v, more than the handshake's delay and drift above the true age (%v)", got, want)
			}
		})
	}
}

func TestIssuedBefore(t *testing.T) {
	for _, c := range []struct {
		issued int32
		gap    time.Duration // from the drone's start to the session's receive epoch
		want   bool
	}{
		{0, 0, false},             // issued at the send epoch, after the start
		{5000, 0, false},          // issued after the session was agreed
		{-1, 0, true},             // a command from before a session agreed at the start
		{-1000, time.Hour, false}, // long after the start
		{-1000, 1000 * time.Millisecond, true},
		{-1000, 1002 * time.Millisecond, true}, // within the drift allowance: refused
		{-1000, 1010 * time.Millisecond, false},
		{math.MinInt32, 24 * time.Hour, true},
	} {
		if got := issuedBefore(c.issued, c.gap); got != c.want {
			t.Errorf("issuedBefore(%d, %v) = %v, want %v", c.issued, c.gap, got, c.want)
		}
	}
}

func TestAckStatusMeaning(t *testing.T) {
	for _, c := range []struct {
		s               AckStatus
		name            string
		final, executed bool
	}{
		{AckOK, "ok", true, true},
		{AckFailed, "failed", true, true},
		{AckNotPermitted, "not_permitted", true, false},
		{AckNotLoggedIn, "not_logged_in", false, false},
		{AckBusy, "busy", false, false},
		{AckLate, "late", true, false},
		{AckSuperseded, "superseded", true, false},
		{AckRestarted, "restarted", true, false},
	} {
		if c.s.String() != c.name || c.s.Final() != c.final || c.s.Executed() != c.executed {
			t.Errorf("%d: %s final=%v executed=%v, want %s %v %v", c.s, c.s, c.s.Final(), c.s.Executed(), c.name, c.final, c.executed)
		}
	}
	if MaxAckStatus != AckRestarted || (MaxAckStatus+1).String() != "unknown" {
		t.Error("MaxAckStatus is not the last status")
	}
}

func TestIDString(t *testing.T) {
	for id, want := range map[uint64]string{0: "0000000000000000", 1<<53 + 1: "0020000000000001", math.MaxUint64: "ffffffffffffffff"} {
		if got := FormatID(id); got != want {
			t.Errorf("FormatID(%d) = %s, want %s", id, got, want)
		}
	}
}

type nopPeer struct{}

func (nopPeer) Send([]byte, PacketKind) bool { return true }
func (nopPeer) Addr() netip.AddrPort         { return netip.MustParseAddrPort("192.0.2.1:5000") }
func (nopPeer) Remove()                      {}
func (nopPeer) PeerClosed()                  {}

type noChannel struct{}

func (noChannel) AppendSessions(dst []*Session) []*Session { return dst }

type pilotAuth struct{}

func (pilotAuth) Authorize(string, Identity) (Role, LoginStatus)     { return RolePilot, LoginOK }
func (pilotAuth) Login(string, []byte, Identity) (Role, LoginStatus) { return RolePilot, LoginOK }

// The audit trail in JSON: 64-bit ids and sequence numbers are strings (jq and JavaScript
// would round numbers above 2^53), and the key is named by its fingerprint.
func TestAuditLineJSONKeepsIDsExact(t *testing.T) {
	var buf bytes.Buffer
	s, _, err := NewServer(ServerConfig{Channel: noChannel{}, Auth: pilotAuth{}, DedupLifetime: time.Minute,
		Handler: func(context.Context, Command) (AckStatus, []byte) { return AckOK, nil },
		Logger:  slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sess := &Session{peer: nopPeer{}, id: Identity{KeyName: "SHA256:abc"}, index: 7}
	const id, seq = 1<<53 + 1, 1796171368314859153
	job := commandJob{sess: sess, cache: s.dedupFor(dedupKey{}), header: CommandHeader{Seq: seq},
		cmd: Command{ID: id, User: "alice", Payload: []byte("arm")}}
	job.cache.Begin(id, time.Now())
	s.finishCommand(job, AckLate, nil, 1500*time.Millisecond)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	if line["id"] != "0020000000000001" || line["seq"] != "1796171368314859153" || line["key"] != "SHA256:abc" ||
		line["result"] != "late" || line["level"] != "WARN" {
		t.Fatalf("audit line %s", buf.Bytes())
	}
}

// The password of a login is wiped from the buffer the channel opened it in (its reused
// read buffer) once the login is handled.
func TestLoginPasswordWipedFromReadBuffer(t *testing.T) {
	_, up, err := NewServer(ServerConfig{Channel: noChannel{}, Auth: pilotAuth{}, DedupLifetime: time.Minute,
		Handler: func(context.Context, Command) (AckStatus, []byte) { return AckOK, nil }})
	if err != nil {
		t.Fatal(err)
	}
	sess := up.NewSession(nopPeer{}, Identity{}, 1, time.Now(), nil)
	buf := AppendLogin(nil, 9, "alice", []byte("correct horse"))
	up.Receive(sess, buf, time.Now())
	if !bytes.Equal(buf[:LoginHeaderSize+5], AppendLogin(nil, 9, "alice", nil)) {
		t.Fatalf("the login header changed: % x", buf)
	}
	if pw := buf[LoginHeaderSize+5:]; !bytes.Equal(pw, make([]byte, len(pw))) {
		t.Fatalf("password left in the read buffer: %q", pw)
	}
}

// recordingChannel keeps every message the client asks it to send (the slices themselves,
// not copies).
type recordingChannel struct{ sent [][]byte }

func (r *recordingChannel) Send(msg []byte, _ PacketKind, _ time.Time) bool {
	r.sent = append(r.sent, msg)
	return true
}
func (r *recordingChannel) Reconnect()            {}
func (r *recordingChannel) NoSession(error) error { return nil }
func (r *recordingChannel) Shutdown(bool)         {}

// The operator wipes its login message, which holds the password, once the channel has
// sealed it.
func TestClientWipesLoginPlaintext(t *testing.T) {
	ch := &recordingChannel{}
	c, up, err := NewClient(ClientConfig{Channel: ch, User: "alice", Password: []byte("correct horse")})
	if err != nil {
		t.Fatal(err)
	}
	up.Established(false, time.Now())
	c.Close()
	if len(ch.sent) == 0 || len(ch.sent[0]) != len(AppendLogin(nil, 1, "alice", []byte("correct horse"))) {
		t.Fatalf("no login sent first: %q", ch.sent)
	}
	if login := ch.sent[0]; !bytes.Equal(login, make([]byte, len(login))) {
		t.Fatalf("login message not wiped after sending: %q", login)
	}
}
