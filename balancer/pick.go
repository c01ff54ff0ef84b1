package balancer

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"time"
	"unsafe"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/consistenthash"
)

// Pick is one endpoint chosen by Balancer.Pick, to be reported back with Done
// exactly once. It is a small value: passing it around allocates nothing.
// The zero Pick has no endpoint. A Pick is not safe for concurrent use: call
// Done from one goroutine, on the Pick itself rather than on copies (a copy
// does not know that the original is done).
type Pick struct {
	e      *entry
	b      *Balancer
	token  uint64   // the breaker's, if any
	ltoken uint64   // the limiter's, if any
	at     int64    // ConsistentHash: the stripe of total that counts the call
	kind   doneKind // e.done; doneGeneral in the zero Pick
	done   bool
}

// Endpoint returns where to send the call.
func (p *Pick) Endpoint() bulwark.Endpoint {
	if p.e == nil {
		return bulwark.Endpoint{}
	}
	return p.e.ep
}

// Result is what the caller learned from a call to a picked endpoint.
type Result struct {
	// Err is the call's error, nil for a success. An error that wraps
	// context.Canceled (the caller gave up) counts for nothing; any other
	// error is a failure of the endpoint.
	Err error
	// Latency is how long the call took. PeakEWMA learns from it; a zero
	// Latency teaches it nothing.
	Latency time.Duration
	// Gateway marks a failure to reach the endpoint or a gateway error from
	// it (a connect error, 502, 503, 504), for the outlier detector.
	Gateway bool
	// Outcome, if not zero (bulwark.OutcomeUnknown), is how the call counts
	// for the endpoint's health, in place of the classification of Err
	// above: a caller with its own classification (a breaker's Classify, a
	// 404 that is the client's fault) sets it, as it would pass an Outcome
	// to a breaker's Permit.Record.
	Outcome bulwark.Outcome
	// Overload marks a call that timed out, or that the endpoint refused as
	// too busy or asked to slow down (Transport sets it for HTTP 503 and
	// 429): the endpoint's Limiter counts it as a sign of overload, and
	// lowers its limit, rather than learn from its latency. An Err that
	// wraps context.DeadlineExceeded counts so too. It changes nothing for
	// the breaker and the Recorders, which go by Err and Outcome.
	Overload bool
}

// class returns how o counts for the endpoint's health.
func (o Result) class() bulwark.Outcome {
	switch {
	case o.Outcome != bulwark.OutcomeUnknown:
		return o.Outcome
	case o.Err == nil:
		return bulwark.Success
	case errors.Is(o.Err, context.Canceled):
		return bulwark.Neutral
	}
	return bulwark.Failure
}

// Done reports the outcome of the call made on the pick: it ends the call's
// in-flight count, feeds the latency estimate, the followers that are
// Recorders (an outlier detector), and the endpoint's breaker and limiter,
// whose slot it releases. Call it exactly
// once per pick; a second call on the same Pick is ignored and reported to
// the Observer as EventMisuse. Done on a zero Pick does nothing. Done never
// blocks and never rebuilds the snapshot: when the outcome gets the endpoint
// ejected, picks skip it at once and the balancer's own goroutine publishes
// the change.
func (p *Pick) Done(o Result) {
	// The common case, small enough to inline: no latency to learn, no
	// breaker or outlier detector to tell.
	if p.kind == doneNothing && !p.done {
		p.done = true
		return
	}
	p.done2(o)
}

// done2 is Done's general case.
func (p *Pick) done2(o Result) {
	e, b := p.e, p.b
	if e == nil {
		return
	}
	if p.done {
		if b.obs != nil {
			ev := b.event(bulwark.EventMisuse, e.ep)
			ev.Reason = "done called twice"
			b.obs.Observe(ev)
		}
		return
	}
	p.done = true
	if b.obs != nil {
		ev := b.event(bulwark.EventCall, e.ep)
		ev.Outcome, ev.Latency, ev.Err = o.class(), o.Latency, o.Err
		b.obs.Observe(ev)
	}
	st := e.st
	if e.done == doneCount {
		st.inflight.Add(-1)
		return
	}
	if b.inflight {
		st.inflight.Add(-1)
		if b.algo == ConsistentHash {
			b.total[p.at&(numStripes-1)].n.Add(-1)
		}
	}
	if b.algo == PeakEWMA && o.Latency > 0 {
		b.observe(st, o.Latency)
	}
	if !st.gated && len(b.recorders) == 0 {
		return
	}
	c := o.class()
	if st.limiter != nil {
		st.limiter.Release(p.ltoken, c, o.Overload || errors.Is(o.Err, context.DeadlineExceeded))
	}
	if st.breaker != nil {
		st.breaker.Release(p.token, c, o.Latency)
	}
	for _, r := range b.recorders {
		r.Record(e.ep, c, o.Gateway)
	}
}

