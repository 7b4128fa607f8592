package app

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
	"unsafe"
)

// within reports whether sub lies entirely inside whole[:len(whole)].
func within(sub, whole []byte) bool {
	if len(sub) == 0 {
		return true
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(whole)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	return p >= base && p+uintptr(len(sub)) <= base+uintptr(len(whole))
}

// fill returns n bytes of b.
func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// guarded returns a copy of in followed by spare capacity filled with 0xee, so that a
// parser reaching past len(in) (inside cap) is caught by the slice checks.
func guarded(in []byte) []byte {
	buf := make([]byte, len(in)+64)
	copy(buf, in)
	for i := len(in); i < len(buf); i++ {
		buf[i] = 0xee
	}
	return buf[:len(in)]
}

// stamped is StampFrames on msg, for tables.
func stamped(msg []byte, d time.Duration) []byte {
	StampFrames(msg, d)
	return msg
}

// Session times are whole milliseconds, 0 before the epoch, saturating beyond 2^32-1 ms;
// only frames messages are stamped.
func TestStampFrames(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want uint32
	}{{0, 0}, {-time.Second, 0}, {999 * time.Microsecond, 0}, {time.Millisecond, 1}, {90 * time.Second, 90000},
		{50 * 24 * time.Hour, 1<<32 - 1}} {
		msg := AppendFrames(nil, []byte{1})
		StampFrames(msg, c.d)
		if got := binary.BigEndian.Uint32(msg[1:]); got != c.want {
			t.Errorf("StampFrames(%v) = %d, want %d", c.d, got, c.want)
		}
	}
	cmd := AppendCommand(nil, 7, CommandHeader{}, []byte("arm"))
	before := bytes.Clone(cmd)
	StampFrames(cmd, time.Hour)
	if !bytes.Equal(cmd, before) {
		t.Error("StampFrames changed a command")
	}
}

// appendMessage re-encodes a parsed message.
func appendMessage(dst []byte, m *Message) []byte {
	switch m.Type {
	case MsgLogin:
		return AppendLogin(dst, m.ID, string(m.User), m.Password)
	case MsgLoginResult:
		return AppendLoginResult(dst, m.ID, LoginStatus(m.Status), m.Role)
	case MsgCommand:
		return AppendCommand(dst, m.ID, m.Command, m.Payload)
	case MsgAck:
		return AppendAck(dst, m.ID, AckStatus(m.Status), m.Payload)
	case MsgTelemetry:
		return AppendTelemetry(dst, m.Payload)
	case MsgKeepalive:
		return AppendKeepalive(dst)
	case MsgClose:
		return AppendClose(dst, m.Reason)
	case MsgFrames:
		b := AppendFrames(dst, m.Payload)
		binary.BigEndian.PutUint32(b[len(dst)+1:], m.Stamp)
		return b
	}
	panic(fmt.Sprintf("appendMessage: type %d", m.Type))
}

