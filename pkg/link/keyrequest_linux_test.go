package link

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A key request to an address where nothing listens ends with ErrNoListener as soon as
// the kernel reports the ICMP port unreachable, not at the caller's deadline; and one to a
// drone on real UDP gets the drone's key.
func TestRequestDroneKeyUDP(t *testing.T) {
	testKeys(t)
	t.Run("nothing listens", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		drone := closedPort(t)
		pub, err := RequestDroneKey(ctx, KeyRequestConfig{Conn: listenOrSkip(t, "127.0.0.1:0"), Drone: drone, PSK: testPSK})
		if pub != nil || !errors.Is(err, ErrNoListener) || ctx.Err() != nil {
			t.Fatalf("RequestDroneKey: %v (context: %v), want ErrNoListener before the deadline", err, ctx.Err())
		}
	})
	t.Run("drone", func(t *testing.T) {
		r := startServer(t, listenOrSkip(t, "127.0.0.1:0"), nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // only bounds a broken build
		defer cancel()
		pub, err := RequestDroneKey(ctx, KeyRequestConfig{Conn: listenOrSkip(t, "0.0.0.0:0"), Drone: r.address, PSK: testPSK})
		if err != nil || !pub.Equal(&testDrone.PublicKey) {
			t.Fatalf("RequestDroneKey: %v", err)
		}
	})
}