// Tried is the set of endpoints that one call has tried so far, so that its
// retries go elsewhere: pass the same Tried to each Pick of the call, which
// skips the endpoints in it while another can take the call, and adds the
// endpoint it picks. It remembers the last eight picks.
//
//	var tried balancer.Tried // one per call
//	err := policy.Do(ctx, func(ctx context.Context) error {
//		pk, err := lb.Pick(key, &tried)
//		if err != nil { return err }
//		start := time.Now()
//		err = send(ctx, pk.Endpoint())
//		pk.Done(balancer.Result{Err: err, Latency: time.Since(start)})
//		return err
//	})
//
// With ConsistentHash, a Tried also remembers where the walk of the key's
// owners on the ring stopped, so that a retry of the same key goes on from
// there rather than hashing the key and walking past the tried owners again.
//
// The zero Tried is empty and ready to use; it is a value of a few hundred
// bytes that lives with the call, and allocates nothing. A Tried is not safe
// for concurrent use: hedged attempts that pick at once must take turns.
type Tried struct {
	n  int
	st [triedCap]*state

	// ConsistentHash: the walk of key's owners on ring, stopped after the
	// last pick, every owner before it tried; valid while ring is the
	// snapshot's.
	ring *hashIndex
	key  string
	own  consistenthash.Owners
}

const triedCap = 8

// has reports whether st is in t.
func (t *Tried) has(st *state) bool {
	n := t.n
	if n > triedCap {
		n = triedCap
	}
	for i := 0; i < n; i++ {
		if t.st[i] == st {
			return true
		}
	}
	return false
}

func (t *Tried) add(st *state) {
	t.st[t.n%triedCap] = st
	t.n++
}

// Pick chooses an endpoint for one call and never blocks. key matters only to
// ConsistentHash, which sends equal keys to the same endpoint while it is
// eligible and not overloaded; other algorithms ignore it. The caller must
// call Done on the result once the call is over.
//
// Pick does no I/O, and a pick that succeeds allocates nothing (with *limit.Limiter limiters too, even when it spills over): the
// endpoint set lives in an immutable snapshot behind an atomic pointer, with
// per-endpoint atomic counters and verdicts, and is replaced as a whole by
// Update and after verdicts change; Done never rebuilds it, even when its
// outcome gets the endpoint ejected.
//
// tried, if not nil, holds the endpoints that the call tried already: Pick
// passes over them while another endpoint can take the call (for
// ConsistentHash, the key goes to its next owner on the ring), and adds the
// endpoint it picks, so that a retry with the same Tried moves on.
//
// An endpoint whose breaker or Limiter refuses the call is passed over for
// another that can take it. Pick returns ErrNoEndpoints when the set is
// empty, and ErrUnavailable when no endpoint can take the call: none is
// eligible or pending, with panic mode off, or the breakers and limiters
// refused it on every endpoint that could take it; then the error also
// wraps the refusal with the shortest RetryAfter (the first one met when
// none has an estimate), so that errors.As finds the breaker's or the
// limiter's error and when to try again.
func (b *Balancer) Pick(key string, tried *Tried) (Pick, error) {
	s := b.snap.Load()
	if len(s.entries) == 0 {
		return Pick{}, ErrNoEndpoints
	}
	p := s.primary
	if p == nil {
		return Pick{}, ErrUnavailable
	}
	if s.split && rand.Uint64() >= s.pLocal {
		p = s.other
	}
	// A verdict reported since s was built is read from the endpoint's
	// state until the next snapshot; panic mode ignores verdicts.
	stale := b.gen.Load() != s.gen && p.kind != poolPanic
	if b.algo == ConsistentHash {
		return b.pickHash(s, p, key, tried, stale)
	}
	i := b.choose(s, p)
	e := &s.entries[i]
	if e.st.gated || (stale && e.st.verdict.Load()&downBits != 0) || (tried != nil && tried.has(e.st)) {
		return b.pickSlow(s, p, i, tried, stale)
	}
	var at int64
	if b.inflight {
		at = b.begin(e.st)
	}
	if b.obs != nil {
		b.pickEvent(e)
	}
	if tried != nil {
		tried.add(e.st)
	}
	return Pick{e: e, b: b, at: at, kind: e.done}, nil
}

