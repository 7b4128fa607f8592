package relay_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeNATS is a NATS server that speaks just enough of the client protocol for the relay's
// ends (INFO, CONNECT, PING and PONG, SUB, PUB and HPUB), and lets a test play a broken or
// hostile relay: send the client any bytes, or stop reading from it.
type fakeNATS struct {
	ln    net.Listener
	conns chan *fakeNATSConn // each accepted connection, once it subscribed
	wg    sync.WaitGroup
}

// fakeNATSConn is one client connection of a fakeNATS.
type fakeNATSConn struct {
	c        net.Conn
	wmu      sync.Mutex
	subs     chan string   // subjects the client subscribed to, "subject sid"
	pubs     chan fakePub  // messages the client published
	pauseReq atomic.Bool   // the reader stops at the next line (pause)
	resumed  chan struct{} // closed by pause's resume
	closed   chan struct{} // closed when the client's side is closed (EOF)
	sid      string        // the sid of the client's first subscription
	subj     string        // its subject
}

// fakePub is a message a client published.
type fakePub struct {
	subject, reply string
	data           []byte
}

// startFakeNATS listens on a loopback port; every connection it accepts is announced on
// conns once it has subscribed.
func startFakeNATS(t *testing.T) *fakeNATS {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNATS{ln: ln, conns: make(chan *fakeNATSConn, 16)}
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fc := &fakeNATSConn{c: c, subs: make(chan string, 16), pubs: make(chan fakePub, 1<<14),
				resumed: make(chan struct{}), closed: make(chan struct{})}
			f.wg.Go(func() { fc.serve(f.conns) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
	})
	return f
}

// URL is the server's client URL.
func (f *fakeNATS) URL() string { return "nats://" + f.ln.Addr().String() }

// next is the next connection that subscribed.
func (f *fakeNATS) next(t *testing.T) *fakeNATSConn {
	t.Helper()
	select {
	case c := <-f.conns:
		t.Cleanup(func() { c.c.Close() })
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("no client connected to the fake NATS server and subscribed")
		return nil
	}
}

func (c *fakeNATSConn) write(s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := io.WriteString(c.c, s)
	return err
}

// serve runs the connection: INFO, then the client's protocol lines.
func (c *fakeNATSConn) serve(announce chan<- *fakeNATSConn) {
	defer close(c.closed)
	defer c.c.Close()
	info := `INFO {"server_id":"FAKE","server_name":"fake","version":"2.12.0","proto":1,"go":"go1.26",` +
		`"host":"127.0.0.1","port":4222,"headers":true,"max_payload":1048576,"client_id":1}` + "\r\n"
	if c.write(info) != nil {
		return
	}
	r := bufio.NewReader(c.c)
	announced := false
	for {
		if c.pauseReq.Load() { // paused: read nothing until resumed
			<-c.resumed
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		op, args, _ := strings.Cut(line, " ")
		switch strings.ToUpper(op) {
		case "PING":
			if c.write("PONG\r\n") != nil {
				return
			}
		case "SUB":
			f := strings.Fields(args)
			c.subs <- args
			if !announced && len(f) >= 2 {
				c.subj, c.sid = f[0], f[len(f)-1]
			}
		case "PUB", "HPUB":
			f := strings.Fields(args)
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return
			}
			data := make([]byte, n+2)
			if _, err := io.ReadFull(r, data); err != nil {
				return
			}
			p := fakePub{subject: f[0], data: data[:n]}
			if (op == "PUB" && len(f) == 3) || (op == "HPUB" && len(f) == 4) {
				p.reply = f[1]
			}
			select {
			case c.pubs <- p:
			default:
			}
		}
		// Announce the connection once its first subscription is followed by a PING: the
		// client flushed, so it is waiting for messages.
		if !announced && c.sid != "" && strings.EqualFold(op, "PING") {
			announced = true
			announce <- c
		}
	}
}

// deliver sends the client a message on its first subscription.
func (c *fakeNATSConn) deliver(t *testing.T, reply string, data []byte) {
	t.Helper()
	msg := fmt.Sprintf("MSG %s %s %s %d\r\n%s\r\n", c.subj, c.sid, reply, len(data), data)
	if err := c.write(msg); err != nil {
		t.Fatal(err)
	}
}

// pause stops the reader after the next line the client sends: from then on nothing it
// sends is read, and its TCP window fills, as with a broker that stopped reading (a hostile
// one, or a congested link). It returns resume.
func (c *fakeNATSConn) pause(t *testing.T) (resume func()) {
	c.pauseReq.Store(true)
	var once sync.Once
	resume = func() { once.Do(func() { close(c.resumed) }) }
	t.Cleanup(resume)
	return resume
}
