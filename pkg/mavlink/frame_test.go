package mavlink

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
)

// nodeFrames are frames built by a MAVLink implementation nobody here wrote (node-mavlink,
// e2e/mavlinkpeer/frames.js), by name.
func nodeFrames(t testing.TB) map[string][]byte {
	t.Helper()
	f, err := os.Open("testdata/node-frames.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	frames := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, h, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		frames[name] = b
	}
	return frames
}

// Every frame node-mavlink builds parses, with its checksum verified against our CRC_EXTRA
// table, and with the fields node-mavlink put in.
func TestNextForeignFrames(t *testing.T) {
	for _, c := range []struct {
		name               string
		version, sys, comp uint8
		msg                uint32
		signed             bool
		command            uint16
		observer           bool
	}{
		{"heartbeat-v2", 2, 255, 190, MsgHeartbeat, false, 0, false},
		{"heartbeat-v1", 1, 1, 1, MsgHeartbeat, false, 0, false},
		{"command-long-arm-v2", 2, 255, 190, MsgCommandLong, false, 400, false},
		{"command-long-arm-v2-signed", 2, 255, 190, MsgCommandLong, true, 400, false},
		{"command-long-request-message-v2", 2, 255, 190, MsgCommandLong, false, 512, true},
		{"param-request-list-v2", 2, 255, 190, 21, false, 0, true},
		{"attitude-v2", 2, 255, 190, 30, false, 0, false},
		{"attitude-v1", 1, 1, 1, 30, false, 0, false},
		{"manual-control-v2", 2, 255, 190, 69, false, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw := nodeFrames(t)[c.name]
			f, rest, err := Next(raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(rest) != 0 || !bytes.Equal(f.Raw, raw) || !f.Checked {
				t.Fatalf("rest %d, raw %x, checked %v", len(rest), f.Raw, f.Checked)
			}
			if f.Version != c.version || f.SysID != c.sys || f.CompID != c.comp || f.MsgID != c.msg || f.Signed != c.signed {
				t.Fatalf("parsed %+v", f)
			}
			if got := Command(&f); got != c.command {
				t.Errorf("command %d, want %d", got, c.command)
			}
			if got := ObserverMay(&f); got != c.observer {
				t.Errorf("ObserverMay = %v, want %v", got, c.observer)
			}
		})
	}
}

// AppendFrame builds what node-mavlink builds, byte for byte (here: the trimmed heartbeat).
func TestAppendFrameMatchesForeign(t *testing.T) {
	want := nodeFrames(t)["heartbeat-v2"]
	payload := []byte{0, 0, 0, 0, 6, 8, 0, 4, 3} // custom_mode, type GCS, autopilot INVALID, base_mode, ACTIVE, version 3
	if got := AppendFrame(nil, 1, 255, 190, MsgHeartbeat, payload); !bytes.Equal(got, want) {
		t.Fatalf("AppendFrame = %x\n          want %x", got, want)
	}
}

func TestNextRejects(t *testing.T) {
	frames := nodeFrames(t)
	arm := frames["command-long-arm-v2"]
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 0x40; return c }
	unknown := AppendFrame(nil, 0, 1, 1, 60000, []byte{1, 2, 3}) // no CRC_EXTRA known: checksum of extra 0
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"not a magic byte", []byte{0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9}, ErrMagic},
		{"v2 header cut", arm[:9], ErrTruncated},
		{"v1 header cut", frames["heartbeat-v1"][:5], ErrTruncated},
		{"v2 payload cut", arm[:len(arm)-1], ErrTruncated},
		{"signed without signature", frames["command-long-arm-v2-signed"][:len(arm)], ErrTruncated},
		{"unknown incompat flag", flip(arm, 2), ErrFlags},
		{"payload bit flipped", flip(arm, 12), ErrChecksum},
		{"checksum bit flipped", flip(arm, len(arm)-1), ErrChecksum},
		{"length byte changed", func() []byte { c := append(bytes.Clone(arm), 0); c[1]++; return c }(), ErrChecksum},
		{"v1 payload bit flipped", flip(frames["attitude-v1"], 8), ErrChecksum},
		{"message id changed to another known one", func() []byte { c := bytes.Clone(arm); c[7] = 75; return c }(), ErrChecksum},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := Next(c.b); !errors.Is(err, c.want) {
				t.Fatalf("Next = %v, want %v", err, c.want)
			}
		})
	}
	f, _, err := Next(unknown)
	if err != nil || f.Checked || f.MsgID != 60000 || ObserverMay(&f) {
		t.Fatalf("unknown id: %v checked=%v observer=%v", err, f.Checked, ObserverMay(&f))
	}
}

