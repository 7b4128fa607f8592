package daemon

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// Memory of the password checks.
//
// An argon2id check allocates its whole memory cost (m, 64 MiB by default) on the Go heap
// and drops it when done. Left to itself the Go runtime keeps that memory: the collector
// lets the heap grow to twice what was live at the last collection before it collects
// again, so a second check right after the first gets fresh pages instead of the first
// one's, and freed pages go back to the operating system only slowly, after the heap
// target shrank at a later collection, which an idle daemon never runs. Measured before
// this (BENCHMARKS.md): 80 MB resident after one login, 212 MB after three simultaneous
// ones, still 212 MB 30 s later.
//
// So the daemon collects after every password check, which makes that check's memory
// reusable by the next one at once (the peak stays near login-workers times m), and when
// no check has run for loginMemoryIdle it hands the free memory back to the operating
// system (debug.FreeOSMemory), so an idle daemon is back to its idle size. Returning it
// only after a quiet spell keeps a burst of logins from paying, for every check, the page
// faults of memory given back and taken again.

// loginMemoryIdle is how long no password check must have run before their memory is
// returned to the operating system.
const loginMemoryIdle = time.Second

// loginMemory wraps the daemon's password checks. Safe for concurrent use.
type loginMemory struct {
	idle    time.Duration
	collect func()                                         // runtime.GC
	release func()                                         // debug.FreeOSMemory
	after   func(time.Duration, func()) (stop func() bool) // time.AfterFunc
	log     *slog.Logger

	mu      sync.Mutex
	busy    int         // checks running
	checks  uint64      // checks finished
	gen     uint64      // counts check starts: a release armed before the latest start does nothing
	pending func() bool // stops the armed release; nil if none
}

// newLoginMemory returns the production loginMemory.
func newLoginMemory(log *slog.Logger) *loginMemory {
	return &loginMemory{
		idle: loginMemoryIdle, collect: runtime.GC, release: debug.FreeOSMemory, log: log,
		after: func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop },
	}
}

// check runs one password check fn, then collects, and arms the release when it was the
// last check running.
func (m *loginMemory) check(fn func()) {
	m.mu.Lock()
	m.busy++
	m.gen++
	if m.pending != nil {
		m.pending()
		m.pending = nil
	}
	m.mu.Unlock()

	defer func() {
		m.collect()
		m.mu.Lock()
		defer m.mu.Unlock()
		m.busy--
		m.checks++
		if m.busy == 0 {
			gen := m.gen
			m.pending = m.after(m.idle, func() { m.releaseIfIdle(gen) })
		}
	}()
	fn()
}

// releaseIfIdle returns the free memory to the operating system unless a check started
// after the release was armed (gen).
func (m *loginMemory) releaseIfIdle(gen uint64) {
	m.mu.Lock()
	if m.busy > 0 || m.gen != gen {
		m.mu.Unlock()
		return
	}
	m.pending = nil
	checks := m.checks
	m.mu.Unlock()
	m.release()
	m.log.Debug("returned the password checks' memory to the operating system", "checks", checks)
}
