package ratelog

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"
)

var attacker = netip.MustParseAddrPort("192.0.2.66:4000")

// recordHandler is a slog.Handler that keeps every record, to count log lines.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}

// count returns how many records have message msg ("" for all).
func (h *recordHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if msg == "" || r.Message == msg {
			n++
		}
	}
	return n
}

// G13: the limiter logs a message at most once per interval, counts what it suppressed,
// and limits each message on its own.
func TestLimiterRateLimits(t *testing.T) {
	h := &recordHandler{}
	w := New(slog.New(h), time.Hour)
	for range 100 {
		w.Warn("handshake refused", "from", attacker)
		w.Info("operator roamed", "to", attacker)
	}
	w.Warn("login refused")
	if h.count("handshake refused") != 1 || h.count("operator roamed") != 1 || h.count("login refused") != 1 || h.count("") != 3 {
		t.Fatalf("%d lines for 201 warnings of 3 messages", h.count(""))
	}
	h.mu.Lock()
	if h.records[1].Level != slog.LevelInfo || h.records[0].Level != slog.LevelWarn {
		t.Errorf("levels %v, %v", h.records[0].Level, h.records[1].Level)
	}
	h.mu.Unlock()
	// Once the interval has passed, the next line says how many were suppressed.
	w.mu.Lock()
	w.last["handshake refused"] = time.Now().Add(-2 * time.Hour)
	w.mu.Unlock()
	w.Warn("handshake refused", "from", attacker)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.records) != 4 {
		t.Fatalf("%d lines, want 4", len(h.records))
	}
	suppressed := int64(-1)
	h.records[3].Attrs(func(a slog.Attr) bool {
		if a.Key == "suppressed" {
			suppressed = a.Value.Int64()
		}
		return true
	})
	if suppressed != 99 {
		t.Errorf("suppressed = %d, want 99", suppressed)
	}
}

// WarnFor limits per message and party: one user's refusals do not hide another's.
func TestWarnForKeepsPartiesApart(t *testing.T) {
	h := &recordHandler{}
	w := New(slog.New(h), time.Hour)
	for range 5 {
		w.WarnFor("olga", "frame refused", "user", "olga")
		w.WarnFor("eve", "frame refused", "user", "eve")
	}
	w.Warn("frame refused")
	if h.count("frame refused") != 3 {
		t.Fatalf("%d lines, want one for olga, one for eve and one unkeyed", h.count("frame refused"))
	}
}

// Allow, the allocation-free check for hot paths, admits one message per interval and
// hands the caller the count of those it suppressed meanwhile.
func TestLimiterAllow(t *testing.T) {
	w := New(slog.New(slog.DiscardHandler), time.Hour)
	if n, ok := w.Allow("bad mac"); !ok || n != 0 {
		t.Fatalf("first: %d, %v", n, ok)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := w.Allow("bad mac"); ok {
			t.Fatal("allowed twice in an interval")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per suppressed message", allocs)
	}
	w.mu.Lock()
	w.last["bad mac"] = time.Now().Add(-2 * time.Hour)
	w.mu.Unlock()
	if n, ok := w.Allow("bad mac"); !ok || n != 101 {
		t.Errorf("after the interval: %d suppressed, %v; want 101, true", n, ok)
	}
}
