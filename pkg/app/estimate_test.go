package app

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// rfc6298 is the reference model: RFC 6298 section 2 in floating-point seconds, as the
// RFC writes it.
type rfc6298 struct {
	srtt, rttvar float64
	n            int
}

func (m *rfc6298) sample(r float64) {
	if m.n == 0 {
		m.srtt, m.rttvar = r, r/2
	} else {
		m.rttvar = (1-0.25)*m.rttvar + 0.25*math.Abs(m.srtt-r)
		m.srtt = (1-0.125)*m.srtt + 0.125*r
	}
	m.n++
}

func (m *rfc6298) rto(g, floor, ceiling float64) float64 {
	return math.Min(math.Max(m.srtt+math.Max(g, 4*m.rttvar), floor), ceiling)
}

// The estimator follows RFC 6298's arithmetic on any sequence of samples: SRTT, RTTVAR and
// the RTO (with our granularity, floor and ceiling) stay within a few nanoseconds of the
// floating-point reference (integer division rounds, the factors 3/4 and 7/8 keep the
// error from growing).
func TestRTTEstimatorMatchesRFC6298(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const tolerance = 16 // nanoseconds
	sec := func(d time.Duration) float64 { return d.Seconds() }
	for run := range 500 {
		var e rttEstimator
		var m rfc6298
		base := time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
		for i := range 1 + rng.IntN(60) {
			var r time.Duration
			switch rng.IntN(4) {
			case 0: // anything up to two seconds
				r = time.Duration(rng.Int64N(int64(2 * time.Second)))
			case 1: // a spike
				r = base * time.Duration(1+rng.IntN(20))
			default: // jitter around a base
				r = base + time.Duration(rng.Int64N(int64(5*time.Millisecond)+1))
			}
			e.sample(r)
			m.sample(sec(r))
			if d := math.Abs(sec(e.srtt)-m.srtt) * 1e9; d > tolerance {
				t.Fatalf("run %d sample %d: srtt %v, reference %.9fs", run, i, e.srtt, m.srtt)
			}
			if d := math.Abs(sec(e.rttvar)-m.rttvar) * 1e9; d > tolerance {
				t.Fatalf("run %d sample %d: rttvar %v, reference %.9fs", run, i, e.rttvar, m.rttvar)
			}
			want := m.rto(sec(RTOGranularity), sec(RTOMin), sec(RequestRetryMax))
			if d := math.Abs(sec(e.rto(RequestRetryMax))-want) * 1e9; d > 4*tolerance {
				t.Fatalf("run %d sample %d: rto %v, reference %.9fs", run, i, e.rto(RequestRetryMax), want)
			}
		}
	}
}

