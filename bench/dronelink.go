package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/metrics"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// linkKeyBits is the RSA size of the drone and operator keys of the data-path contenders:
// the product default. The data path never touches RSA; only setup time depends on it.
const linkKeyBits = 3072

// Bench identity of the one pilot.
const (
	pilotName     = "pilot"
	pilotPassword = "bench-password"
)

// env holds what several sections share, made on first use.
type env struct {
	once sync.Once
	ids  *identities
	err  error
}

// identities are a drone key, operator keys and the fleet PSK.
type identities struct {
	drone     *rsa.PrivateKey
	operators []*rsa.PrivateKey
	psk       crypto.PSK
}

// identities returns the shared drone and pilot keys, generating them once.
func (e *env) identities() (*identities, error) {
	e.once.Do(func() { e.ids, e.err = newIdentities(linkKeyBits, 1) })
	return e.ids, e.err
}

// newIdentities generates a drone key, n operator keys (in parallel) and a PSK.
func newIdentities(bits, n int) (*identities, error) {
	keys := make([]*rsa.PrivateKey, n+1)
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() { keys[i], errs[i] = crypto.GenerateRSAKey(rand.Reader, bits) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	psk, err := crypto.GeneratePSK(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &identities{drone: keys[0], operators: keys[1:], psk: psk}, nil
}

// benchAuth is a read-only user database: one pilot owning every operator key. The
// password check is a constant-time compare, not argon2id, where logins happen once,
// before any measurement; with hash set (the cold-start mode, which measures logins) it
// is the product's argon2id check against that hash.
type benchAuth struct {
	keys map[crypto.KeyID]*rsa.PublicKey
	hash string
}

func newBenchAuth(ids *identities) *benchAuth {
	a := &benchAuth{keys: make(map[crypto.KeyID]*rsa.PublicKey)}
	for _, k := range ids.operators {
		a.keys[crypto.KeyIDOf(&k.PublicKey)] = &k.PublicKey
	}
	return a
}

func (a *benchAuth) LookupKey(id crypto.KeyID) (*rsa.PublicKey, bool) {
	p, ok := a.keys[id]
	return p, ok
}

// Authorize is the cheap check that user exists and owns key.
func (a *benchAuth) Authorize(user string, key crypto.KeyID) (link.Role, link.LoginStatus) {
	if user != pilotName {
		return link.RoleNone, link.LoginUnknownUser
	}
	if _, ok := a.keys[key]; !ok {
		return link.RoleNone, link.LoginKeyNotAuthorised
	}
	return link.RolePilot, link.LoginOK
}

func (a *benchAuth) Login(user string, password []byte, key crypto.KeyID) (link.Role, link.LoginStatus) {
	if role, status := a.Authorize(user, key); status != link.LoginOK {
		return role, status
	}
	if a.hash != "" {
		if ok, err := userdb.VerifyPassword(a.hash, password); err != nil || !ok {
			return link.RoleNone, link.LoginWrongPassword
		}
		return link.RolePilot, link.LoginOK
	}
	if subtle.ConstantTimeCompare(password, []byte(pilotPassword)) != 1 {
		return link.RoleNone, link.LoginWrongPassword
	}
	return link.RolePilot, link.LoginOK
}

// acknowledge is the drone's command handler: execute nothing, acknowledge at once.
func acknowledge(context.Context, link.Command) (link.AckStatus, []byte) { return link.AckOK, nil }

// drone is a running link.Server on a loopback UDP socket.
type drone struct {
	server *link.Server
	cancel context.CancelFunc
	done   chan error
}

// startDrone runs a link.Server on 127.0.0.1 for ids with hooks (nil: none), with
// handshake and login rate limits opened up for benchmarking; tune may change the config.
func startDrone(ids *identities, hooks link.Hooks, tune func(*link.ServerConfig)) (*drone, error) {
	conn, err := link.ListenUDP("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cfg := link.ServerConfig{
		Conn: conn, PSK: ids.psk, DroneKey: link.NewDroneKey(ids.drone), Auth: newBenchAuth(ids),
		Handler: acknowledge, Hooks: hooks,
		HandshakeRate: 1e6, HandshakeBurst: 1 << 20, LoginRate: 1e6, LoginBurst: 1 << 20,
	}
	if tune != nil {
		tune(&cfg)
	}
	srv, err := link.NewServer(cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &drone{server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- srv.Run(ctx) }()
	return d, nil
}

// stop shuts the server down and waits for it.
func (d *drone) stop() error {
	d.cancel()
	return <-d.done
}

// dialPilot logs the pilot in with operator key i through address to (the drone or a
// proxy); tune, if not nil, adjusts the client config first (telemetry or frames handlers).
func dialPilot(ctx context.Context, ids *identities, i int, to netip.AddrPort, hooks link.Hooks, tune func(*link.ClientConfig)) (*link.Client, error) {
	conn, err := link.ListenUDP("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cfg := link.ClientConfig{
		Conn: conn, Drone: to, PSK: ids.psk, OperatorKey: ids.operators[i], DronePublic: &ids.drone.PublicKey,
		User: pilotName, Password: []byte(pilotPassword), Hooks: hooks,
	}
	if tune != nil {
		tune(&cfg)
	}
	c, err := link.Dial(ctx, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// runDronelink is the full product data path: a link.Server (drone) streams telemetry with
// Broadcast (seal, send) to one logged-in link.Client (operator), which receives (in
// recvmmsg batches: link.UDPConn is a link.BatchConn), opens, checks the replay window and
// hands each payload to OnTelemetry, where it is counted. With batch > 1 the drone sends
// with Server.BroadcastBatch, batch payloads per call (one sendmmsg). With withMetrics both
// ends report to pkg/metrics on a Prometheus registry.
func runDronelink(ctx context.Context, e *env, size int, d time.Duration, withMetrics bool, batch int) (result, error) {
	name := "dronelink"
	if !withMetrics {
		name = "dronelink-nometrics"
	}
	if batch > 1 {
		name = "dronelink-batch"
	}
	ids, err := e.identities()
	if err != nil {
		return result{}, err
	}
	var note string
	if size > link.MaxTelemetryPayload {
		note = fmt.Sprintf("payload clamped from %d to link.MaxTelemetryPayload = %d bytes", size, link.MaxTelemetryPayload)
		size = link.MaxTelemetryPayload
	}
	reg := prometheus.NewRegistry()
	var droneHooks, pilotHooks link.Hooks
	if withMetrics {
		if droneHooks, err = metrics.New(reg, metrics.Options{Role: metrics.RoleDrone}); err != nil {
			return result{}, err
		}
		if pilotHooks, err = metrics.New(reg, metrics.Options{Role: metrics.RoleOperator}); err != nil {
			return result{}, err
		}
	}
	dr, err := startDrone(ids, droneHooks, nil)
	if err != nil {
		return result{}, err
	}
	defer dr.stop()
	var received atomic.Uint64
	pilot, err := dialPilot(ctx, ids, 0, dr.server.LocalAddr(), pilotHooks, func(c *link.ClientConfig) {
		c.OnTelemetry = func([]byte) { received.Add(1) }
	})
	if err != nil {
		return result{}, err
	}
	defer pilot.Close()

	// The drone sends only on sessions its operator has confirmed; Dial returns once logged
	// in, so the first Broadcast already reaches the pilot.
	payload := make([]byte, size)
	if n, err := dr.server.Broadcast(payload); err != nil || n != 1 {
		return result{}, fmt.Errorf("broadcast reached %d operators: %v", n, err)
	}
	settle(&received)
	received.Store(0)

	var sent uint64
	var elapsed time.Duration
	if batch > 1 {
		payloads := make([][]byte, batch)
		for i := range payloads {
			payloads[i] = payload
		}
		_, elapsed = drive(d, func() bool {
			n, err := dr.server.BroadcastBatch(payloads)
			if err == nil {
				sent += uint64(n)
			}
			return false
		}, &received)
		note = strings.TrimPrefix(note+fmt.Sprintf("; Server.BroadcastBatch, %d payloads per call (sendmmsg)", batch), "; ")
	} else {
		sent, elapsed = drive(d, func() bool {
			n, err := dr.server.Broadcast(payload)
			return err == nil && n == 1
		}, &received)
	}
	r := result{name: name, size: size, sent: sent, received: received.Load(), elapsed: elapsed, note: note}
	if withMetrics {
		bytes := gatherValue(reg, "dronelink_sent_bytes_total", metrics.RoleDrone, "telemetry")
		packets := gatherValue(reg, "dronelink_packets_sent_total", metrics.RoleDrone, "telemetry")
		if packets > 0 {
			r.overhead = int(bytes/packets+0.5) - size
		}
	} else {
		r.overhead = link.DataOverhead + link.TelemetryHeaderSize
	}
	return r, nil
}

// gatherValue reads one counter series (by role and kind label) from reg, or 0.
func gatherValue(reg *prometheus.Registry, name, role, kind string) float64 {
	families, err := reg.Gather()
	if err != nil {
		return 0
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label(m, "role") == role && label(m, "kind") == kind {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
