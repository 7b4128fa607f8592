// Package control is the local status socket of dronelinkd (--control) and of dronelink
// gcs (--control), which "dronelink status" reads.
//
// The socket is a unix stream socket created with mode 0600 (only the owner, and root, can
// connect). The protocol is one request line, "status\n" (at most MaxRequest bytes), and
// one answer: a JSON document (Status) and a newline, after which the server closes the
// connection. Both sides bound what they read and give up after Timeout; the server
// serves at most MaxConns connections at once and, on Linux, only peers running as its own
// user or as root. The socket is read-only: there is no request that changes anything,
// and no answer carries a secret (keys appear as fingerprints).
package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// ProtocolVersion is the version of Status this package writes and reads.
const ProtocolVersion = 1

// Limits of the protocol.
const (
	// MaxRequest is the longest request line, newline included.
	MaxRequest = 64
	// MaxResponse is the largest answer a client reads (a drone at its session limit
	// stays far below it).
	MaxResponse = 32 << 20
	// Timeout bounds each connection, on both sides.
	Timeout = 5 * time.Second
	// MaxConns is how many connections a server serves at once; more are closed at once.
	MaxConns = 4
)

// RequestStatus is the one request: the status document.
const RequestStatus = "status"

// Programs that serve the socket (Status.Program).
const (
	ProgramDaemon = "dronelinkd"
	ProgramGCS    = "dronelink gcs"
)

// Status is the answer to RequestStatus.
type Status struct {
	// Version is ProtocolVersion.
	Version int `json:"version"`
	// Error is set, and nothing else, when the request was not understood.
	Error string `json:"error,omitempty"`
	// Program is ProgramDaemon or ProgramGCS; Build its version.
	Program string `json:"program,omitempty"`
	Build   string `json:"build,omitempty"`
	// Transport is "native" or "dtls".
	Transport string `json:"transport,omitempty"`
	// Listen is the daemon's UDP address for operators.
	Listen string `json:"listen,omitempty"`
	// Key is, for the daemon, the fingerprint of its key; for gcs, of the pinned drone key.
	Key string `json:"key,omitempty"`
	// Drone is, for gcs, the drone as named on its command line (a name or HOST:PORT).
	Drone string `json:"drone,omitempty"`
	// Started is when the program started; Now when this answer was made.
	Started time.Time `json:"started"`
	Now     time.Time `json:"now"`
	// Relay is the NATS relay's state, when the daemon serves operators through one.
	Relay *Relay `json:"relay,omitempty"`
	// Sessions are the daemon's operator sessions, or gcs's one link to the drone.
	Sessions []Session `json:"sessions"`
}

// Relay is the state of a NATS relay connection (dronelinkd --relay).
type Relay struct {
	// Servers are the configured server URLs; DroneID the drone's id on the relay.
	Servers string `json:"servers"`
	DroneID string `json:"drone_id"`
	// Connected says whether a server is connected now; Server is that server (a
	// redacted URL), or the last one, and ServerName its name in the cluster.
	Connected  bool   `json:"connected"`
	Server     string `json:"server,omitempty"`
	ServerName string `json:"server_name,omitempty"`
	// Reconnects counts reconnections after a lost connection.
	Reconnects uint64 `json:"reconnects"`
}

// Session states besides the link package's "handshake" and "active".
const (
	// StateUp and StateLost: gcs's link, logged in and heard from, or silent (reconnecting).
	StateUp   = "up"
	StateLost = "lost"
)

// Session is one session: on the daemon an operator's, on gcs its link to the drone.
type Session struct {
	// Index is the drone's index of the session.
	Index uint16 `json:"index"`
	// User and Role: who logged in (empty before the login).
	User string `json:"user,omitempty"`
	Role string `json:"role,omitempty"`
	// Key is the operator key's fingerprint (daemon, native transport).
	Key string `json:"key,omitempty"`
	// Identity is the DTLS PSK identity (daemon, dtls transport).
	Identity string `json:"identity,omitempty"`
	// Peer is the other end's address: the operator's, or the drone's; "relay:SUBJECT"
	// (daemon) or "relay:DRONE-ID" (gcs) through the NATS relay.
	Peer string `json:"peer"`
	// State is "handshake", "active", "up" or "lost".
	State string `json:"state,omitempty"`
	// Since is when the session began (rekeys continue it); Handshake is its last
	// handshake; LastReceived when the peer was last heard.
	Since        time.Time `json:"since"`
	Handshake    time.Time `json:"last_handshake,omitzero"`
	LastReceived time.Time `json:"last_received,omitzero"`
	// RTTSeconds is the last handshake's round trip; 0 when not measured.
	RTTSeconds float64 `json:"rtt_seconds,omitempty"`
	// Traffic is nil where the transport does not count it (dtls).
	Traffic *Traffic `json:"traffic,omitempty"`
}

// Traffic counts a session's data datagrams (handshakes excluded).
type Traffic struct {
	// RxPackets and RxBytes: the peer's datagrams accepted (authenticated, not replayed).
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	// TxPackets and TxBytes: the datagrams sent to the peer.
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	// LostPackets estimates the peer's datagrams that never arrived (counter gaps); Loss
	// is that as a fraction of the peer's datagrams, 0 to 1.
	LostPackets uint64  `json:"lost_packets"`
	Loss        float64 `json:"loss"`
}

// RTT is RTTSeconds as a duration.
func (s Session) RTT() time.Duration { return time.Duration(s.RTTSeconds * float64(time.Second)) }

