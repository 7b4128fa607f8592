package link

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/dronelink/dronelink/pkg/app"
)

// Traffic counts the data datagrams of a session (handshake datagrams are not counted).
type Traffic struct {
	// ReceivedPackets and ReceivedBytes count the datagrams from the peer that were
	// accepted: authenticated and not replayed. Bytes are whole datagrams as on the wire.
	ReceivedPackets, ReceivedBytes uint64
	// SentPackets and SentBytes count the datagrams sealed for the peer.
	SentPackets, SentBytes uint64
	// LostPackets estimates the datagrams from the peer that never arrived: for each
	// session, the highest counter accepted plus one, minus the datagrams accepted. A
	// datagram still on its way counts until it arrives; one that arrives too late for the
	// replay window counts for good.
	LostPackets uint64
}

// Loss is the estimated fraction of the peer's datagrams lost, 0 to 1 (0 before any).
func (t Traffic) Loss() float64 {
	if t.LostPackets == 0 {
		return 0
	}
	return float64(t.LostPackets) / float64(t.LostPackets+t.ReceivedPackets)
}

// add adds o to t.
func (t *Traffic) add(o Traffic) {
	t.ReceivedPackets += o.ReceivedPackets
	t.ReceivedBytes += o.ReceivedBytes
	t.SentPackets += o.SentPackets
	t.SentBytes += o.SentBytes
	t.LostPackets += o.LostPackets
}

// Traffic is what this session has carried so far.
func (s *Session) Traffic() Traffic {
	var t Traffic
	s.sendMu.Lock()
	t.SentPackets, t.SentBytes = s.sendCounter, s.sentBytes
	s.sendMu.Unlock()
	s.recvMu.Lock()
	t.ReceivedPackets, t.ReceivedBytes = s.accepted, s.recvBytes
	t.LostPackets = s.maxCounter - s.accepted
	s.recvMu.Unlock()
	return t
}

// LastReceived is when the last authenticated datagram of this session arrived (its
// creation before any).
func (s *Session) LastReceived() time.Time { return time.Unix(0, s.lastRecv.Load()) }

// Session states in SessionStatus.
const (
	// StateHandshake: the drone answered the operator's handshake and waits for the
	// operator's first datagram on the session.
	StateHandshake = "handshake"
	// StateActive: the operator has used the session.
	StateActive = "active"
)

// SessionStatus is one operator's session as a status display shows it: a rekey continues
// the session (same Since, traffic added up), so an operator logged in for an hour is one
// entry, not one per key period.
type SessionStatus struct {
	// LocalIndex, OperatorKey, User, Role and Peer are as in app.SessionInfo; Created is
	// the last handshake (the current key period's).
	app.SessionInfo
	// KeyName is the operator key's fingerprint (crypto.Fingerprint).
	KeyName string
	// State is StateHandshake or StateActive.
	State string
	// Since is when the first handshake of the session was answered; rekeys keep it.
	Since time.Time
	// LastReceived is when the operator's last authenticated datagram arrived.
	LastReceived time.Time
	// RTT is the last handshake's round trip as the drone measured it: from sending its
	// response to the operator's first datagram on the new session (which the operator
	// sends at once). Every rekey (every RekeyAfterTime) measures it again. Zero until
	// measured.
	RTT time.Duration
	// Traffic since Since.
	Traffic Traffic
}

// SessionStatus lists the operators' sessions, oldest first. A rekey's new session is
// listed once the operator has used it, with the one it replaces folded in; until then
// the replaced session stands for both. Nothing on the datagram path waits for this for
// longer than a copy of the table.
func (s *Server) SessionStatus() []SessionStatus {
	s.mu.RLock()
	out := make([]SessionStatus, 0, len(s.sessions))
	for _, ss := range s.sessions {
		if ss == nil {
			continue
		}
		state := StateActive
		switch {
		case !ss.confirmed && ss.pred != nil && s.sessions[ss.pred.local] == ss.pred:
			continue // a rekey under way: the session it replaces is still the current one
		case !ss.confirmed:
			state = StateHandshake
		case !ss.supersededAt.IsZero():
			continue // replaced: its successor carries its traffic
		}
		t := ss.totalLocked()
		if p := ss.pred; p != nil && s.sessions[p.local] == p {
			t.add(p.totalLocked())
		}
		user, role := ss.login()
		out = append(out, SessionStatus{
			SessionInfo: app.SessionInfo{LocalIndex: ss.local, OperatorKey: ss.key, User: user, Role: role,
				Peer: ss.Peer(), Created: ss.created},
			KeyName:      ss.fp,
			State:        state,
			Since:        ss.since,
			LastReceived: ss.LastReceived(),
			RTT:          time.Duration(ss.rtt.Load()),
			Traffic:      t,
		})
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b SessionStatus) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.LocalIndex, b.LocalIndex))
	})
	return out
}