// begin counts a call in flight, and returns the Pick's at.
func (b *Balancer) begin(st *state) int64 {
	st.inflight.Add(1)
	switch b.algo {
	case ConsistentHash:
		s := int64(stripeHint())
		b.total[s].n.Add(1)
		return s
	}
	return 0
}

// pickEvent emits a sampled EventPick.
func (b *Balancer) pickEvent(e *entry) {
	if b.sample == 1 || rand.Uint64N(b.sample) == 0 {
		ev := b.event(bulwark.EventPick, e.ep)
		ev.Reason = b.algo.String()
		ev.Weight = int(b.sample)
		b.obs.Observe(ev)
	}
}

// choose runs the algorithm (all but ConsistentHash) over p.
func (b *Balancer) choose(s *snapshot, p *pool) int32 {
	if len(p.idx) == 1 {
		return p.idx[0]
	}
	switch b.algo {
	case RoundRobin:
		if p.sched == nil {
			return p.sample(rand.Uint64())
		}
		sn := stripeHint()
		return p.next(b.rr[p.kind][sn].n.Add(1), sn)
	case LeastRequest:
		i, j := p.sample2()
		if i == j {
			return i
		}
		a, c := &s.entries[i], &s.entries[j]
		ai, aj := a.st.inflight.Load(), c.st.inflight.Load()
		if b.bias == 1 {
			// Fewer in flight per unit of weight: aj/wj < ai/wi.
			if uint64(max(aj, 0))*a.w < uint64(max(ai, 0))*c.w {
				return j
			}
			return i
		}
		if math.Pow(float64(max(aj, 0)), b.bias)*float64(a.w) < math.Pow(float64(max(ai, 0)), b.bias)*float64(c.w) {
			return j
		}
		return i
	case PeakEWMA:
		i, j := p.sample2()
		if i == j {
			return i
		}
		now := b.coarse.Load()
		if b.ewmaLoad(&s.entries[j], now) < b.ewmaLoad(&s.entries[i], now) {
			return j
		}
		return i
	}
	return p.sample(rand.Uint64())
}

// stripeHint returns a round-robin stripe for the calling goroutine: a hash
// of where its stack is, which is stable while the goroutine runs and
// usually differs between goroutines running at once (their stacks are at
// least 2 KiB apart). A stack that moves, or two goroutines that share a
// stripe, cost a little speed and never correctness; and a goroutine that
// picks alone walks the schedule in order.
func stripeHint() uint64 {
	var slot byte
	a := uint64(uintptr(unsafe.Pointer(&slot))) >> 11
	return (a * 0x9E3779B97F4A7C15) >> (64 - stripeBits) // Fibonacci hashing: the top bits mix them all
}

// maxTries is how many times the slow path runs the algorithm before it scans
// the pools in order.
const maxTries = 3

// errPassed is admit's refusal of an endpoint that was already tried, or
// that a judge found unhealthy since the snapshot was built.
var errPassed = errors.New("balancer: endpoint passed over")

// refused keeps, of the refusals by breakers and limiters that one pick met,
// the one its error wraps: the one with the shortest RetryAfter, or the
// first one if none has a positive RetryAfter (zero is no estimate).
type refused struct {
	err     error
	wait    time.Duration // err's RetryAfter; -1 for none
	limited bool          // err is a limiter's
}

func (r *refused) note(err error, limited bool) {
	wait := time.Duration(-1)
	if ra, ok := err.(interface{ RetryAfter() time.Duration }); ok && ra.RetryAfter() > 0 {
		wait = ra.RetryAfter()
	}
	if r.err == nil || (wait >= 0 && (r.wait < 0 || wait < r.wait)) {
		*r = refused{err: err, wait: wait, limited: limited}
	}
}

// unavailableError is Pick's ErrUnavailable when breakers or limiters refused
// the call on every endpoint that could take it.
type unavailableError struct {
	refused
}

func (e *unavailableError) Error() string {
	if e.limited {
		return ErrUnavailable.Error() + " (concurrency limits reached): " + e.err.Error()
	}
	return ErrUnavailable.Error() + ": " + e.err.Error()
}

// Unwrap returns ErrUnavailable and the refusal.
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// limitedError reports whether err is Pick's refusal of a call that the
// limiters refused (the shortest wait being a limiter's).
func limitedError(err error) bool {
	var u *unavailableError
	return errors.As(err, &u) && u.limited
}

