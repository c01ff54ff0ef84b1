package breaker

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/compose"
)

var (
	_ bulwark.Policy = (*Breaker)(nil)
	_ compose.Sync   = (*Breaker)(nil)
)

// Breaker is a circuit breaker. Closed, it lets calls through and watches
// their outcomes; when a trip rule fires (see Config) it opens and refuses
// calls with an *OpenError for the open duration; then it turns half-open
// and lets a few probes through: enough successes close it, a failed or
// overdue probe opens it again, for longer if MaxOpenDuration allows.
//
// Each state lives in a generation; a call's outcome counts only in the
// generation that admitted it, so results of calls that were admitted before
// a transition are ignored.
//
// In the closed state, admission reads one atomic pointer and recording a
// success writes one counter of the caller's stripe per window (none with
// only ConsecutiveFailures); the clock is read only for a slow-call rule or
// an Observer (latency), never for a count window, and for a time window only
// by a timer at each step of the window while calls come. The lock is taken
// only for transitions and half-open probes.
//
// A Breaker is safe for concurrent use by multiple goroutines. Use New; the
// zero Breaker is not usable.
type Breaker struct {
	//lint:ignore U1000 used through its method, which makes the type a compose.Sync
	syncMarker // for bulwark.Call: Do runs op on the caller's goroutine only

	cur atomic.Pointer[epoch] // the current generation
	s   settings

	base    time.Time // the clock's reading at New; time is kept as ns since
	procs   int       // stripes per window
	clocked bool      // calls read the clock: a slow-call rule or an Observer
	wall    bool      // the clock is bulwark.WallClock(): read time directly, without the interface call

	mu    sync.Mutex // guards transitions (replacing cur), trips and half-open probes
	trips int        // trips since the breaker last closed; guarded by mu
}

// epoch is one generation of a breaker: a state and what that state counts.
// A transition replaces the epoch, so that late writers of an older
// generation count nowhere that matters.
type epoch struct {
	gen   uint64
	state State
	pass  bool   // closed or forced closed: admit every call
	tok   uint64 // the token of calls admitted while closed

	// closed
	consec  atomic.Int64 // current run of failures
	pending atomic.Bool  // a rate could fire on a later success: a window below MinCalls holds failures or slow calls
	count   *countRing   // nil without a count window
	time    *timeRing    // nil without a time window

	// open
	openUntil int64 // elapsed ns

	// half-open; guarded by Breaker.mu
	probes    []probe
	successes int
}

type probe struct {
	seq      uint32 // distinguishes successive uses of the slot
	busy     bool
	deadline int64 // elapsed ns
}

// Tokens: gen (32 bits) | probe seq (20 bits) | probe slot + 1 (12 bits),
// with slot 0 for calls admitted while closed.
const (
	slotBits = 12
	seqBits  = 20
	seqMask  = 1<<seqBits - 1
	slotMask = 1<<slotBits - 1
)

func token(gen uint64, seq uint32, slot int) uint64 {
	return gen<<32 | uint64(seq&seqMask)<<slotBits | uint64(slot+1)&slotMask
}

func sameGen(tok, gen uint64) bool { return uint32(tok>>32) == uint32(gen) }

// New returns a closed Breaker configured by cfg. It returns an error that
// names every invalid field of cfg.
func New(cfg Config) (*Breaker, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	return newBreaker(s), nil
}

func newBreaker(s settings) *Breaker {
	b := &Breaker{s: s, procs: numStripes(runtime.GOMAXPROCS(0))}
	b.clocked = s.slowDur > 0 || s.obs != nil
	b.base = s.clk.Now()
	b.wall = s.clk == bulwark.WallClock()
	b.cur.Store(b.closedEpoch(1, Closed, 0))
	return b
}

// syncMarker makes a Breaker a compose.Sync: its Do runs op on the caller's
// goroutine and never after it returns, so bulwark.Call can keep its closure
// on its own stack.
//
//lint:ignore U1000 see the field
type syncMarker = compose.SyncMarker

func (b *Breaker) closedEpoch(gen uint64, st State, now int64) *epoch {
	e := &epoch{gen: gen, state: st, pass: st == Closed || st == ForcedClosed, tok: gen << 32}
	if st != Closed {
		return e
	}
	if b.s.windowCalls > 0 {
		e.count = newCountRing(b.s.windowCalls, b.procs, b.s.slowRate > 0)
	}
	if b.s.windowDur > 0 {
		e.time = newTimeRing(int64(b.s.windowDur)/int64(b.s.buckets), b.s.buckets, b.procs, now, b.s.clk, b.now)
	}
	return e
}

