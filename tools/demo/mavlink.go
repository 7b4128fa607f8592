package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dronelink/dronelink/pkg/mavlink"
)

// MAVLink message ids and payload sizes the demo's simulated autopilot and ground stations use.
const (
	msgHeartbeat  = 0
	msgAttitude   = 30
	msgCommand    = 76 // COMMAND_LONG
	msgCommandAck = 77
	cmdArm        = 400
)

// autopilot is a simulated flight controller behind dronelinkd --mavlink-listen: it sends a
// heartbeat and attitude, and acknowledges every COMMAND_LONG it receives.
type autopilot struct {
	conn     *net.UDPConn
	to       netip.AddrPort
	commands atomic.Int32
	seq      uint8
	mu       sync.Mutex
}

func (a *autopilot) send(msgID uint32, payload []byte) {
	a.mu.Lock()
	a.seq++
	f := mavlink.AppendFrame(nil, a.seq, 1, 1, msgID, payload)
	a.mu.Unlock()
	a.conn.WriteToUDPAddrPort(f, a.to)
}

func (a *autopilot) run(stop <-chan struct{}) {
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := a.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			mavlink.Scan(buf[:n], func(f mavlink.Frame) {
				if f.MsgID != msgCommand {
					return
				}
				a.commands.Add(1)
				say("autopilot", "COMMAND_LONG %d from system %d: accepted, acknowledging", mavlink.Command(&f), f.SysID)
				ack := make([]byte, 3)
				binary.LittleEndian.PutUint16(ack, mavlink.Command(&f))
				a.send(msgCommandAck, ack)
			}, func(error) {})
		}
	}()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if n%10 == 0 {
			a.send(msgHeartbeat, []byte{0, 0, 0, 0, 2, 3, 0x81, 4, 3}) // quadrotor, ArduPilot, armed-capable, active
		}
		att := make([]byte, 28)
		binary.LittleEndian.PutUint32(att, uint32(n*100))
		a.send(msgAttitude, att)
	}
}

// station is a simulated ground station that dronelink gcs --to talks to.
type station struct {
	name   string
	conn   *net.UDPConn
	gcs    netip.AddrPort // where gcs sends from: learnt from the first frame
	frames map[uint32]int
	mu     sync.Mutex
	acks   atomic.Int32
}

func (s *station) run() {
	buf := make([]byte, 2048)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		mavlink.Scan(buf[:n], func(f mavlink.Frame) {
			s.mu.Lock()
			s.gcs = from
			s.frames[f.MsgID]++
			s.mu.Unlock()
			if f.MsgID == msgCommandAck {
				s.acks.Add(1)
			}
		}, func(error) {})
	}
}

// arm sends COMMAND_LONG ARM to the tunnel, as a ground station does.
func (s *station) arm() bool {
	s.mu.Lock()
	to := s.gcs
	s.mu.Unlock()
	if !to.IsValid() {
		return false
	}
	p := make([]byte, 33)
	binary.LittleEndian.PutUint32(p, 0x3f800000) // param1 = 1.0: arm
	binary.LittleEndian.PutUint16(p[28:], cmdArm)
	p[30], p[31] = 1, 1
	s.conn.WriteToUDPAddrPort(mavlink.AppendFrame(nil, 0, 255, 190, msgCommand, p), to)
	return true
}

func (s *station) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%d HEARTBEAT, %d ATTITUDE, %d COMMAND_ACK", s.frames[msgHeartbeat], s.frames[msgAttitude], s.frames[msgCommandAck])
}

// mavlinkDemo runs the tunnel: a simulated autopilot at the daemon's --mavlink-listen, and
// dronelink gcs for the pilot and the observer, each with a simulated ground station.
func mavlinkDemo(ctx context.Context, dl, mavAddr string, common func(string) []string) error {
	say("demo", "MAVLink: a simulated autopilot behind dronelinkd --mavlink-listen, and dronelink gcs for each user")
	apConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer apConn.Close()
	ap := &autopilot{conn: apConn, to: netip.MustParseAddrPort(mavAddr)}
	stopAP := make(chan struct{})
	var apDone sync.WaitGroup
	apDone.Go(func() { ap.run(stopAP) })
	defer func() { close(stopAP); apDone.Wait() }()

	stations := map[string]*station{}
	var procs []*exec.Cmd
	var echoes sync.WaitGroup
	for _, user := range []string{"alice", "olga"} {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		defer conn.Close()
		st := &station{name: user, conn: conn, frames: map[uint32]int{}}
		stations[user] = st
		go st.run()
		cmd := exec.CommandContext(ctx, dl, append(append([]string{"gcs"}, common(user)...), "--to", conn.LocalAddr().String())...)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, cmd)
		echoes.Go(func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				say(user, "%s", sc.Text())
			}
		})
	}
	stopGCS := func() {
		for _, p := range procs {
			p.Process.Signal(os.Interrupt)
		}
		for _, p := range procs {
			p.Wait()
		}
		echoes.Wait()
	}
	defer stopGCS()

	// The pilot arms, retrying like a ground station until the acknowledgement arrives.
	alice, olga := stations["alice"], stations["olga"]
	deadline := time.Now().Add(30 * time.Second)
	for alice.acks.Load() == 0 {
		if time.Now().After(deadline) {
			return errors.New("the pilot's ARM was never acknowledged")
		}
		if alice.arm() {
			say("alice", "ground station: COMMAND_LONG ARM sent")
		}
		time.Sleep(500 * time.Millisecond)
	}
	say("alice", "ground station: ARM acknowledged by the autopilot through the tunnel")
	armed := ap.commands.Load()
	for range 3 {
		for !olga.arm() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
	}
	say("olga", "ground station: sent ARM three times as an observer; the autopilot received %d of them", ap.commands.Load()-armed)
	if ap.commands.Load() != armed {
		return errors.New("an observer's ARM reached the autopilot")
	}
	stopGCS()
	for _, user := range []string{"alice", "olga"} {
		say(user, "ground station received %s (over a lossy link; frames, never duplicated)", stations[user].summary())
	}
	if !strings.Contains(stations["olga"].summary(), "ATTITUDE") {
		return errors.New("no summary")
	}
	return nil
}