func TestRTTEstimatorCases(t *testing.T) {
	for _, c := range []struct {
		name    string
		samples []time.Duration
		srtt    time.Duration
		rttvar  time.Duration
		rto     time.Duration
	}{
		{"none", nil, 0, 0, 0},
		// RFC 6298 (2.2): SRTT = R, RTTVAR = R/2, RTO = SRTT + 4·RTTVAR = 3R.
		{"first sample", []time.Duration{40 * time.Millisecond}, 40 * time.Millisecond, 20 * time.Millisecond, 120 * time.Millisecond},
		// A steady round trip: the variation decays (by 3/4 per sample) until G is the larger term.
		{"steady", repeat(40*time.Millisecond, 40), 40 * time.Millisecond, 0, 50 * time.Millisecond},
		{"loopback is floored", repeat(100*time.Microsecond, 40), 100 * time.Microsecond, 0, RTOMin},
		{"ceiling", []time.Duration{5 * time.Second}, 5 * time.Second, 2500 * time.Millisecond, RequestRetryMax},
		{"negative counts as zero", []time.Duration{-time.Second}, 0, 0, RTOMin},
		// 2.3: RTTVAR = 3/4·20 + 1/4·|40-80| = 25 ms, SRTT = 7/8·40 + 1/8·80 = 45 ms.
		{"second sample", []time.Duration{40 * time.Millisecond, 80 * time.Millisecond}, 45 * time.Millisecond, 25 * time.Millisecond, 145 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			var e rttEstimator
			for _, s := range c.samples {
				e.sample(s)
			}
			// The steady case has a variation of a few nanoseconds left, not zero.
			if e.srtt != c.srtt || (e.rttvar-c.rttvar).Abs() > time.Microsecond || e.rto(RequestRetryMax) != c.rto {
				t.Errorf("srtt %v rttvar %v rto %v, want %v %v %v", e.srtt, e.rttvar, e.rto(RequestRetryMax), c.srtt, c.rttvar, c.rto)
			}
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	s := make([]time.Duration, n)
	for i := range s {
		s[i] = d
	}
	return s
}

// With rounds of one kind only the maximum-likelihood estimate has a closed form: the
// failure share F/N is f_k(p) = 1 - (1 - p^k)^2, so p = (1 - sqrt(1 - F/N))^(1/k).
func TestLossEstimateClosedForm(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		k := 1 + rng.IntN(MaxCopies)
		n := 0.5 + rng.Float64()*100
		f := rng.Float64() * n
		var e lossEstimator
		e.rounds[k-1], e.failures[k-1] = n, f
		want := math.Pow(1-math.Sqrt(1-f/n), 1/float64(k))
		if want > lossMax {
			want = lossMax
		}
		if got := e.likeliest(); math.Abs(got-want) > 1e-9 {
			t.Fatalf("k=%d F=%.3f N=%.3f: estimate %.12f, closed form %.12f", k, f, n, got, want)
		}
		// Datagrams alone: the share missing.
		d := lossEstimator{received: n - f, missing: f}
		if got, want := d.likeliest(), min(f/n, lossMax); math.Abs(got-want) > 1e-9 {
			t.Fatalf("M=%.3f R=%.3f: estimate %.12f, want %.12f", f, n-f, got, want)
		}
	}
}

// A failed round never lowers the estimate and an answered one never raises it, whatever
// came before; likewise a missing and a received datagram. (Observing weighs every earlier
// observation down by the same factor, which alone does not move a maximum-likelihood
// estimate.)
func TestLossEstimateMonotone(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		e := newLossEstimator()
		for range rng.IntN(200) {
			if rng.IntN(3) == 0 {
				e.observeDatagrams(rng.IntN(5), rng.IntN(3))
			} else {
				e.observe(1+rng.IntN(MaxCopies), rng.Float64() < 0.7)
			}
		}
		k := 1 + rng.IntN(MaxCopies)
		failed, answered, missing, received := e, e, e, e
		failed.observe(k, false)
		answered.observe(k, true)
		missing.observeDatagrams(0, 1)
		received.observeDatagrams(1, 0)
		const eps = 1e-9
		if failed.p < e.p-eps || answered.p > e.p+eps || missing.p < e.p-eps || received.p > e.p+eps {
			t.Fatalf("from %.6f: failed %.6f answered %.6f missing %.6f received %.6f", e.p, failed.p, answered.p, missing.p, received.p)
		}
	}
}