// Server answers status requests on a control socket.
type Server struct {
	ln     *net.UnixListener
	path   string
	ident  fs.FileInfo
	status func() Status
	log    *slog.Logger
	slots  chan struct{}
	wg     sync.WaitGroup
	// released, if set (tests), is called each time a connection's slot is freed.
	released func()
}

// NewServer serves the socket Listen returned; status builds each answer (it is called
// on the connection's goroutine, several at once at most MaxConns).
func NewServer(l *Listener, status func() Status, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{ln: l.ln, path: l.path, ident: l.ident, status: status, log: log, slots: make(chan struct{}, MaxConns)}
}

// Serve answers requests until ctx ends, then closes the socket, removes its file (if it
// is still this server's) and waits for the connections in progress.
func (s *Server) Serve(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	defer s.wg.Wait()
	defer removeIfSame(s.path, s.ident)
	defer s.ln.Close()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("control socket: accept failed", "err", err)
			// A persistent error (out of file descriptors) must not spin: wait a little,
			// or for the end.
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case s.slots <- struct{}{}:
		default:
			conn.Close() // busy: the client sees the connection closed
			continue
		}
		s.wg.Go(func() {
			defer func() {
				<-s.slots
				if s.released != nil {
					s.released()
				}
			}()
			s.handle(conn)
		})
	}
}

// handle answers one connection.
func (s *Server) handle(conn *net.UnixConn) {
	defer conn.Close()
	if err := peerAllowed(conn); err != nil {
		s.log.Warn("control socket: connection refused", "err", err)
		return
	}
	_ = conn.SetDeadline(time.Now().Add(Timeout))
	req, err := readRequest(conn)
	var answer any
	switch {
	case err != nil:
		answer = errorAnswer{Version: ProtocolVersion, Error: err.Error()}
	case req == RequestStatus:
		st := s.status()
		st.Version = ProtocolVersion
		if st.Sessions == nil {
			st.Sessions = []Session{} // "sessions": [], never null
		}
		answer = st
	default:
		answer = errorAnswer{Version: ProtocolVersion, Error: fmt.Sprintf("unknown request %q: want %q", req, RequestStatus)}
	}
	b, err := json.Marshal(answer)
	if err != nil {
		s.log.Error("control socket: cannot encode the status", "err", err)
		return
	}
	_, _ = conn.Write(append(b, '\n'))
	// Closing with unread input would reset the connection and could discard the answer:
	// end the answer, then read what the client still sends, boundedly, until it closes
	// or the deadline passes.
	_ = conn.CloseWrite()
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 64<<10))
}

// errorAnswer is the answer to a request that was not understood.
type errorAnswer struct {
	Version int    `json:"version"`
	Error   string `json:"error"`
}

// readRequest reads one request line of at most MaxRequest bytes.
func readRequest(r io.Reader) (string, error) {
	line, err := bufio.NewReaderSize(io.LimitReader(r, MaxRequest), MaxRequest).ReadSlice('\n')
	switch {
	case err == nil:
		return string(bytes.TrimRight(line, "\r\n")), nil
	case errors.Is(err, bufio.ErrBufferFull) || (errors.Is(err, io.EOF) && len(line) == MaxRequest):
		return "", fmt.Errorf("request longer than %d bytes", MaxRequest)
	case errors.Is(err, io.EOF):
		return "", errors.New("request without a newline")
	}
	return "", fmt.Errorf("reading the request: %w", err)
}

// Fetch asks the control socket at path for its status, within Timeout (or ctx's end).
// Its errors are one line that says what to check.
func Fetch(ctx context.Context, path string) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Status{}, dialError(path, err)
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	_, err = io.WriteString(c, RequestStatus+"\n")
	var data []byte
	if err == nil {
		data, err = io.ReadAll(io.LimitReader(c, MaxResponse+1))
	}
	switch {
	case len(data) == 0 && (err == nil || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)):
		return Status{}, fmt.Errorf("control socket %s: closed without an answer (busy? try again)", path)
	case err != nil:
		return Status{}, fmt.Errorf("control socket %s: no answer: %w", path, unwrap(err))
	case len(data) > MaxResponse:
		return Status{}, fmt.Errorf("control socket %s: answer longer than %d bytes", path, MaxResponse)
	}
	var st Status
	if err := json.Unmarshal(data, &st); err != nil {
		return Status{}, fmt.Errorf("control socket %s: not a status answer: %v", path, err)
	}
	switch {
	case st.Error != "":
		return Status{}, fmt.Errorf("control socket %s: %s", path, st.Error)
	case st.Version != ProtocolVersion:
		return Status{}, fmt.Errorf("control socket %s: status version %d, this dronelink reads version %d", path, st.Version, ProtocolVersion)
	}
	return st, nil
}

// dialError says why path could not be reached, and what to check.
func dialError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("no control socket at %s (is the program running with --control %s?)", path, path)
	case errors.Is(err, syscall.ECONNREFUSED) && !isSocket(path):
		return fmt.Errorf("%s is not a socket", path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("nothing answers on the control socket %s (a stale socket: is the program running?)", path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("cannot connect to the control socket %s: permission denied (it is mode 0600: run as the user the program runs as, or root)", path)
	case errors.Is(err, syscall.ENOTSOCK):
		return fmt.Errorf("%s is not a socket", path)
	}
	return fmt.Errorf("cannot connect to the control socket %s: %w", path, unwrap(err))
}

// isSocket says whether path is a socket (or cannot be looked at).
func isSocket(path string) bool {
	fi, err := os.Lstat(path)
	return err != nil || fi.Mode().Type() == fs.ModeSocket
}

// unwrap drops the wrappers of a network error down to its cause.
func unwrap(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}
