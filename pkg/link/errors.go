package link

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/dronelink/dronelink/pkg/app"
)

// Sentinel errors for protocol failures. Compare with errors.Is; endpoints wrap them with
// context. None of them ever carries key material or packet contents.
var (
	// ErrMalformed: wrong length, type, version or field value.
	ErrMalformed = app.ErrMalformed
	// ErrBadMAC: the PSK MAC did not verify (wrong PSK or tampering).
	ErrBadMAC = errors.New("bad PSK MAC")
	// ErrStale: an initiation not strictly newer than the last accepted one for its key.
	ErrStale = errors.New("stale initiation timestamp")
	// ErrReplay: a data counter already seen or older than the replay window.
	ErrReplay = errors.New("replayed datagram")
	// ErrUnknownSession: a receiver index that names no live session.
	ErrUnknownSession = errors.New("unknown session")
	// ErrDecrypt: the AEAD tag or the key confirmation did not verify.
	ErrDecrypt = errors.New("authentication failed")
	// ErrRateLimited: the request was refused by a rate limiter.
	ErrRateLimited = errors.New("rate limited")
	// ErrUnknownOperatorKey: the operator's key is not authorised on this drone.
	ErrUnknownOperatorKey = errors.New("operator key not authorised on the drone")
	// ErrWrongDroneKey: the operator pinned a different drone key than the drone holds.
	ErrWrongDroneKey = errors.New("drone key mismatch: the drone does not hold the pinned key")
	// ErrBadSignature: the operator's RSA-PSS signature did not verify.
	ErrBadSignature = errors.New("bad operator signature")
	// ErrSessionLimit: too many sessions, globally or for one operator key.
	ErrSessionLimit = errors.New("session limit reached")
	// ErrSessionExpired: the session passed its message or time limit and must be rekeyed.
	ErrSessionExpired = errors.New("session expired")
	// ErrTooLarge: a message that does not fit one datagram.
	ErrTooLarge = app.ErrTooLarge
	// ErrClosed: the endpoint was closed.
	ErrClosed = app.ErrClosed
	// ErrNoListener: the drone's host answered the first handshake with ICMP port
	// unreachable: nothing listens at the drone's address (wrong port, or the drone's
	// daemon is not running). Dial fails with an error that satisfies errors.Is(err,
	// ErrNoListener) and names the address.
	ErrNoListener = errors.New("nothing listens at the drone's address")
)

// noListenerError is ErrNoListener for one address.
type noListenerError struct{ addr netip.AddrPort }

func (e *noListenerError) Error() string {
	return fmt.Sprintf("nothing listens at %s (the drone's host answered ICMP port unreachable)", e.addr)
}

func (e *noListenerError) Is(target error) bool { return target == ErrNoListener }
