//go:build !linux

package daemon

import (
	"net"
	"syscall"
	"time"
)

// errQueue is Linux's IP_RECVERR error queue. Elsewhere there is none: a forward is "ok"
// when the write succeeds, and a refusal may still be reported on the next write.
type errQueue struct{}

func (q *errQueue) open(*net.UDPConn) error                   { return nil }
func (q *errQueue) fromICMP(syscall.Errno) bool               { return false }
func (q *errQueue) next() (syscall.Errno, bool)               { return 0, false }
func (q *errQueue) await([]byte, time.Time) (_ syscall.Errno) { return 0 }
