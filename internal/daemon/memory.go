package daemon

import (
	"log/slog"
	"runtime/debug"
	"sync/atomic"
)

// Memory of the password checks.
//
// An argon2id check allocates its whole memory cost (m, 64 MiB by default) on the Go heap
// and drops it when done. Left to itself the Go runtime keeps that memory: the collector
// lets the heap grow to twice what was live at the last collection before it collects
// again, so a second check right after the first takes fresh pages instead of the first
// one's, and free pages go back to the operating system only slowly, after a later
// collection shrank the heap target, which an idle daemon never runs. Measured before
// this (BENCHMARKS.md): 79 MB resident after one login, 214 MB after three simultaneous
// ones, still 214 MB 30 s later.
//
// So after every check the daemon collects and returns the free memory to the operating
// system at once (debug.FreeOSMemory). A collection alone is not enough: it makes the
// check's pages free, but small allocations made before the next check may take the
// lowest of them, and a 64 MiB block that no longer fits there comes from fresh pages
// while the old ones stay resident (seen once in a few runs: 145 MB with one worker).
// Returned pages are not resident wherever the next block lands, so the resident peak is
// the idle daemon plus the checks running at once, in every order of events. The price is
// that every check pages its memory in again (on this VM about 0.1 s for 64 MiB; far less,
// next to the hash itself, on a small ARM computer).
type loginMemory struct {
	release func() // debug.FreeOSMemory
	log     *slog.Logger
	checks  atomic.Uint64 // checks finished and their memory returned
}

// newLoginMemory returns the production loginMemory.
func newLoginMemory(log *slog.Logger) *loginMemory {
	return &loginMemory{release: debug.FreeOSMemory, log: log}
}

// check runs one password check fn, then returns the memory it freed to the operating
// system.
func (m *loginMemory) check(fn func()) {
	defer func() {
		m.release()
		n := m.checks.Add(1)
		m.log.Debug("returned the password checks' memory to the operating system", "checks", n)
	}()
	fn()
}