// now returns the time since New in ns.
func (b *Breaker) now() int64 {
	if b.wall {
		return int64(time.Since(b.base))
	}
	return int64(b.s.clk.Since(b.base))
}

// Name returns Config.Name.
func (b *Breaker) Name() string { return b.s.name }

// State returns the breaker's state. An open breaker whose open duration has
// passed turns half-open here, and a half-open one with an overdue probe
// opens again, as they would on the next call.
//
// State takes the breaker's lock only while half-open, or when an open
// breaker's time is up.
func (b *Breaker) State() State {
	e := b.cur.Load()
	switch e.state {
	case Open, HalfOpen:
		now := b.now()
		if e.state == Open && now < e.openUntil {
			return Open
		}
		var evs events
		b.mu.Lock()
		e = b.advanceLocked(now, &evs)
		b.mu.Unlock()
		b.emit(&evs)
	}
	return e.state
}

// Acquire asks to make one call. On success the call may run, and Release
// must be called exactly once with the token, the call's outcome and its
// latency. On refusal nothing is to be released, and the error is an
// *OpenError wrapping ErrOpen. Acquire does not block and allocates nothing
// unless it refuses (the refusal error) or causes a transition.
func (b *Breaker) Acquire() (token uint64, err error) {
	if e := b.cur.Load(); e.pass {
		return e.tok, nil
	}
	return b.acquireSlow(context.Background())
}

// acquireSlow is Acquire's general case. ctx is the context of the call
// (Background for Acquire, which has none), passed with the events to a
// bulwark.ContextObserver.
func (b *Breaker) acquireSlow(ctx context.Context) (uint64, error) {
	e := b.cur.Load()
	evs := events{ctx: ctx}
	now := b.now()
	// Refusals while open need no lock.
	switch {
	case e.state == ForcedOpen:
		return 0, b.reject(&OpenError{Name: b.s.name, State: ForcedOpen, retryAfter: forever}, &evs)
	case e.state == Open && now < e.openUntil:
		return 0, b.reject(&OpenError{Name: b.s.name, State: Open, retryAfter: time.Duration(e.openUntil - now)}, &evs)
	}
	b.mu.Lock()
	e = b.advanceLocked(now, &evs)
	var (
		tok uint64
		err *OpenError
	)
	switch e.state {
	case Closed, ForcedClosed:
		tok = e.gen << 32
	case Open:
		err = &OpenError{Name: b.s.name, State: Open, retryAfter: time.Duration(e.openUntil - now)}
	case ForcedOpen:
		err = &OpenError{Name: b.s.name, State: ForcedOpen, retryAfter: forever}
	case HalfOpen:
		free, earliest := -1, int64(math.MaxInt64)
		for i := range e.probes {
			p := &e.probes[i]
			if !p.busy {
				if free < 0 {
					free = i
				}
			} else if p.deadline < earliest {
				earliest = p.deadline
			}
		}
		if free < 0 {
			err = &OpenError{Name: b.s.name, State: HalfOpen, retryAfter: time.Duration(earliest - now)}
			break
		}
		p := &e.probes[free]
		p.seq++
		p.busy, p.deadline = true, now+int64(b.s.probeTimeout)
		tok = token(e.gen, p.seq, free)
	}
	b.mu.Unlock()
	if err != nil {
		return 0, b.reject(err, &evs)
	}
	b.emit(&evs)
	return tok, nil
}

// reject emits evs and the refusal, and returns err.
func (b *Breaker) reject(err *OpenError, evs *events) error {
	if b.s.obs != nil {
		evs.add(bulwark.Event{Kind: bulwark.EventRejected, Err: err, Reason: err.State.String()})
		b.emit(evs)
	}
	return err
}

// advanceLocked applies the transitions that time alone causes: open to
// half-open when the open duration has passed, half-open to open when a
// probe is overdue. It returns the current epoch.
func (b *Breaker) advanceLocked(now int64, evs *events) *epoch {
	e := b.cur.Load()
	switch e.state {
	case Open:
		if now >= e.openUntil {
			n := &epoch{gen: e.gen + 1, state: HalfOpen, probes: make([]probe, b.s.probes)}
			b.setLocked(n, e, "open_elapsed", evs)
			return n
		}
	case HalfOpen:
		for i := range e.probes {
			if p := &e.probes[i]; p.busy && now >= p.deadline {
				return b.openLocked(e, now, "probe_timeout", evs)
			}
		}
	}
	return e
}