func TestMessageRoundTrip(t *testing.T) {
	user64 := string(fill(MaxUserNameSize, 'u'))
	pw256 := fill(MaxPasswordSize, 'p')
	for _, c := range []struct {
		name string
		b    []byte
		want Message
		raw  []byte // expected bytes, when given
	}{
		{"login", AppendLogin(nil, 0x0102030405060708, "alice", []byte("pw")),
			Message{Type: MsgLogin, ID: 0x0102030405060708, User: []byte("alice"), Password: []byte("pw")},
			[]byte{1, 1, 2, 3, 4, 5, 6, 7, 8, 5, 'a', 'l', 'i', 'c', 'e', 'p', 'w'}},
		{"login empty password", AppendLogin(nil, 1, "a", nil),
			Message{Type: MsgLogin, ID: 1, User: []byte("a"), Password: []byte{}}, nil},
		{"login max sizes", AppendLogin(nil, 2, user64, pw256),
			Message{Type: MsgLogin, ID: 2, User: []byte(user64), Password: pw256}, nil},
		{"login result", AppendLoginResult(nil, 0xfffffffffffffffe, LoginOK, RolePilot),
			Message{Type: MsgLoginResult, ID: 0xfffffffffffffffe, Status: byte(LoginOK), Role: RolePilot},
			[]byte{2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0, 2}},
		{"login result max status", AppendLoginResult(nil, 3, LoginInternal, RoleNone),
			Message{Type: MsgLoginResult, ID: 3, Status: byte(LoginInternal), Role: RoleNone}, nil},
		{"command", AppendCommand(nil, 9, CommandHeader{Flags: CommandIndependent, Seq: 0x0102030405060708,
			Issued: -2, Lifetime: 30000}, []byte("arm")),
			Message{Type: MsgCommand, ID: 9, Payload: []byte("arm"), Command: CommandHeader{Flags: CommandIndependent,
				Seq: 0x0102030405060708, Issued: -2, Lifetime: 30000}},
			[]byte{3, 0, 0, 0, 0, 0, 0, 0, 9, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0x75, 0x30, 'a', 'r', 'm'}},
		{"command acknowledged twice", AppendCommand(nil, 9, CommandHeader{Flags: CommandIndependent | CommandAckTwice, Seq: 1}, nil),
			Message{Type: MsgCommand, ID: 9, Payload: []byte{}, Command: CommandHeader{Flags: CommandIndependent | CommandAckTwice, Seq: 1}},
			[]byte{3, 0, 0, 0, 0, 0, 0, 0, 9, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"command empty", AppendCommand(nil, 0, CommandHeader{}, nil), Message{Type: MsgCommand, Payload: []byte{}}, nil},
		{"command max", AppendCommand(nil, 1, CommandHeader{Issued: math.MaxInt32, Lifetime: math.MaxUint32}, fill(MaxCommandPayload, 'c')),
			Message{Type: MsgCommand, ID: 1, Payload: fill(MaxCommandPayload, 'c'),
				Command: CommandHeader{Issued: math.MaxInt32, Lifetime: math.MaxUint32}}, nil},
		{"ack", AppendAck(nil, 10, AckBusy, []byte("r")),
			Message{Type: MsgAck, ID: 10, Status: byte(AckBusy), Payload: []byte("r")},
			[]byte{4, 0, 0, 0, 0, 0, 0, 0, 10, 4, 'r'}},
		{"ack max", AppendAck(nil, 11, AckOK, fill(MaxAckPayload, 'a')),
			Message{Type: MsgAck, ID: 11, Payload: fill(MaxAckPayload, 'a')}, nil},
		{"telemetry", AppendTelemetry(nil, []byte("alt=12")),
			Message{Type: MsgTelemetry, Payload: []byte("alt=12")}, []byte("\x05alt=12")},
		{"telemetry empty", AppendTelemetry(nil, nil), Message{Type: MsgTelemetry, Payload: []byte{}}, nil},
		{"telemetry max", AppendTelemetry(nil, fill(MaxTelemetryPayload, 't')),
			Message{Type: MsgTelemetry, Payload: fill(MaxTelemetryPayload, 't')}, nil},
		{"keepalive", AppendKeepalive(nil), Message{Type: MsgKeepalive}, []byte{6}},
		{"close normal", AppendClose(nil, CloseNormal), Message{Type: MsgClose, Reason: CloseNormal}, []byte{7, 0}},
		{"close shutdown", AppendClose(nil, CloseShutdown), Message{Type: MsgClose, Reason: CloseShutdown}, []byte{7, 2}},
		{"frames", stamped(AppendFrames(nil, []byte{0xfd, 9}), 1500*time.Millisecond),
			Message{Type: MsgFrames, Stamp: 1500, Payload: []byte{0xfd, 9}}, []byte{8, 0, 0, 5, 0xdc, 0xfd, 9}},
		{"frames max", AppendFrames(nil, fill(MaxFramesPayload, 'f')),
			Message{Type: MsgFrames, Payload: fill(MaxFramesPayload, 'f')}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.raw != nil && !bytes.Equal(c.b, c.raw) {
				t.Fatalf("encoded % x, want % x", c.b, c.raw)
			}
			var m Message
			if err := ParseMessage(c.b, &m); err != nil {
				t.Fatal(err)
			}
			if m.Type != c.want.Type || m.ID != c.want.ID || m.Status != c.want.Status || m.Role != c.want.Role ||
				m.Reason != c.want.Reason || !bytes.Equal(m.User, c.want.User) ||
				!bytes.Equal(m.Password, c.want.Password) || !bytes.Equal(m.Payload, c.want.Payload) {
				t.Fatalf("parsed %+v, want %+v", m, c.want)
			}
			for _, s := range [][]byte{m.User, m.Password, m.Payload} {
				if !within(s, c.b) {
					t.Errorf("slice outside the input")
				}
			}
			if cap(m.User) != len(m.User) {
				t.Errorf("User cap %d, len %d", cap(m.User), len(m.User))
			}
			if re := appendMessage(nil, &m); !bytes.Equal(re, c.b) {
				t.Errorf("re-encoded % x, want % x", re, c.b)
			}
		})
	}
}

