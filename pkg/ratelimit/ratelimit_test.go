package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

func TestBurstThenRate(t *testing.T) {
	l, ok := New[string](Config{Rate: 2, Burst: 3})
	if !ok {
		t.Fatal("config refused")
	}
	now := time.Unix(100, 0)
	steps := []struct {
		at   time.Duration
		key  string
		want bool
	}{
		{0, "a", true}, {0, "a", true}, {0, "a", true}, // the burst
		{0, "a", false},                      // spent
		{0, "b", true},                       // keys are independent
		{499 * time.Millisecond, "a", false}, // 0.998 tokens
		{500 * time.Millisecond, "a", true},  // one token after 1/rate
		{500 * time.Millisecond, "a", false},
		{10 * time.Second, "a", true}, {10 * time.Second, "a", true}, {10 * time.Second, "a", true}, // refilled to the burst, not beyond
		{10 * time.Second, "a", false},
	}
	for i, s := range steps {
		if got := l.Allow(s.key, now.Add(s.at)); got != s.want {
			t.Fatalf("step %d (%v %s): %v, want %v", i, s.at, s.key, got, s.want)
		}
	}
}

func TestBoundedTableFailsClosed(t *testing.T) {
	l, _ := New[int](Config{Rate: 1, Burst: 1, MaxKeys: 4})
	now := time.Unix(0, 0)
	for k := range 4 {
		if !l.Allow(k, now) {
			t.Fatalf("key %d refused", k)
		}
	}
	if l.Allow(99, now) {
		t.Fatal("a fifth key was admitted into a full table of busy buckets")
	}
	// Once the buckets have refilled they are forgotten and new keys fit.
	if !l.Allow(99, now.Add(2*time.Second)) {
		t.Fatal("idle buckets were not swept")
	}
	if l.Len() != 1 {
		t.Fatalf("%d keys after sweep, want 1", l.Len())
	}
}

func TestInvalidConfig(t *testing.T) {
	for _, c := range []Config{{}, {Rate: -1}, {Rate: 1, Burst: -1}, {Rate: 1, MaxKeys: -1}} {
		if _, ok := New[string](c); ok {
			t.Errorf("%+v accepted", c)
		}
	}
}

func BenchmarkAllow(b *testing.B) {
	l, _ := New[string](Config{Rate: 1e9, Burst: 1 << 30})
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Allow(keys[i%len(keys)], now)
		i++
	}
}