// openLocked trips the breaker from epoch e.
func (b *Breaker) openLocked(e *epoch, now int64, reason string, evs *events) *epoch {
	d := float64(b.s.openDur) * math.Pow(b.s.backoff, float64(b.trips))
	if d > float64(b.s.maxOpenDur) || math.IsInf(d, 0) {
		d = float64(b.s.maxOpenDur)
	}
	if b.s.jitter > 0 {
		d -= d * b.s.jitter * rand.Float64()
	}
	b.trips++
	n := &epoch{gen: e.gen + 1, state: Open, openUntil: now + int64(d)}
	b.setLocked(n, e, reason, evs)
	return n
}

func (b *Breaker) setLocked(n, old *epoch, reason string, evs *events) {
	b.cur.Store(n)
	if old.time != nil {
		old.time.stop()
	}
	if b.s.obs != nil {
		evs.add(bulwark.Event{Kind: bulwark.EventStateChange, From: old.state.String(), To: n.state.String(), Reason: reason})
	}
}

// Release reports the outcome and latency of a call admitted by Acquire. It
// must be called exactly once per successful Acquire. Outcomes of calls
// admitted in an earlier generation (before the breaker last changed state)
// are ignored, as are neutral outcomes; a second Release of a probe is
// ignored and reported to the Observer as EventMisuse. A second Release of a
// call admitted while closed cannot be told from another call's (a token
// carries no per-call state, so that admission allocates nothing) and counts
// again: release each token once, or use Allow, whose Permit ignores a second
// Done. latency decides whether the call was slow (Config.SlowCallDuration).
func (b *Breaker) Release(token uint64, o bulwark.Outcome, latency time.Duration) {
	b.release(token, o, latency, -1, nil)
}

// release records an outcome; now is the elapsed time at the call's end, or
// -1 if not read yet; err goes into the EventCall.
func (b *Breaker) release(tok uint64, o bulwark.Outcome, latency time.Duration, now int64, err error) {
	e := b.cur.Load()
	if b.s.obs != nil {
		b.s.obs.Observe(bulwark.Event{Kind: bulwark.EventCall, Component: bulwark.ComponentBreaker, Name: b.s.name, Outcome: o, Latency: latency, Err: err})
	}
	if !sameGen(tok, e.gen) || o > bulwark.Neutral {
		return
	}
	if tok&slotMask != 0 {
		b.releaseProbe(tok, o, latency)
		return
	}
	if e.state != Closed || o == bulwark.Neutral {
		return
	}
	failed := o == bulwark.Failure
	slow := b.s.slowDur > 0 && latency >= b.s.slowDur
	if b.s.consecutive > 0 {
		if failed {
			if e.consec.Add(1) >= b.s.consecutive {
				b.trip(e, "consecutive_failures", now)
				return
			}
		} else if e.consec.Load() != 0 {
			e.consec.Store(0)
		}
	}
	check := failed || slow
	if e.count != nil {
		e.count.record(failed, slow)
	}
	if e.time != nil && e.time.record(failed, slow) {
		check = true
	}
	if check || e.pending.Load() {
		if reason := b.rateFired(e); reason != "" {
			b.trip(e, reason, now)
		}
	}
}

// rateFired returns the rate rule that fires in e's windows, or "".
func (b *Breaker) rateFired(e *epoch) string {
	pending := false
	fire := func(calls, fails, slows int64) string {
		if calls < b.s.minCalls {
			if fails > 0 || slows > 0 {
				pending = true
			}
			return ""
		}
		if b.s.failureRate > 0 && float64(fails) >= b.s.failureRate*float64(calls) {
			return "failure_rate"
		}
		if b.s.slowRate > 0 && float64(slows) >= b.s.slowRate*float64(calls) {
			return "slow_call_rate"
		}
		return ""
	}
	reason := ""
	if e.count != nil {
		reason = fire(e.count.totals())
	}
	if reason == "" && e.time != nil {
		reason = fire(e.time.totals())
	}
	if pending != e.pending.Load() {
		e.pending.Store(pending)
	}
	return reason
}

// trip opens the breaker if e is still current.
func (b *Breaker) trip(e *epoch, reason string, now int64) {
	if now < 0 {
		now = b.now()
	}
	var evs events
	b.mu.Lock()
	if b.cur.Load() == e {
		b.openLocked(e, now, reason, &evs)
	}
	b.mu.Unlock()
	b.emit(&evs)
}

