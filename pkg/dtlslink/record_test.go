package dtlslink

import (
	"bytes"
	"testing"
)

func TestClassify(t *testing.T) {
	hello := minimalClientHello()
	cid := append([]byte{contentConnectionID, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 5}, append(bytes.Repeat([]byte{7}, ConnectionIDSize), 0, 1, 0)...)
	alert := []byte{contentAlert, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 40}
	encAlert := append(bytes.Clone(alert[:13]), 1, 2, 3)
	encAlert[recOffEpoch+1] = 1
	for _, tc := range []struct {
		name  string
		pkt   []byte
		class recordClass
	}{
		{"client hello", hello, classHandshake},
		{"cid record", cid, classData},
		{"clear alert", alert, classAlert},
		{"encrypted alert", encAlert, classData},
		{"short", hello[:12], classGarbage},
		{"not DTLS", []byte("GET / HTTP/1.1\r\nHost: x\r\n"), classGarbage},
		{"unknown content type", append([]byte{99}, hello[1:]...), classGarbage},
	} {
		if got := classify(tc.pkt); got != tc.class {
			t.Errorf("%s: class %d, want %d", tc.name, got, tc.class)
		}
	}
	if got, ok := recordCID(cid, ConnectionIDSize); !ok || !bytes.Equal(got, bytes.Repeat([]byte{7}, ConnectionIDSize)) {
		t.Errorf("cid %x %v", got, ok)
	}
	if _, ok := recordCID(hello, ConnectionIDSize); ok {
		t.Error("a handshake record has no CID")
	}
	if _, ok := recordCID(cid[:recOffCID+ConnectionIDSize+1], ConnectionIDSize); ok {
		t.Error("a truncated CID record parsed")
	}
	serverHello := bytes.Clone(hello)
	serverHello[hsOffType] = handshakeServerHello
	if !isServerHello(serverHello) || isServerHello(hello) || isServerHello(cid) || isServerHello(hello[:hsOffType]) {
		t.Error("isServerHello")
	}
	r, ok := clientHelloRandom(hello)
	if !ok || r[0] != 0 || r[31] != 31 {
		t.Errorf("random %x %v", r, ok)
	}
	for name, pkt := range map[string][]byte{
		"truncated":    hello[:clientHelloAt-1],
		"epoch 1":      func() []byte { b := bytes.Clone(hello); b[recOffEpoch+1] = 1; return b }(),
		"server hello": func() []byte { b := bytes.Clone(hello); b[hsOffType] = 2; return b }(),
		"fragment":     func() []byte { b := bytes.Clone(hello); b[hsOffFragOff+2] = 1; return b }(),
	} {
		if isClientHello(pkt) {
			t.Errorf("%s taken for a ClientHello", name)
		}
	}
}

// FuzzRecord: the demultiplexer's parsers never panic and agree with each other.
func FuzzRecord(f *testing.F) {
	f.Add(minimalClientHello())
	f.Add([]byte{contentConnectionID, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0})
	f.Add([]byte{contentAlert, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 40})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		class := classify(pkt)
		if isClientHello(pkt) && class != classHandshake {
			t.Fatal("a ClientHello not classed as handshake")
		}
		if isServerHello(pkt) && class != classHandshake {
			t.Fatal("a ServerHello not classed as handshake")
		}
		if _, ok := recordCID(pkt, ConnectionIDSize); ok && class != classData {
			t.Fatal("a CID record not classed as data")
		}
	})
}
