package crypto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testPSKHex = "3a7f0c9e1b2d4c6f8e0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a"

func TestParsePSK(t *testing.T) {
	want := PSK(unhex(t, testPSKHex))
	upper := strings.ToUpper(testPSKHex)
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"64 hex", testPSKHex, true},
		{"trailing LF", testPSKHex + "\n", true},
		{"trailing CRLF", testPSKHex + "\r\n", true},
		{"uppercase accepted", upper, true},
		{"mixed case accepted", upper[:32] + testPSKHex[32:] + "\n", true},
		{"63 digits", testPSKHex[:63], false},
		{"65 digits", testPSKHex + "a", false},
		{"63 digits + LF", testPSKHex[:63] + "\n", false},
		{"non-hex", testPSKHex[:63] + "g", false},
		{"leading space", " " + testPSKHex, false},
		{"trailing space", testPSKHex + " ", false},
		{"inner space", testPSKHex[:32] + " " + testPSKHex[33:], false},
		{"two LFs", testPSKHex + "\n\n", false},
		{"lone CR", testPSKHex + "\r", false},
		{"LF CR", testPSKHex + "\n\r", false},
		{"BOM", "\ufeff" + testPSKHex, false},
		{"0x prefix", "0x" + testPSKHex[2:], false},
		{"empty", "", false},
		{"only LF", "\n", false},
		{"all zero", strings.Repeat("0", 64), false},
		{"all zero + LF", strings.Repeat("0", 64) + "\n", false},
		{"base64 instead of hex", "On8Mnhst" + strings.Repeat("A", 36), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParsePSK([]byte(c.in))
			if c.ok {
				if err != nil || got != want {
					t.Fatalf("ParsePSK: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrBadPSK) {
				t.Fatalf("err = %v, want ErrBadPSK", err)
			}
			if got != (PSK{}) {
				t.Error("failed parse returned a non-zero PSK")
			}
			msg := err.Error()
			assertNoSecret(t, msg, testPSKHex[:16], testPSKHex[16:32], testPSKHex[32:48], testPSKHex[48:])
			if c.name == "non-hex" && strings.Contains(msg, "'g'") {
				t.Errorf("message echoes the offending character: %q", msg)
			}
		})
	}
}

func TestPSKNeverPrints(t *testing.T) {
	psk := PSK(unhex(t, testPSKHex))
	pieces := []string{testPSKHex[:8], testPSKHex[8:16], testPSKHex[56:], strings.ToUpper(testPSKHex[:8])}
	check := func(what, out string) {
		t.Helper()
		if !strings.Contains(out, "PSK(redacted)") {
			t.Errorf("%s: %q lacks the redacted form", what, out)
		}
		assertNoSecret(t, out, pieces...)
		// Also the decimal rendering of the first bytes (%v of a [32]byte).
		if strings.Contains(out, fmt.Sprint(psk[0], " ", psk[1], " ", psk[2])) {
			t.Errorf("%s: %q contains the raw bytes", what, out)
		}
	}
	check("verbs", fmt.Sprintf("%v %s %x %X %#v %q %d %+v %10.3x", psk, psk, psk, psk, psk, psk, psk, psk, psk))
	check("pointer", fmt.Sprintf("%v %x %#v", &psk, &psk, &psk))
	check("String", psk.String())
	check("GoString", psk.GoString())
	check("Sprint", fmt.Sprint(psk))
	check("Sprintln", fmt.Sprintln(psk))
	check("exported struct field", fmt.Sprintf("%+v %#v", struct{ Key PSK }{psk}, struct{ Key PSK }{psk}))
	j, err := json.Marshal(struct{ Key PSK }{psk})
	if err != nil {
		t.Fatal(err)
	}
	check("json", string(j))
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "psk", psk)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "psk", psk)
	check("slog", buf.String())
}

func TestPSKMarshalGenerate(t *testing.T) {
	psk := PSK(unhex(t, testPSKHex))
	if got := string(MarshalPSK(psk)); got != testPSKHex+"\n" {
		t.Errorf("MarshalPSK = %q", got)
	}
	a, err := GeneratePSK(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GeneratePSK(nil)
	if a == b || a == (PSK{}) {
		t.Error("GeneratePSK returned a repeated or zero key")
	}
	back, err := ParsePSK(MarshalPSK(a))
	if err != nil || back != a {
		t.Errorf("round trip: %v", err)
	}
	if _, err := GeneratePSK(bytes.NewReader(make([]byte, 32))); err == nil {
		t.Error("all-zero random source accepted")
	}
	if _, err := GeneratePSK(bytes.NewReader(make([]byte, 5))); err == nil {
		t.Error("short random source accepted")
	}
}

func TestSaveLoadPSK(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "link.psk")
	psk := PSK(unhex(t, testPSKHex))
	if err := SavePSK(path, psk); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o600)
	data, _ := os.ReadFile(path)
	if string(data) != testPSKHex+"\n" {
		t.Errorf("file content %q", data)
	}
	got, err := LoadPSK(path)
	if err != nil || got != psk {
		t.Fatalf("LoadPSK: %v", err)
	}
	other, _ := GeneratePSK(nil)
	err = SavePSK(path, other)
	if !errors.Is(err, ErrFileExists) || !strings.Contains(err.Error(), path) {
		t.Errorf("overwrite: %v", err)
	}
	assertNoSecret(t, err.Error(), string(MarshalPSK(other))[:16])
	if got, _ := LoadPSK(path); got != psk {
		t.Error("refused save changed the stored PSK")
	}
	if err := SavePSK(filepath.Join(dir, "zero.psk"), PSK{}); !errors.Is(err, ErrBadPSK) {
		t.Errorf("saving zero PSK: %v", err)
	}

	bad := filepath.Join(dir, "bad.psk")
	if err := os.WriteFile(bad, []byte(testPSKHex[:60]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadPSK(bad)
	if !errors.Is(err, ErrBadPSK) || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: %v", err)
	}
	assertNoSecret(t, err.Error(), testPSKHex[:16], testPSKHex[16:32])
	assertNoTempFiles(t, dir)
}