func (b *Breaker) releaseProbe(tok uint64, o bulwark.Outcome, latency time.Duration) {
	var evs events
	now := b.now()
	b.mu.Lock()
	e := b.advanceLocked(now, &evs)
	slot := int(tok&slotMask) - 1
	if e.state != HalfOpen || !sameGen(tok, e.gen) || slot >= len(e.probes) {
		b.mu.Unlock()
		b.emit(&evs)
		return
	}
	p := &e.probes[slot]
	if !p.busy || p.seq&seqMask != uint32(tok>>slotBits)&seqMask {
		b.mu.Unlock()
		if b.s.obs != nil {
			evs.add(bulwark.Event{Kind: bulwark.EventMisuse, Reason: "release of a probe already released"})
		}
		b.emit(&evs)
		return
	}
	p.busy = false
	switch {
	case o == bulwark.Failure || (b.s.slowDur > 0 && latency >= b.s.slowDur && o == bulwark.Success):
		b.openLocked(e, now, "probe_failed", &evs)
	case o == bulwark.Success:
		e.successes++
		if e.successes >= b.s.halfOpenSuccesses {
			b.trips = 0
			b.setLocked(b.closedEpoch(e.gen+1, Closed, now), e, "probes_succeeded", &evs)
		}
	}
	b.mu.Unlock()
	b.emit(&evs)
}

// ForceOpen opens the breaker until ForceClosed or Reset: every call is
// refused with an *OpenError whose State is ForcedOpen.
func (b *Breaker) ForceOpen() { b.force(ForcedOpen, "forced") }

// ForceClosed closes the breaker until ForceOpen or Reset: every call passes
// and no outcome is recorded, so no rule can trip it.
func (b *Breaker) ForceClosed() { b.force(ForcedClosed, "forced") }

// Reset closes the breaker with empty windows and forgets its past trips (the
// next open duration is OpenDuration again). It ends a forced state.
func (b *Breaker) Reset() { b.force(Closed, "reset") }

func (b *Breaker) force(st State, reason string) {
	var evs events
	now := b.now()
	b.mu.Lock()
	e := b.cur.Load()
	b.trips = 0
	b.setLocked(b.closedEpoch(e.gen+1, st, now), e, reason, &evs)
	b.mu.Unlock()
	b.emit(&evs)
}

// classify applies Config.Classify or the default classification.
func (b *Breaker) classify(ctx context.Context, err error) bulwark.Outcome {
	if b.s.classify != nil {
		return b.s.classify(ctx, err)
	}
	if err == nil {
		return bulwark.Success
	}
	o := bulwark.Classify(ctx, err)
	if o == bulwark.Failure && !b.s.tripOnPermanent && bulwark.IsPermanent(err) {
		return bulwark.Neutral
	}
	return o
}

// timed reports whether calls need a start time: for the slow-call rule or
// the latency in events.
func (b *Breaker) timed() bool { return b.s.slowDur > 0 || b.s.obs != nil }

// Do runs op if the breaker admits it and records its outcome, classified by
// Config.Classify. It returns op's error, or an *OpenError (wrapping ErrOpen)
// without running op. If op panics, the call is recorded as a failure and
// the panic goes on with its original value. Do runs op on the goroutine that
// called it. Do satisfies bulwark.Policy.
func (b *Breaker) Do(ctx context.Context, op func(context.Context) error) error {
	var tok uint64
	if e := b.cur.Load(); e.pass { // Acquire, inlined
		tok = e.tok
	} else {
		var err error
		if tok, err = b.acquireSlow(ctx); err != nil {
			return err
		}
	}
	if b.clocked {
		return b.doTimed(ctx, tok, op)
	}
	finished := false
	defer func() {
		if !finished { // op panicked (or called runtime.Goexit); the panic goes on
			b.release(tok, bulwark.Failure, 0, -1, nil)
		}
	}()
	err := op(ctx)
	finished = true
	o := bulwark.Success
	if err != nil || b.s.classify != nil {
		o = b.classify(ctx, err)
	}
	b.release(tok, o, 0, -1, err)
	return err
}

func (b *Breaker) doTimed(ctx context.Context, tok uint64, op func(context.Context) error) error {
	var start int64
	if b.timed() {
		start = b.now()
	}
	finished := false
	defer func() {
		if !finished { // op panicked (or called runtime.Goexit)
			b.finish(tok, bulwark.Failure, start, nil)
		}
	}()
	err := op(ctx)
	finished = true
	b.finish(tok, b.classify(ctx, err), start, err)
	return err
}