// totalLocked is the session's traffic with that of the removed sessions it continues.
// Server.mu must be held.
func (ss *serverSession) totalLocked() Traffic {
	t := ss.Traffic()
	t.add(ss.carried)
	return t
}

// chainLocked links a new session to the session its proven rekey replaces: it continues
// that session for status (same Since, traffic carried over). Server.mu must be held.
func (ss *serverSession) chainLocked(replaced *serverSession) {
	ss.since = ss.created
	if replaced == nil {
		return
	}
	ss.since = replaced.since
	ss.pred = replaced
	replaced.succs = append(replaced.succs, ss)
}

// unchainLocked hands a removed session's traffic to the sessions that continue it.
// Server.mu must be held.
func (ss *serverSession) unchainLocked() {
	if len(ss.succs) == 0 {
		return
	}
	t := ss.totalLocked()
	for _, n := range ss.succs {
		if n.pred == ss {
			n.carried.add(t)
			n.pred = nil
		}
	}
	ss.succs = nil
}

// measureRTT records the handshake round trip when the operator's first datagram on the
// session arrived at now.
func (ss *serverSession) measureRTT(now time.Time) {
	if r := ss.responded.Load(); r != 0 && now.UnixNano() > r {
		ss.rtt.Store(now.UnixNano() - r)
	}
}

// LinkStatus is the operator's view of its link to the drone (see Client.LinkStatus).
type LinkStatus struct {
	// Drone is the drone's address.
	Drone netip.AddrPort
	// Session is the drone's index of the current session; 0 before the first.
	Session uint16
	// Since is when the first session was agreed; Handshake when the current one was.
	Since, Handshake time.Time
	// LastReceived is when the drone's last authenticated datagram arrived.
	LastReceived time.Time
	// RTT is the last handshake's round trip: from sending the initiation the drone
	// answered to its response, which includes the drone's RSA work for the handshake
	// (about a millisecond for RSA-2048, three for RSA-3072). Every rekey measures it again.
	RTT time.Duration
	// Rekeys counts the sessions agreed after the first.
	Rekeys int
	// Traffic of every session since Since; LostPackets counts the drone's datagrams.
	Traffic Traffic
}

// LinkStatus reports the link: sessions, round trip and traffic.
func (c *Client) LinkStatus() LinkStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := LinkStatus{Drone: c.cfg.Drone, Since: c.since, RTT: c.rtt, Rekeys: c.rekeys, Traffic: c.carried}
	if cur := c.current; cur != nil {
		st.Session, st.Handshake, st.LastReceived = cur.remote, cur.created, cur.LastReceived()
		st.Traffic.add(cur.Traffic())
	}
	if prev := c.previous; prev != nil {
		st.Traffic.add(prev.Traffic())
	}
	return st
}

// attemptTimes remembers when each of the recent initiations was sent, so the round trip
// of the one the drone answers can be measured from its sending (not its building, which
// includes the RSA signature).
type attemptTimes struct {
	built, sent [maxAttempts]time.Time
	next        int
}

// record notes that the initiation built at built went out at sent.
func (a *attemptTimes) record(built, sent time.Time) {
	a.built[a.next], a.sent[a.next] = built, sent
	a.next = (a.next + 1) % maxAttempts
}

// sentAt is when the initiation built at built went out (built if unknown).
func (a *attemptTimes) sentAt(built time.Time) time.Time {
	for i, b := range a.built {
		if b.Equal(built) && !a.sent[i].IsZero() {
			return a.sent[i]
		}
	}
	return built
}
