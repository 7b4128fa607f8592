package link

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// closedPort is a loopback UDP address where nothing listens: a port just released.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr()
	c.Close()
	return addr
}

// #13 finding 5 (ICMP): dialling an address where nothing listens fails with
// ErrNoListener as soon as the kernel reports the ICMP port unreachable, long before the
// dial's own deadline, with a message that says so.
func TestDialNoListener(t *testing.T) {
	testKeys(t)
	drone := closedPort(t)
	conn, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Dial(ctx, clientConfig(conn, drone, "alice"))
	if err == nil {
		c.Close()
		t.Fatal("Dial succeeded with nothing listening")
	}
	if ctx.Err() != nil {
		t.Fatalf("Dial waited for its deadline: %v", err)
	}
	if !errors.Is(err, ErrNoListener) {
		t.Errorf("Dial: %v, want ErrNoListener", err)
	}
	if want := "nothing listens at " + drone.String(); !strings.Contains(err.Error(), want) {
		t.Errorf("Dial: %v, want an error containing %q", err, want)
	}
}

// A running client does not die from a transient ICMP port unreachable (the drone's
// daemon restarting, with an operator that survives the drone's shutdown): it reconnects
// once the drone is back and commands again.
func TestRunningClientSurvivesPortUnreachable(t *testing.T) {
	srvConn, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := srvConn.LocalAddr()
	fast := func(c *ServerConfig) { c.KeepaliveInterval = 100 * time.Millisecond }
	r := startServer(t, srvConn, fast)
	conn, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordHandler{}
	cfg := clientConfig(conn, addr, "alice")
	cfg.KeepaliveInterval = 100 * time.Millisecond
	cfg.Logger = slog.New(rec)
	cfg.SurviveShutdown = true
	c := dial(t, cfg)
	if ack := command(t, c, "before"); ack.Status != AckOK {
		t.Fatalf("before: %v", ack.Status)
	}
	r.stop() // the daemon goes away: the client's keepalives meet ICMP port unreachable
	waitFor(t, "the client to see the port unreachable", func() bool { return rec.count(msgPortUnreachable) > 0 })
	srvConn, err = ListenUDP(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	startServer(t, srvConn, fast)
	if ack := command(t, c, "after"); ack.Status != AckOK {
		t.Fatalf("after: %v", ack.Status)
	}
}