func TestMessageMalformed(t *testing.T) {
	login := func(n byte, user, pw int) []byte {
		b := []byte{MsgLogin, 0, 0, 0, 0, 0, 0, 0, 1, n}
		return append(append(b, fill(user, 'u')...), fill(pw, 'p')...)
	}
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"type 0", []byte{0}},
		{"type 0 long", []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"type 8", []byte{8, 0}},
		{"type 15", []byte{15}},
		{"type 255", []byte{255, 0, 0}},
		{"login type only", []byte{MsgLogin}},
		{"login short header", []byte{MsgLogin, 0, 0, 0, 0, 0, 0, 0, 1}},
		{"login user length 0", login(0, 0, 3)},
		{"login user length 0 no body", login(0, 0, 0)},
		{"login user length > remaining", login(5, 4, 0)},
		{"login user length 255 short", login(255, 10, 0)},
		{"login user > 64", login(65, 65, 0)},
		{"login user 255", login(255, 255, 0)},
		{"login password > 256", login(4, 4, MaxPasswordSize+1)},
		{"login user 64 password > 256", login(64, 64, MaxPasswordSize+1)},
		{"login result short", AppendLoginResult(nil, 1, LoginOK, RolePilot)[:LoginResultSize-1]},
		{"login result long", append(AppendLoginResult(nil, 1, LoginOK, RolePilot), 0)},
		{"login result type only", []byte{MsgLoginResult}},
		{"login result bad status", AppendLoginResult(nil, 1, MaxLoginStatus+1, RolePilot)},
		{"login result status 255", AppendLoginResult(nil, 1, 255, RoleObserver)},
		{"login result bad role", AppendLoginResult(nil, 1, LoginOK, RolePilot+1)},
		{"login result role 255", AppendLoginResult(nil, 1, LoginOK, 255)},
		{"command short", AppendCommand(nil, 1, CommandHeader{}, nil)[:CommandHeaderSize-1]},
		{"command unknown flag", AppendCommand(nil, 1, CommandHeader{Flags: 4}, nil)},
		{"command high flag", AppendCommand(nil, 1, CommandHeader{Flags: 0x80}, nil)},
		{"command type only", []byte{MsgCommand}},
		{"ack short", AppendAck(nil, 1, AckOK, nil)[:AckHeaderSize-1]},
		{"ack bad status", AppendAck(nil, 1, MaxAckStatus+1, nil)},
		{"ack status 255", AppendAck(nil, 1, 255, []byte("x"))},
		{"keepalive extra byte", append(AppendKeepalive(nil), 0)},
		{"close short", []byte{MsgClose}},
		{"close long", append(AppendClose(nil, CloseNormal), 0)},
		{"close bad reason", AppendClose(nil, MaxCloseReason+1)},
		{"close reason 255", AppendClose(nil, 255)},
		{"oversize command", AppendCommand(nil, 1, CommandHeader{}, fill(MaxCommandPayload+1, 'c'))},
		{"oversize ack", AppendAck(nil, 1, AckOK, fill(MaxAckPayload+1, 'a'))},
		{"oversize telemetry", AppendTelemetry(nil, fill(MaxTelemetryPayload+1, 't'))},
		{"frames without frames", AppendFrames(nil, nil)},
		{"frames short header", AppendFrames(nil, nil)[:FramesHeaderSize-1]},
		{"frames type only", []byte{MsgFrames}},
		{"oversize frames", AppendFrames(nil, fill(MaxFramesPayload+1, 'f'))},
		{"oversize unknown", fill(MaxPlaintextSize+1, 0)},
		{"oversize 2048", AppendTelemetry(nil, fill(2047, 't'))},
	} {
		t.Run(c.name, func(t *testing.T) {
			var m Message
			if err := ParseMessage(c.b, &m); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseMessage(% x) = %v, want ErrMalformed", c.b[:min(len(c.b), 16)], err)
			}
		})
	}
}

