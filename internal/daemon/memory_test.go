package daemon

import (
	"log/slog"
	"sync"
	"testing"
	"time"
)

// fakeMemory is a loginMemory whose collections, releases and timer the test sees and
// drives.
type fakeMemory struct {
	*loginMemory
	mu                 sync.Mutex
	collects, releases int
	armed              []func() // the release funcs armed, in order
	stopped            []bool   // whether each was stopped
	armedFor           time.Duration
}

func newFakeMemory() *fakeMemory {
	f := &fakeMemory{}
	f.loginMemory = &loginMemory{
		idle:    loginMemoryIdle,
		collect: func() { f.mu.Lock(); f.collects++; f.mu.Unlock() },
		release: func() { f.mu.Lock(); f.releases++; f.mu.Unlock() },
		log:     slog.New(slog.DiscardHandler),
		after: func(d time.Duration, fn func()) func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.armedFor = d
			i := len(f.armed)
			f.armed = append(f.armed, fn)
			f.stopped = append(f.stopped, false)
			return func() bool { f.mu.Lock(); defer f.mu.Unlock(); f.stopped[i] = true; return true }
		},
	}
	return f
}

func (f *fakeMemory) counts() (collects, releases, armed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.collects, f.releases, len(f.armed)
}

// fire runs the i-th armed release as its timer would.
func (f *fakeMemory) fire(i int) {
	f.mu.Lock()
	fn := f.armed[i]
	f.mu.Unlock()
	fn()
}

func (f *fakeMemory) want(t *testing.T, step string, collects, releases, armed int) {
	t.Helper()
	c, r, a := f.counts()
	if c != collects || r != releases || a != armed {
		t.Fatalf("%s: %d collections, %d releases, %d releases armed; want %d, %d, %d", step, c, r, a, collects, releases, armed)
	}
}

// One check: a collection right after it, the release armed for loginMemoryIdle later,
// and done when its timer fires.
func TestLoginMemoryOneCheck(t *testing.T) {
	f := newFakeMemory()
	ran := false
	f.check(func() { ran = true })
	if !ran {
		t.Fatal("the check did not run")
	}
	f.want(t, "after the check", 1, 0, 1)
	if f.armedFor != loginMemoryIdle {
		t.Errorf("release armed for %v, want %v", f.armedFor, loginMemoryIdle)
	}
	f.fire(0)
	f.want(t, "after the quiet spell", 1, 1, 1)
}

// Overlapping checks: each one collects, but the release is armed only when the last one
// ends, never while a check runs.
func TestLoginMemoryOverlappingChecks(t *testing.T) {
	f := newFakeMemory()
	inFirst, endFirst := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.check(func() { close(inFirst); <-endFirst })
	}()
	<-inFirst
	f.check(func() {})
	f.want(t, "second check ended while the first runs", 1, 0, 0)
	close(endFirst)
	<-done
	f.want(t, "both ended", 2, 0, 1)
	f.fire(0)
	f.want(t, "after the quiet spell", 2, 1, 1)
}

// A check that starts before the quiet spell is over stops the armed release; should its
// timer fire anyway (it raced the stop), it does nothing, and the next check arms a new one.
func TestLoginMemoryCheckCancelsRelease(t *testing.T) {
	f := newFakeMemory()
	f.check(func() {})
	f.want(t, "first check", 1, 0, 1)
	inSecond, endSecond := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.check(func() { close(inSecond); <-endSecond })
	}()
	<-inSecond
	f.mu.Lock()
	stopped := f.stopped[0]
	f.mu.Unlock()
	if !stopped {
		t.Error("a new check did not stop the armed release")
	}
	f.fire(0) // the stale timer, during the second check
	f.want(t, "stale timer during a check", 1, 0, 1)
	close(endSecond)
	<-done
	f.fire(0) // the stale timer, after the second check: a later start made it stale
	f.want(t, "stale timer after the check", 2, 0, 2)
	f.fire(1)
	f.want(t, "the second check's quiet spell", 2, 1, 2)
}
