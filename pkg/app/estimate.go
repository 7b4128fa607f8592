package app

import (
	"math"
	"time"
)

// The operator's view of its link: the round-trip time (RFC 6298) and the loss rate,
// estimated from the exchanges the client sees, and what they decide: how long to wait
// before retransmitting a login or a command, and how many copies of it to send
// (docs/PROTOCOL.md section 9).

// Timers and limits of the adaptive retransmission.
const (
	// RTOMin is the floor of the retransmission timeout: on loopback or a short radio hop
	// the round trip is well under a millisecond, and below this a timer would fire on a
	// scheduling hiccup rather than a loss.
	RTOMin = 20 * time.Millisecond
	// RTOGranularity is G in RFC 6298's RTO = SRTT + max(G, 4·RTTVAR): the slack the
	// timers need on a busy machine (timer wake-ups, garbage collection, the drone's
	// command queue) when the round trip hardly varies.
	RTOGranularity = 10 * time.Millisecond
	// LoginRetryMin is the least a login waits before its retransmission: the drone
	// answers it only after a password check (argon2id, tens of milliseconds), so a
	// round-trip timer alone would resend it while the check runs (harmlessly: the drone
	// ignores a copy of a login it is checking).
	LoginRetryMin = 100 * time.Millisecond
	// SilentAfter: when logins or commands have gone unanswered and nothing at all has been
	// heard from the drone for this long (or twice the retransmission timeout, if longer),
	// the link counts as silent: one copy per transmission, the fixed backoff
	// (RequestRetryInitial doubling to RequestRetryMax) for new transmissions, and the
	// channel's fixed initiation backoff, so a dead link gets no more traffic than before
	// round-trip estimation.
	SilentAfter = time.Second
	// MaxCopies is the most copies of a login or command sent per transmission.
	MaxCopies = 2
)

// Parameters of the loss estimate (lossEstimator).
const (
	// lossMemory: each observed round weighs this much less than the next one, by a
	// factor of 1 - 1/lossMemory: the estimate follows about the last lossMemory rounds.
	lossMemory = 64
	// lossDatagramMemory: the same for the drone's datagrams counted by the channel, each
	// weighing this much less than the next one by a factor of 1 - 1/lossDatagramMemory.
	lossDatagramMemory = 256
	// lossPrior, lossPriorRounds: before anything is observed the estimate is as if
	// lossPriorRounds single-copy rounds had failed at the rate lossPrior loss gives: a
	// radio link is assumed lossy until shown otherwise (the prior fades like any round).
	lossPrior       = 0.1
	lossPriorRounds = 1
	// copiesOn, copiesOff: two copies per transmission once the estimated loss reaches
	// copiesOn, one again once it falls below copiesOff. At 5% loss a single copy and its
	// acknowledgement fail together 9.75% of the time, so a 1% tail already needs a second
	// round trip; two copies (and two acknowledgements) fail 0.5% of the time.
	copiesOn  = 0.05
	copiesOff = 0.02
	// lossMax bounds the estimate below 1.
	lossMax = 0.99
)

// rttEstimator is RFC 6298's smoothed round-trip time and variation, in integer
// nanoseconds. The zero value has no sample.
type rttEstimator struct {
	srtt, rttvar time.Duration
	samples      int
}

// maxRTTSample bounds a sample, so the arithmetic never overflows.
const maxRTTSample = time.Hour

// sample adds one round-trip measurement (RFC 6298 section 2: alpha = 1/8, beta = 1/4;
// the variation is updated with the old SRTT).
func (e *rttEstimator) sample(r time.Duration) {
	r = min(max(r, 0), maxRTTSample)
	if e.samples == 0 {
		e.srtt, e.rttvar = r, r/2
	} else {
		e.rttvar = (3*e.rttvar + (e.srtt - r).Abs()) / 4
		e.srtt = (7*e.srtt + r) / 8
	}
	e.samples++
}

// rto is the retransmission timeout, SRTT + max(G, 4·RTTVAR) between RTOMin and ceiling,
// or 0 before the first sample.
func (e *rttEstimator) rto(ceiling time.Duration) time.Duration {
	if e.samples == 0 {
		return 0
	}
	return min(max(e.srtt+max(RTOGranularity, 4*e.rttvar), RTOMin), ceiling)
}

// lossEstimator estimates the loss rate p of each direction (taken to be the same) by
// maximum likelihood from two kinds of evidence:
//
//   - retransmission rounds: a round of a message sent in k copies, for which the drone
//     sends k answers, fails (no answer before the retransmission timer) with probability
//     f_k(p) = 1 - (1 - p^k)^2. Per k it keeps the rounds and failures seen, each weighted
//     down by 1 - 1/lossMemory per later round;
//   - the drone's datagrams, where the channel counts them (the native channel sees the gaps
//     in their counters): each is lost with probability p. It keeps those received and
//     those missing, weighted down by 1 - 1/lossDatagramMemory per later datagram.
//
// Two copies answered twice fail so rarely that rounds alone say little about a low loss
// rate; the datagram counts (two acknowledgements per command among them) say it quickly.
// The estimator also keeps the copies to send per transmission, with hysteresis between
// copiesOff and copiesOn. Use newLossEstimator.
type lossEstimator struct {
	rounds, failures  [MaxCopies]float64 // weighted, indexed by copies - 1
	received, missing float64            // the drone's datagrams, weighted
	p                 float64
	copies            int
}