// finish releases tok, reading the clock once for latency and time window.
func (b *Breaker) finish(tok uint64, o bulwark.Outcome, start int64, err error) {
	var lat time.Duration
	now := int64(-1)
	if b.timed() {
		now = b.now()
		lat = time.Duration(now - start)
	}
	b.release(tok, o, lat, now, err)
}

// Call runs op through b as Do does and returns op's value. classify decides
// the outcome from the value and the error, so that a result can count as a
// failure (a 503 response) or as neutral (a 404) though err is nil; if
// classify is nil, b's Config.Classify applies to the error. When b refuses
// the call, Call returns the zero T and the *OpenError.
func Call[T any](ctx context.Context, b *Breaker, op func(context.Context) (T, error), classify func(T, error) bulwark.Outcome) (T, error) {
	var tok uint64
	if e := b.cur.Load(); e.pass { // Acquire, inlined, with the call's context for events
		tok = e.tok
	} else {
		var err error
		if tok, err = b.acquireSlow(ctx); err != nil {
			var zero T
			return zero, err
		}
	}
	var start int64
	if b.timed() {
		start = b.now()
	}
	finished := false
	defer func() {
		if !finished {
			b.finish(tok, bulwark.Failure, start, nil)
		}
	}()
	v, err := op(ctx)
	finished = true
	var o bulwark.Outcome
	if classify != nil {
		o = classify(v, err)
	} else {
		o = b.classify(ctx, err)
	}
	b.finish(tok, o, start, err)
	return v, err
}

// Permit is a call admitted by Allow, for callers that cannot wrap the call
// in a function (a transport, a stream). Its zero value is not usable. A
// Permit is not safe for concurrent use: call Done or Record once, from one
// goroutine, on the Permit itself rather than on a copy (a copy does not know
// that the original is done), as with balancer.Pick.
type Permit struct {
	b     *Breaker
	tok   uint64
	start int64
	done  bool
}

// Allow admits one call, as Acquire does, and returns its Permit, on which
// Done or Record must be called exactly once. On refusal the error is an
// *OpenError wrapping ErrOpen and there is nothing to call Done on. Allow
// does not allocate unless it refuses.
func (b *Breaker) Allow() (Permit, error) {
	tok, err := b.Acquire()
	if err != nil {
		return Permit{}, err
	}
	p := Permit{b: b, tok: tok}
	if b.timed() {
		p.start = b.now()
	}
	return p, nil
}

// Done records the end of the call: err (the call's error, nil for success)
// is classified by Config.Classify with ctx, the call's context, and the
// latency is measured from Allow. Call it once: a second Done or Record on the
// same Permit is ignored and reported to the Observer as EventMisuse.
func (p *Permit) Done(ctx context.Context, err error) {
	if p.misused(ctx) {
		return
	}
	p.b.finish(p.tok, p.b.classify(ctx, err), p.start, err)
}

// Record records the end of the call with an outcome the caller classified,
// in place of Done. A second Done or Record is ignored, as for Done.
func (p *Permit) Record(o bulwark.Outcome) {
	if p.misused(context.Background()) {
		return
	}
	p.b.finish(p.tok, o, p.start, nil)
}

// misused marks p done, and reports (to the Observer too) whether it was
// done already.
func (p *Permit) misused(ctx context.Context) bool {
	if !p.done {
		p.done = true
		return false
	}
	if p.b != nil && p.b.s.obs != nil {
		evs := events{ctx: ctx}
		evs.add(bulwark.Event{Kind: bulwark.EventMisuse, Reason: "permit done twice"})
		p.b.emit(&evs)
	}
	return true
}

// events collects the events of a transition, to emit once the lock is
// released; it holds two without allocating.
type events struct {
	ctx  context.Context // the call's, when known; nil otherwise
	n    int
	buf  [2]bulwark.Event
	more []bulwark.Event
}

func (v *events) add(e bulwark.Event) {
	if v.n < len(v.buf) {
		v.buf[v.n] = e
	} else {
		v.more = append(v.more, e)
	}
	v.n++
}

func (b *Breaker) emit(v *events) {
	if b.s.obs == nil || v.n == 0 {
		return
	}
	for i := 0; i < v.n; i++ {
		var e *bulwark.Event
		if i < len(v.buf) {
			e = &v.buf[i]
		} else {
			e = &v.more[i-len(v.buf)]
		}
		e.Component, e.Name = bulwark.ComponentBreaker, b.s.name
		if v.ctx != nil {
			bulwark.ObserveContext(v.ctx, b.s.obs, *e)
		} else {
			b.s.obs.Observe(*e)
		}
	}
}
