package lossproxy

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// echoServer answers every datagram with the same bytes.
func echoServer(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrips sends n datagrams one at a time and counts the echoes that come back within
// wait of each; after the first echo it only drains what is already there.
func roundTrips(t *testing.T, cfg Config, n int, wait time.Duration) (int, Stats) {
	t.Helper()
	p, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(p.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	got := 0
	buf := make([]byte, 64)
	for i := range n {
		client.Write([]byte{byte(i)})
		client.SetReadDeadline(time.Now().Add(wait))
		for {
			if _, err := client.Read(buf); err != nil {
				break
			}
			got++
			client.SetReadDeadline(time.Now().Add(time.Millisecond))
		}
	}
	return got, p.Stats()
}

func TestCleanProxyDeliversEverything(t *testing.T) {
	echo := echoServer(t)
	got, st := roundTrips(t, Config{Target: echo.LocalAddr().String()}, 50, 2*time.Second)
	if got != 50 || st.Forwarded != 100 || st.Dropped != 0 {
		t.Fatalf("got %d echoes, stats %+v", got, st)
	}
}

func TestLossyProxyLosesAndDuplicates(t *testing.T) {
	echo := echoServer(t)
	got, st := roundTrips(t, Config{Target: echo.LocalAddr().String(), Loss: 0.3, Duplicate: 0.1, Reorder: 0.1, Seed: 5}, 300, 10*time.Millisecond)
	if st.Dropped == 0 || st.Duplicated == 0 || st.Reordered == 0 {
		t.Fatalf("no impairment: %+v", st)
	}
	if got == 0 || got >= 300*11/10 {
		t.Fatalf("%d echoes of 300 through a 30%% lossy link each way", got)
	}
	t.Logf("%d echoes, %+v", got, st)
}

func TestBadConfig(t *testing.T) {
	for _, c := range []Config{{Target: "127.0.0.1:1", Loss: 2}, {Target: "127.0.0.1:1", Delay: -1}, {Target: "nowhere"}} {
		if p, err := Start(c); err == nil {
			p.Close()
			t.Errorf("%+v accepted", c)
		}
	}
}

// Held counts the datagrams a delay holds back, and is 0 again once they went on.
func TestHeld(t *testing.T) {
	echo := echoServer(t)
	p, err := Start(Config{Target: echo.LocalAddr().String(), Delay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(p.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if p.Held() != 0 {
		t.Fatalf("held %d before any datagram", p.Held())
	}
	client.Write([]byte("x"))
	guard := time.NewTimer(5 * time.Second) // bounds a broken build only
	defer guard.Stop()
	poll := func(what string, cond func() bool) { // waits for the proxy to signal a change
		t.Helper()
		for !cond() {
			select {
			case <-p.heldChanged:
			case <-guard.C:
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	poll("the datagram to be held", func() bool { return p.Held() == 1 })
	buf := make([]byte, 8)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(buf); err != nil || string(buf[:n]) != "x" { // delayed both ways
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	poll("nothing held", func() bool { return p.Held() == 0 })
}

// Withhold keeps the datagrams it selects, in each direction, until Release sends the
// ones picked; everything else flows meanwhile.
func TestWithholdAndRelease(t *testing.T) {
	echo := echoServer(t)
	p, err := Start(Config{Target: echo.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(p.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	// Hold "long" datagrams on the way out and "back" on the way back.
	p.Withhold(func(from netip.AddrPort, toTarget bool, b []byte) bool {
		if from != client.LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Errorf("flow %v, want the client's address", from)
		}
		return (toTarget && len(b) > 3) || (!toTarget && string(b) == "back")
	})
	read := func() string {
		t.Helper()
		buf := make([]byte, 16)
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := client.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	for _, s := range []string{"long1", "long2", "back", "ok"} {
		client.Write([]byte(s))
	}
	if got := read(); got != "ok" { // "back" went out, its echo was held
		t.Fatalf("read %q, want ok", got)
	}
	if n := p.Withheld(); n != 3 {
		t.Fatalf("withheld %d, want 3", n)
	}
	if n := p.Release(func(toTarget bool, b []byte) bool { return string(b) != "long1" }); n != 2 {
		t.Fatalf("released %d, want 2", n)
	}
	var got []string
	for range 2 {
		got = append(got, read())
	}
	// long2 went to the echo server and came back; the held echo "back" was released too.
	slices.Sort(got)
	if !slices.Equal(got, []string{"back", "long2"}) {
		t.Fatalf("after the release read %q", got)
	}
	if p.Withheld() != 0 {
		t.Fatal("still holding after Release")
	}
	client.Write([]byte("long3")) // no longer withheld
	if got := read(); got != "long3" {
		t.Fatalf("read %q after the release, want long3", got)
	}
}
