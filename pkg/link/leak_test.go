package link

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// No secret reaches the logs, at the most verbose level, in text or JSON, through logins
// (good and bad), commands, rekeys, refusals and revocation: not the PSK, not a password,
// not a private key, not a session's keys.
func TestLogsCarryNoSecrets(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var logs syncBuffer
			opts := &slog.HandlerOptions{Level: slog.LevelDebug}
			var logger *slog.Logger
			if format == "json" {
				logger = slog.New(slog.NewJSONHandler(&logs, opts))
			} else {
				logger = slog.New(slog.NewTextHandler(&logs, opts))
			}
			f := newFakeRig(t, func(c *ServerConfig) { c.Logger = logger })
			alice, err := f.client(t, "alice", aliceAddr, func(c *ClientConfig) {
				c.Logger = logger
				c.RekeyAfterTime = 200 * time.Millisecond
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				command(t, alice, "secret-free command")
				if i == 10 {
					time.Sleep(300 * time.Millisecond) // let a rekey happen
				}
			}
			f.client(t, "alice", bobAddr, func(c *ClientConfig) { c.Logger = logger; c.Password = []byte("wrong-password-guess") })
			var resumeKeys [][]byte
			f.server.mu.RLock()
			for _, ss := range f.server.sessions {
				if ss != nil {
					resumeKeys = append(resumeKeys, bytes.Clone(ss.resume[:]))
				}
			}
			f.server.mu.RUnlock()
			f.auth.remove("alice")
			f.server.Revoke(func(SessionInfo) bool { return true })
			time.Sleep(50 * time.Millisecond)

			secrets := map[string]string{
				"PSK hex":        hex.EncodeToString(testPSK[:]),
				"PSK HEX":        strings.ToUpper(hex.EncodeToString(testPSK[:])),
				"PSK base64":     base64.StdEncoding.EncodeToString(testPSK[:]),
				"PSK raw":        string(testPSK[:]),
				"password":       "alice-pw",
				"wrong password": "wrong-password-guess",
			}
			pem, _ := crypto.MarshalPrivateKeyPEM(testOp1)
			for _, line := range strings.Split(string(pem), "\n") {
				if len(line) > 40 {
					secrets["private key line"] = line
					break
				}
			}
			for i, k := range resumeKeys {
				secrets["resume key hex "+string(rune('0'+i))] = hex.EncodeToString(k)
				secrets["resume key base64 "+string(rune('0'+i))] = base64.StdEncoding.EncodeToString(k)
			}
			logs.mu.Lock()
			out := logs.b.String()
			logs.mu.Unlock()
			if len(out) < 1000 || !strings.Contains(out, "login") {
				t.Fatalf("the scenario logged too little to prove anything (%d bytes)", len(out))
			}
			for what, secret := range secrets {
				if strings.Contains(out, secret) {
					t.Errorf("the logs contain the %s", what)
				}
			}
			t.Logf("%d bytes of %s logs, %d secrets searched", len(out), format, len(secrets))
		})
	}
}