func FuzzParseMessage(f *testing.F) {
	for _, m := range [][]byte{
		AppendLogin(nil, 1, "alice", []byte("alice-pw")),
		AppendLoginResult(nil, 1, LoginOK, RolePilot),
		AppendCommand(nil, 2, CommandHeader{Seq: 5, Issued: 100, Lifetime: 30000}, []byte("arm")),
		AppendAck(nil, 2, AckOK, []byte("done:arm")),
		AppendTelemetry(nil, []byte("alt=12.5")),
		AppendKeepalive(nil),
		AppendClose(nil, CloseShutdown),
		AppendLogin(nil, 3, string(fill(MaxUserNameSize, 'u')), fill(MaxPasswordSize, 'p')),
		AppendTelemetry(nil, fill(MaxTelemetryPayload, 't')),
		stamped(AppendFrames(nil, []byte{0xfd, 9, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0}), 42*time.Millisecond),
	} {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		b := guarded(in)
		var m Message
		if err := ParseMessage(b, &m); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if len(b) == 0 || len(b) > MaxPlaintextSize || m.Type != b[0] {
			t.Fatalf("accepted type %d length %d", m.Type, len(b))
		}
		for name, s := range map[string][]byte{"User": m.User, "Password": m.Password, "Payload": m.Payload} {
			if !within(s, b) {
				t.Fatalf("%s outside the input", name)
			}
		}
		if cap(m.User) != len(m.User) {
			t.Fatalf("User: cap %d != len %d", cap(m.User), len(m.User))
		}
		switch m.Type {
		case MsgLogin:
			if len(m.User) == 0 || len(m.User) > MaxUserNameSize || len(m.Password) > MaxPasswordSize {
				t.Fatalf("login sizes %d/%d", len(m.User), len(m.Password))
			}
		case MsgLoginResult:
			if LoginStatus(m.Status) > MaxLoginStatus || m.Role > RolePilot {
				t.Fatalf("login result %+v", m)
			}
		case MsgAck:
			if AckStatus(m.Status) > MaxAckStatus {
				t.Fatalf("ack status %d", m.Status)
			}
		case MsgClose:
			if m.Reason > MaxCloseReason {
				t.Fatalf("close reason %d", m.Reason)
			}
		}
		if KindOfMessage(m.Type) == KindData {
			t.Fatalf("accepted type %d has no packet kind", m.Type)
		}
		if re := appendMessage(nil, &m); !bytes.Equal(re, b) {
			t.Fatalf("round trip:\n got % x\nwant % x", re, b)
		}
	})
}