// The observer policy, message by message (MAVLINK.md's lists).
func TestObserverMay(t *testing.T) {
	command := func(msg uint32, cmd uint16) []byte {
		p := make([]byte, 33)
		p[28], p[29] = byte(cmd), byte(cmd>>8)
		return AppendFrame(nil, 0, 255, 190, msg, p)
	}
	plain := func(msg uint32, n int) []byte { return AppendFrame(nil, 0, 255, 190, msg, bytes.Repeat([]byte{1}, n)) }
	for _, c := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"HEARTBEAT (the pilot-link trap)", plain(0, 9), false},
		{"PING", plain(4, 14), true},
		{"PARAM_REQUEST_READ", plain(20, 20), true},
		{"PARAM_REQUEST_LIST", plain(21, 2), true},
		{"MISSION_REQUEST_LIST", plain(43, 3), true},
		{"MISSION_REQUEST_INT", plain(51, 5), true},
		{"TIMESYNC", plain(111, 18), true},
		{"LOG_REQUEST_LIST", plain(117, 6), true},
		{"PARAM_EXT_REQUEST_LIST", plain(321, 2), true},
		{"SET_MODE", plain(11, 6), false},
		{"PARAM_SET", plain(23, 23), false},
		{"MISSION_ITEM_INT", plain(73, 38), false},
		{"MANUAL_CONTROL", plain(69, 30), false},
		{"RC_CHANNELS_OVERRIDE", plain(70, 38), false},
		{"SET_POSITION_TARGET_GLOBAL_INT", plain(86, 53), false},
		{"REQUEST_DATA_STREAM", plain(66, 6), false},
		{"SETUP_SIGNING", plain(256, 42), false},
		{"FILE_TRANSFER_PROTOCOL", plain(110, 254), false},
		{"COMMAND_LONG arm", command(76, 400), false},
		{"COMMAND_LONG takeoff", command(76, 22), false},
		{"COMMAND_LONG set message interval", command(76, 511), false},
		{"COMMAND_LONG request message", command(76, 512), true},
		{"COMMAND_LONG request protocol version", command(76, 519), true},
		{"COMMAND_LONG request capabilities", command(76, 520), true},
		{"COMMAND_LONG get home position", command(76, 410), true},
		{"COMMAND_INT request message", command(75, 512), true},
		{"COMMAND_INT reposition", command(75, 192), false},
		{"COMMAND_LONG trimmed to no command", AppendFrame(nil, 0, 255, 190, 76, make([]byte, 33)), false},
		{"unknown message id", plain(60001, 4), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, _, err := Next(c.b)
			if err != nil {
				t.Fatal(err)
			}
			if got := ObserverMay(&f); got != c.want {
				t.Fatalf("ObserverMay = %v, want %v", got, c.want)
			}
		})
	}
}

// Scan finds every frame of a datagram holding several, and resumes after damage: a
// damaged frame costs only itself (property against a model: the frames as appended).
func TestScanAgainstModel(t *testing.T) {
	frames := nodeFrames(t)
	names := []string{"heartbeat-v2", "attitude-v2", "command-long-arm-v2-signed", "heartbeat-v1", "param-request-list-v2",
		"attitude-v1", "manual-control-v2"}
	for damaged := -1; damaged < len(names); damaged++ {
		var datagram []byte
		var want [][]byte
		for i, n := range names {
			b := frames[n]
			if i == damaged {
				b = bytes.Clone(b)
				b[len(b)/2] ^= 0x01 // still starts with a magic byte: scanning must resume after it
			} else {
				want = append(want, b)
			}
			datagram = append(datagram, b...)
		}
		var got [][]byte
		bad := 0
		Scan(datagram, func(f Frame) { got = append(got, bytes.Clone(f.Raw)) }, func(error) { bad++ })
		if len(got) != len(want) {
			t.Fatalf("damaged %d: %d frames, want %d (%d bad runs)", damaged, len(got), len(want), bad)
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("damaged %d: frame %d = %x, want %x", damaged, i, got[i], want[i])
			}
		}
		if (damaged >= 0) != (bad > 0) {
			t.Fatalf("damaged %d: %d bad runs", damaged, bad)
		}
	}
}

func TestScanAllocatesNothing(t *testing.T) {
	frames := nodeFrames(t)
	datagram := append(bytes.Clone(frames["attitude-v2"]), frames["command-long-arm-v2"]...)
	n := 0
	if a := testing.AllocsPerRun(100, func() {
		Scan(datagram, func(f Frame) { n += len(f.Raw) }, func(error) {})
	}); a != 0 {
		t.Fatalf("%v allocations per datagram", a)
	}
}

// FuzzScan: arbitrary datagrams never panic the scanner; every frame it reports lies
// inside the input, in order, without overlap, and parses again on its own.
func FuzzScan(f *testing.F) {
	for _, b := range nodeFrames(f) {
		f.Add(b)
	}
	all := nodeFrames(f)
	f.Add(append(bytes.Clone(all["attitude-v2"]), all["heartbeat-v1"]...))
	f.Add([]byte{MagicV2, 255, 1})
	f.Add([]byte{MagicV1})
	f.Fuzz(func(t *testing.T, datagram []byte) {
		offset := 0
		Scan(datagram, func(fr Frame) {
			idx := bytes.Index(datagram[offset:], fr.Raw)
			if idx < 0 {
				t.Fatalf("frame %x not in the rest of the input", fr.Raw)
			}
			offset += idx + len(fr.Raw)
			again, rest, err := Next(fr.Raw)
			if err != nil || len(rest) != 0 || !bytes.Equal(again.Raw, fr.Raw) {
				t.Fatalf("frame does not parse on its own: %v", err)
			}
			if len(fr.Raw) < MinFrameSize || len(fr.Raw) > MaxFrameSize {
				t.Fatalf("frame of %d bytes", len(fr.Raw))
			}
		}, func(error) {})
	})
}