// hasUntried reports whether an endpoint not in tried could take a pick:
// one of the snapshot's pools (eligible or pending, or any in panic mode)
// that no judge has found down since. Its limiter and breaker may still
// refuse.
func (b *Balancer) hasUntried(tried *Tried) bool {
	s := b.snap.Load()
	for _, q := range [2]*pool{s.primary, s.other} {
		if q == nil {
			continue
		}
		for _, i := range q.idx {
			st := s.entries[i].st
			if !tried.has(st) && (q.kind == poolPanic || st.verdict.Load()&downBits == 0) {
				return true
			}
		}
	}
	return false
}

// admit returns the pick of e unless e is in tried, is found down by a
// verdict newer than the snapshot (when stale), or its limiter or breaker
// refuses the call: then it returns errPassed, or the refusal and whether it
// is the limiter's.
func (b *Balancer) admit(e *entry, tried *Tried, stale bool) (pk Pick, limited bool, err error) {
	if tried != nil && tried.has(e.st) {
		return Pick{}, false, errPassed
	}
	if stale && e.st.verdict.Load()&downBits != 0 {
		return Pick{}, false, errPassed
	}
	var token, ltoken uint64
	if e.st.gated {
		if token, ltoken, limited, err = e.st.acquire(); err != nil {
			return Pick{}, limited, err
		}
	}
	var at int64
	if b.inflight {
		at = b.begin(e.st)
	}
	if b.obs != nil {
		b.pickEvent(e)
	}
	if tried != nil {
		tried.add(e.st)
	}
	return Pick{e: e, b: b, token: token, ltoken: ltoken, at: at, kind: e.done}, false, nil
}

// acquire takes a slot of st's limiter, then of its breaker, and returns
// their tokens; or the refusal, and whether it is the limiter's. When the
// breaker refuses, the limiter's slot is given back.
func (st *state) acquire() (token, ltoken uint64, limited bool, err error) {
	if st.limiter != nil {
		if ltoken, err = st.limiter.TryAcquire(); err != nil {
			return 0, 0, true, err
		}
	}
	if st.breaker != nil {
		if token, err = st.breaker.Acquire(); err != nil {
			if st.limiter != nil {
				st.limiter.Release(ltoken, bulwark.Neutral, false) // the call was not made
			}
			return 0, 0, false, err
		}
	}
	return token, ltoken, false, nil
}

// pickSlow handles breakers, limiters, tried endpoints and fresh verdicts: it
// tries the algorithm's choice first, then a few more choices, then scans.
func (b *Balancer) pickSlow(s *snapshot, p *pool, first int32, tried *Tried, stale bool) (Pick, error) {
	i := first
	for try := 0; try < maxTries; try++ {
		if try > 0 {
			i = b.choose(s, p)
		}
		if pk, _, err := b.admit(&s.entries[i], tried, stale); err == nil {
			return pk, nil
		}
	}
	return b.scan(s, p, tried, stale, refused{})
}

// scan tries every endpoint of p, then of the other zone's pool, each from a
// random start. If tried or fresh verdicts ruled some out, it starts over
// allowing the tried endpoints, then the ones found down. It returns
// ErrUnavailable, wrapping the refusal to keep of those it met (rf holds
// those of the scans before it), when every endpoint refused. The refusals
// that the choices before scan met are met again here.
func (b *Balancer) scan(s *snapshot, p *pool, tried *Tried, stale bool, rf refused) (Pick, error) {
	pools := [2]*pool{p, s.other}
	if p == s.other {
		pools[1] = s.primary
	}
	passed := false
	for _, q := range pools {
		if q == nil {
			continue
		}
		n := len(q.idx)
		start := rand.IntN(n)
		for k := range n {
			pk, limited, err := b.admit(&s.entries[q.idx[(start+k)%n]], tried, stale)
			switch {
			case err == nil:
				return pk, nil
			case err == errPassed:
				passed = true
			default:
				rf.note(err, limited)
			}
		}
	}
	switch {
	case passed && tried != nil && tried.n > 0:
		// Only tried endpoints (or down ones) are left: a retry goes to
		// one of them rather than nowhere. It is not added to tried twice.
		pk, err := b.scan(s, p, nil, stale, rf)
		return pk, err
	case passed && stale:
		return b.scan(s, p, nil, false, rf)
	}
	if rf.err == nil {
		return Pick{}, ErrUnavailable
	}
	err := &unavailableError{refused: rf}
	if rf.limited && b.obs != nil {
		ev := b.event(bulwark.EventRejected, bulwark.Endpoint{})
		ev.Reason, ev.Err = "limit", err
		b.obs.Observe(ev)
	}
	return Pick{}, err
}