// Rounds simulated over a link that loses a share p of the datagrams each way, at the
// copies the estimator asks for: the estimate settles near p, and the copies follow the
// thresholds. The seed is fixed: the test is deterministic.
func TestLossEstimateConverges(t *testing.T) {
	for _, c := range []struct {
		p      float64
		copies int
		counts bool // the channel counts the drone's datagrams (native)
	}{{0, 1, false}, {0.01, 1, false}, {0.1, 2, false}, {0.3, 2, false}, {0.5, 2, false},
		{0, 1, true}, {0.01, 1, true}, {0.1, 2, true}, {0.3, 2, true}, {0.5, 2, true}} {
		rng := rand.New(rand.NewPCG(7, uint64(c.p*1000)))
		e := newLossEstimator()
		lost := func() bool { return rng.Float64() < c.p }
		var sum float64
		var copies [MaxCopies + 1]int
		const warmup, rounds = 2000, 20000
		for i := range warmup + rounds {
			k := e.copies
			up, down, missing := false, false, 0
			for range k {
				up = up || !lost()
			}
			if up { // the drone answers k times
				for range k {
					if lost() {
						missing++
					} else {
						down = true
					}
				}
			}
			e.observe(k, up && down)
			if c.counts && up {
				e.observeDatagrams(k-missing, missing)
			}
			if i >= warmup {
				sum += e.p
				copies[e.copies]++
			}
		}
		mean := sum / rounds
		t.Logf("loss %.2f counts %v: mean estimate %.4f, copies %v", c.p, c.counts, mean, copies)
		if math.Abs(mean-c.p) > 0.02+0.1*c.p {
			t.Errorf("loss %.2f counts %v: mean estimate %.4f", c.p, c.counts, mean)
		}
		if copies[c.copies] < rounds*9/10 {
			t.Errorf("loss %.2f counts %v: %d copies in only %d of %d rounds (%v)", c.p, c.counts, c.copies, copies[c.copies], rounds, copies)
		}
	}
}

func TestLossEstimatorCopies(t *testing.T) {
	e := newLossEstimator()
	if e.copies != MaxCopies || math.Abs(e.p-lossPrior) > 1e-6 {
		t.Fatalf("prior: loss %.4f copies %d, want %.2f and %d", e.p, e.copies, lossPrior, MaxCopies)
	}
	// A clean link: answered rounds bring the estimate below copiesOff, then one copy.
	n := 0
	for e.copies != 1 {
		e.observe(e.copies, true)
		if n++; n > 1000 {
			t.Fatalf("still %d copies after %d answered rounds (loss %.4f)", e.copies, n, e.p)
		}
	}
	t.Logf("one copy after %d answered rounds", n)
	// With the channel's datagram counts a clean link shows at once: two acknowledgements
	// per command both arrive.
	d := newLossEstimator()
	for n = 0; d.copies != 1; n++ {
		d.observe(d.copies, true)
		d.observeDatagrams(2, 0)
		if n > 100 {
			t.Fatalf("still %d copies after %d answered rounds with counts (loss %.4f)", d.copies, n, d.p)
		}
	}
	t.Logf("one copy after %d answered rounds with datagram counts", n)
	// A few failures bring the second copy back; once above copiesOff it stays until the
	// estimate falls below copiesOff again (hysteresis).
	for e.copies != MaxCopies {
		e.observe(1, false)
	}
	if e.p < copiesOn {
		t.Errorf("two copies at loss %.4f, below %.2f", e.p, copiesOn)
	}
	e.observe(MaxCopies, true)
	if e.copies != MaxCopies && e.p >= copiesOff {
		t.Errorf("back to one copy at loss %.4f", e.p)
	}
	// Out-of-range copies are ignored.
	before := e
	e.observe(0, false)
	e.observe(MaxCopies+1, false)
	if e != before {
		t.Error("an out-of-range observation changed the estimate")
	}
}

func TestRoundFailure(t *testing.T) {
	for _, c := range []struct {
		k       int
		p, want float64
	}{
		{1, 0, 0}, {1, 0.3, 0.51}, {1, 0.1, 0.19}, {2, 0.3, 1 - 0.91*0.91}, {2, 0.1, 1 - 0.99*0.99}, {2, 1, 1},
	} {
		if got := roundFailure(c.k, c.p); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("f_%d(%v) = %v, want %v", c.k, c.p, got, c.want)
		}
	}
}

// The estimators run on every acknowledgement: they allocate nothing.
func TestEstimatorsAllocateNothing(t *testing.T) {
	var r rttEstimator
	l := newLossEstimator()
	if a := testing.AllocsPerRun(100, func() {
		r.sample(40 * time.Millisecond)
		_ = r.rto(RequestRetryMax)
		l.observe(2, true)
		l.observeDatagrams(2, 1)
	}); a != 0 {
		t.Errorf("%v allocations per update", a)
	}
}