func newLossEstimator() lossEstimator {
	e := lossEstimator{copies: 1}
	e.rounds[0] = lossPriorRounds
	e.failures[0] = lossPriorRounds * roundFailure(1, lossPrior)
	e.update()
	return e
}

// roundFailure is f_k(p): the probability that a round of k copies, answered k times,
// gets no answer through.
func roundFailure(k int, p float64) float64 {
	u := pow(p, k)
	return 1 - (1-u)*(1-u)
}

func pow(p float64, k int) float64 {
	r := 1.0
	for range k {
		r *= p
	}
	return r
}

// observe adds one round of copies copies (1 to MaxCopies) that was answered or not.
func (e *lossEstimator) observe(copies int, answered bool) {
	if copies < 1 || copies > MaxCopies {
		return
	}
	const keep = 1 - 1.0/lossMemory
	for i := range e.rounds {
		e.rounds[i] *= keep
		e.failures[i] *= keep
	}
	e.rounds[copies-1]++
	if !answered {
		e.failures[copies-1]++
	}
	e.update()
}

// observeDatagrams adds received datagrams of the drone that arrived and missing ones
// that did not (a negative count takes back what an earlier one counted: a datagram counted
// missing that arrived late).
func (e *lossEstimator) observeDatagrams(received, missing int) {
	if n := received + max(missing, 0); n > 0 {
		keep := math.Pow(1-1.0/lossDatagramMemory, float64(n))
		e.received *= keep
		e.missing *= keep
	}
	e.received = max(e.received+float64(received), 0)
	e.missing = max(e.missing+float64(missing), 0)
	e.update()
}

// update recomputes the estimate and the copies.
func (e *lossEstimator) update() {
	e.p = e.likeliest()
	switch {
	case e.copies < MaxCopies && e.p >= copiesOn:
		e.copies = MaxCopies
	case e.copies > 1 && e.p < copiesOff:
		e.copies = 1
	}
}

// likeliest is the p in [0, lossMax] that maximises the weighted log-likelihood
//
//	sum over k of F_k ln f_k(p) + S_k ln(1 - f_k(p))  +  M ln p + R ln(1 - p)
//
// with F_k failed and S_k answered rounds of k copies, M missing and R received datagrams.
// Its derivative is
//
//	sum over k of 2k [ F_k (1 - p^k) / (p (2 - p^k)) - S_k p^(k-1) / (1 - p^k) ]  +  M/p - R/(1 - p)
//
// in which every positive term falls and every negative one rises with p, so it has one
// zero, found by bisection.
func (e *lossEstimator) likeliest() float64 {
	failed, answered := e.missing, e.received
	for i := range e.rounds {
		failed += e.failures[i]
		answered += e.rounds[i] - e.failures[i]
	}
	switch {
	case failed <= 0:
		return 0
	case answered <= 0:
		return lossMax
	}
	lo, hi := 0.0, lossMax
	for range 48 {
		mid := (lo + hi) / 2
		if e.slope(mid) > 0 {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}

// slope is the log-likelihood's derivative at p in (0, 1).
func (e *lossEstimator) slope(p float64) float64 {
	var d float64
	for i := range e.rounds {
		k := i + 1
		f, s := e.failures[i], e.rounds[i]-e.failures[i]
		u := pow(p, k)
		d += 2 * float64(k) * (f*(1-u)/(p*(2-u)) - s*pow(p, k-1)/(1-u))
	}
	return d + e.missing/p - e.received/(1-p)
}

// LinkEstimate is an operator's current view of its link to the drone.
type LinkEstimate struct {
	// SRTT and RTTVar are the smoothed round-trip time and its variation (RFC 6298), from
	// the handshake and from commands acknowledged after a single transmission; zero
	// before the first sample.
	SRTT, RTTVar time.Duration
	// RTO is the retransmission timeout of logins and commands: SRTT + max(RTOGranularity,
	// 4·RTTVar), between RTOMin and RequestRetryMax; zero before the first sample (the
	// fixed RequestRetryInitial applies).
	RTO time.Duration
	// Loss is the estimated loss rate of each direction, 0 to 1.
	Loss float64
	// Copies is how many copies of a login or command go out per transmission now.
	Copies int
	// Silent: requests have gone unanswered and nothing at all was heard from the drone for
	// SilentAfter; the fixed timers and single copies apply until the drone is heard.
	Silent bool
}