// penalty is the PeakEWMA cost of an endpoint with requests in flight but no
// latency observed yet, as in Finagle: it is tried only when all others are
// as unknown.
const penalty = math.MaxFloat64 / 4

// The PeakEWMA estimate of an endpoint is one word: the latency in ns as a
// float32 in the high half, and in the low half the time of its last
// observation in units of 2^20 ns (about a millisecond) since base, modulo
// 2^32 (about 52 days).
const stampShift = 20

// elapsed returns the time from the stamp of word to now, at least 0.
func elapsed(word uint64, now int64) float64 {
	dt := int32(uint32(now>>stampShift) - uint32(word))
	if dt <= 0 {
		return 0
	}
	return float64(int64(dt) << stampShift)
}

// ewmaLoad returns e's PeakEWMA load at now: its latency estimate, decayed
// since its last observation, × (in flight + 1).
func (b *Balancer) ewmaLoad(e *entry, now int64) float64 {
	n := float64(max(e.st.inflight.Load(), 0))
	word := e.st.ewma.Load()
	cost := float64(math.Float32frombits(uint32(word >> 32)))
	if cost == 0 {
		if n == 0 {
			return 0
		}
		return penalty + n
	}
	if dt := elapsed(word, now); dt > 0 {
		cost *= decay(dt / b.tau)
	}
	return cost * (n + 1)
}

// coarseGrain is how far the coarse clock must move before it is written.
const coarseGrain = int64(time.Millisecond)

// Peak-EWMA's two bounds on one observation: a slower one raises the
// estimate at most peakStep-fold, and a faster one moves it by at least
// minWeight of the way.
const (
	peakStep  = 1.5
	minWeight = 1.0 / 8
)

// observe folds one latency into st's PeakEWMA estimate; see observeAt.
//
// Time comes from the balancer's coarse clock, so that most calls read no
// clock: one observation in eight, at random, reads the real clock and
// advances the coarse one, which picks read too.
func (b *Balancer) observe(st *state, latency time.Duration) {
	now := b.coarse.Load()
	if rand.Uint32()&7 == 0 {
		t := b.now()
		if t-now >= coarseGrain {
			b.coarse.CompareAndSwap(now, t)
		}
		now = t
	}
	b.observeAt(st, latency, now)
}

// observeAt folds latency into st's estimate at now. With E the estimate, dt
// the time since its last observation and w = e^(-dt/DecayTime), picks see
// E·w, the estimate decayed towards zero (ewmaLoad). An observation rtt:
//
//   - sets E to rtt if there was none;
//   - if it is at least E·w, raises or lowers E to it, the peak, but to no
//     more than peakStep·E: an endpoint that comes back after a while is
//     measured afresh, an endpoint that turns slow loses the next
//     comparison at once, and one slow call among fast ones cannot lock an
//     equal endpoint out for long, as an unbounded peak does (a peak of k
//     times the others' estimate keeps an endpoint from every pick for
//     DecayTime·ln k);
//   - if it is faster, moves E towards it by max(1 - w, minWeight) of the
//     way, so that a busy endpoint forgets a peak within a dozen calls.
//
// An observation that changes nothing, such as one equal to the estimate in
// the same stamp unit, writes nothing.
func (b *Balancer) observeAt(st *state, latency time.Duration, now int64) {
	rtt := float64(latency)
	for {
		old := st.ewma.Load()
		cost := float64(math.Float32frombits(uint32(old >> 32)))
		next := rtt
		if cost > 0 {
			w := 1.0
			if dt := elapsed(old, now); dt > 0 {
				w = decay(dt / b.tau)
			}
			if rtt >= cost*w {
				if top := peakStep * cost; rtt > top {
					next = top
				}
			} else {
				a := max(1-w, minWeight)
				next = cost*(1-a) + rtt*a
			}
		}
		word := uint64(math.Float32bits(float32(next)))<<32 | uint64(uint32(now>>stampShift))
		if word == old || st.ewma.CompareAndSwap(old, word) {
			return
		}
	}
}

// decay returns e^-x for x >= 0, cheaply for the small x of busy endpoints.
func decay(x float64) float64 {
	if x < 1.0/64 {
		return 1 - x + x*x/2 - x*x*x/6
	}
	return math.Exp(-x)
}
