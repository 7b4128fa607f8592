package daemon

import (
	"log/slog"
	"testing"
)

// Every password check returns its memory right after it ran, never before, also when two
// run at once.
func TestLoginMemory(t *testing.T) {
	var events []string
	m := &loginMemory{release: func() { events = append(events, "release") }, log: slog.New(slog.DiscardHandler)}
	m.check(func() { events = append(events, "check") })
	m.check(func() {
		events = append(events, "check")
		m.check(func() { events = append(events, "nested check") })
	})
	want := []string{"check", "release", "check", "nested check", "release", "release"}
	if len(events) != len(want) {
		t.Fatalf("events %v, want %v", events, want)
	}
	for i := range want {
		if events[i] != want[i] {
			t.Fatalf("events %v, want %v", events, want)
		}
	}
	if n := m.checks.Load(); n != 3 {
		t.Errorf("%d checks counted, want 3", n)
	}
}
