package retry

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/compose"
)

var (
	_ bulwark.Policy   = (*Hedge)(nil)
	_ compose.Budgeted = (*Hedge)(nil)
)

// HedgeConfig configures a Hedge. The zero HedgeConfig is valid: a second
// attempt after 100 ms when the first has not finished.
type HedgeConfig struct {
	// Name identifies the hedge in events. Optional.
	Name string
	// MaxAttempts bounds the attempts of one call, the first included, and
	// so the attempts in flight at once. If zero, 2. It must not be
	// negative; 1 means no hedging.
	MaxAttempts int
	// Delay is the wait before each further attempt while the earlier ones
	// are still running. With Percentile set, it is the wait used until
	// enough latencies are known. If zero, 100 ms. It must not be negative.
	Delay time.Duration
	// Percentile, if not zero, makes the wait track that percentile of the
	// latencies of successful attempts, as "The Tail at Scale" suggests
	// (0.95 hedges the slowest 5 %), never below MinDelay. It must be within
	// [0, 1).
	Percentile float64
	// MinDelay is the least wait when Percentile is set. If zero, 1 ms. It
	// must not be negative.
	MinDelay time.Duration
	// Budget, if not nil, is the retry budget that hedged attempts spend
	// from; when it refuses, no further attempt is started. Each call
	// deposits into it, except a call made by an inner layer of a
	// bulwark.Compose whose outer layer already counted the request into the
	// same Budget: share one Budget between a Policy and a Hedge composed
	// together.
	Budget *Budget
	// Clock is the time source. If nil, the wall clock.
	Clock bulwark.Clock
	// Observer receives EventHedge, EventBudgetExhausted and EventGiveUp.
	// If nil, no events and no cost.
	Observer bulwark.Observer
}

// minSamples is the number of latencies a Hedge needs before it trusts the
// percentile; every recomputeEvery samples the delay is recomputed, and the
// histogram halves its counts once it holds decayAt of them, so that the
// percentile follows a change in latency.
const (
	minSamples     = 64
	recomputeEvery = 32
	decayAt        = 4096
)

// Hedge runs an operation and, when it has not succeeded after a delay, runs
// it again alongside, up to MaxAttempts in flight; the first success is
// returned and the other attempts are canceled, as in "The Tail at Scale". An
// attempt that fails starts the next one at once. Extra attempts spend from
// the Budget, so hedging cannot multiply the load of a struggling dependency.
//
// The first attempt runs on the goroutine that called Do, under a context
// that is made cancelable only if something asks for its Done channel or a
// hedge starts: a call whose first attempt answers before the delay starts no
// goroutine, channel or context, and costs a timer on the Clock.
//
// A Hedge is safe for concurrent use by multiple goroutines. Use NewHedge; the
// zero Hedge is not usable.
type Hedge struct {
	budgetHook // bulwark.Compose's one deposit per logical request

	name       string
	max        int
	delay      time.Duration
	percentile float64
	minDelay   time.Duration
	budget     *Budget
	clk        bulwark.Clock
	obs        bulwark.Observer
	tracked    atomic.Int64 // the current percentile delay in ns; 0 until known
	lat        latencies
}

// NewHedge returns a Hedge for cfg, or an error naming the invalid field.
func NewHedge(cfg HedgeConfig) (*Hedge, error) {
	switch {
	case cfg.MaxAttempts < 0:
		return nil, fmt.Errorf("retry: hedge MaxAttempts %d, want 0 (default 2) or at least 1", cfg.MaxAttempts)
	case cfg.Delay < 0:
		return nil, fmt.Errorf("retry: negative hedge Delay %v", cfg.Delay)
	case cfg.MinDelay < 0:
		return nil, fmt.Errorf("retry: negative hedge MinDelay %v", cfg.MinDelay)
	case !(cfg.Percentile >= 0 && cfg.Percentile < 1):
		return nil, fmt.Errorf("retry: hedge Percentile %v, want within [0, 1)", cfg.Percentile)
	}
	h := &Hedge{
		name:       cfg.Name,
		max:        cfg.MaxAttempts,
		delay:      cfg.Delay,
		percentile: cfg.Percentile,
		minDelay:   cfg.MinDelay,
		budget:     cfg.Budget,
		clk:        bulwark.ClockOrWall(cfg.Clock),
		obs:        cfg.Observer,
	}
	if h.max == 0 {
		h.max = 2
	}
	if h.delay == 0 {
		h.delay = 100 * time.Millisecond
	}
	if h.minDelay == 0 {
		h.minDelay = time.Millisecond
	}
	h.budgetHook = compose.NewBudgetHook(unsafe.Pointer(h.budget), h.doSpending)
	return h, nil
}

// currentDelay returns the wait before the next hedged attempt: Delay, or the
// tracked percentile of latencies once enough are known.
func (h *Hedge) currentDelay() time.Duration {
	if d := h.tracked.Load(); d > 0 {
		return time.Duration(d)
	}
	return h.delay
}

type hedgeResult struct {
	err     error
	attempt int
}

// Do runs op, hedged, and returns nil once one attempt succeeds, after
// canceling the contexts of the others and waiting for them to return: no
// attempt outlives Do, so op must honour its context, and must be safe to run
// concurrently with itself. The first attempt runs on the goroutine that
// called Do, the others on goroutines of their own. An attempt that fails
// with an error asking for a wait (a RetryAfter() time.Duration method
// returning more than zero, such as an open breaker's or a 503's) stops
// further attempts of the call: waiting is the job of a Policy composed
// outside the Hedge. When every attempt failed, or ctx ended first, Do returns
// a *GiveUpError that unwraps to the last error and to the reason
// (ErrAttempts, ErrBudget, ErrRetryAfter, ErrNotRetryable for a permanent
// error, or ctx.Err()). Attempt(ctx) tells op which attempt it is.
func (h *Hedge) Do(ctx context.Context, op func(context.Context) error) error {
	return h.run(ctx, op, true)
}

func (h *Hedge) doSpending(ctx context.Context, op func(context.Context) error) error {
	return h.run(ctx, op, false)
}

// run is Do; deposit says whether to count the call into the Budget (not
// when an outer layer of a bulwark.Compose does).
func (h *Hedge) run(ctx context.Context, op func(context.Context) error, deposit bool) error {
	if h.budget != nil && deposit {
		h.budget.deposit()
	}
	begin := h.clk.Now()
	if h.max == 1 {
		err := op(ctx)
		if err == nil {
			h.won(begin)
			return nil
		}
		c := hedgeCall{h: h, parent: ctx, begin: begin, ctx: lazyCancel{Context: ctx}}
		return c.loop(1, 0, err, false)
	}
	c := &hedgeCall{h: h, op: op, parent: ctx, begin: begin, delay: h.currentDelay()}
	c.ctx.Context = ctx
	c.timer = h.clk.AfterFunc(c.delay, c.fire)
	finished := false
	defer func() {
		if !finished { // op panicked: end the call, and let the panic go on
			c.firstDone(errPanicked)
		}
	}()
	err := op(&c.ctx)
	finished = true
	if c.firstDone(err) {
		// Hedges ran: the coordinator has finished the call.
		return <-c.verdict
	}
	if err == nil {
		h.won(begin)
		return nil
	}
	return c.loop(1, 0, err, false)
}

// errPanicked is the result of a first attempt that panicked: it ends the
// call, and the panic goes on once every hedge has returned.
var errPanicked = bulwark.Permanent(errors.New("retry: hedged attempt panicked"))

// firstDone hands over the first attempt's result, and reports whether a
// coordinator had taken the call over (the hedge timer fired): then it has
// the result and will send its verdict. Otherwise the timer is stopped, and
// the call is the caller's to finish.
func (c *hedgeCall) firstDone(err error) bool {
	c.mu.Lock()
	fired := c.fired
	c.first = true
	c.mu.Unlock()
	if fired {
		c.results <- hedgeResult{err: err, attempt: 1}
		if err == errPanicked {
			<-c.verdict // every hedge has returned
		}
		return true
	}
	c.timer.Stop()
	c.ctx.release()
	return false
}

// won counts a success.
func (h *Hedge) won(begin time.Time) {
	if h.budget != nil {
		h.budget.succeeded()
	}
	if h.percentile != 0 {
		// The call's latency, not the winner's: a slow first attempt
		// that lost is never seen otherwise, and the tracked percentile,
		// and the delay, would drift low.
		h.record(h.clk.Since(begin))
	}
}

// hedgeCall is one call of Do once its first attempt is under way.
type hedgeCall struct {
	h      *Hedge
	op     func(context.Context) error
	parent context.Context // the caller's
	ctx    lazyCancel      // the attempts' context: canceled when the call ends
	begin  time.Time
	delay  time.Duration // the hedge delay in force
	timer  bulwark.Timer // the first hedge's

	mu    sync.Mutex // guards first and fired
	first bool       // the first attempt has returned
	fired bool       // the first hedge's timer fired while it ran

	results chan hedgeResult // made before any attempt runs on a goroutine
	verdict chan error       // the coordinator's result, when the timer fired
}

// fire runs when the hedge delay passes. If the first attempt is still
// running on the caller's goroutine, a coordinator takes the call over: it
// starts the hedges, and the caller hands it the first attempt's result when
// it has one.
func (c *hedgeCall) fire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first {
		return
	}
	c.fired = true
	c.results = make(chan hedgeResult, c.h.max)
	c.verdict = make(chan error, 1)
	go func() { c.verdict <- c.loop(1, 1, nil, true) }()
}

// loop runs the call from the state where launched attempts were started and
// running of them have not returned, last being the latest error. tick says
// that the hedge delay has just passed; otherwise the latest attempt has just
// failed with last. It returns once every attempt has returned.
func (c *hedgeCall) loop(launched, running int, last error, tick bool) error {
	h, ctx := c.h, c.parent
	if c.results == nil {
		c.results = make(chan hedgeResult, h.max) // never blocks a finishing attempt
	}
	defer func() {
		// Every attempt is owned by this call: the others are canceled
		// and waited for, so none outlives Do (and none can race with the
		// caller over what the winner wrote).
		c.ctx.cancel()
		for ; running > 0; running-- {
			<-c.results
		}
	}()
	var (
		timer  bulwark.Timer
		ticks  <-chan time.Time
		reason error
		delay  = c.delay
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	// arm starts the timer of the next hedge, if one may come.
	arm := func() {
		if launched >= h.max || reason != nil {
			ticks = nil
			return
		}
		delay = h.currentDelay()
		if timer == nil {
			timer = h.clk.NewTimer(delay)
			ticks = timer.C()
		} else {
			timer.Reset(delay)
		}
	}
	// spend asks the budget for one more attempt, and starts it.
	spend := func() bool {
		if launched >= h.max {
			return false
		}
		if h.budget != nil && !h.budget.withdraw() {
			if h.obs != nil {
				bulwark.ObserveContext(ctx, h.obs, bulwark.Event{Kind: bulwark.EventBudgetExhausted, Component: bulwark.ComponentHedge,
					Name: h.name, Attempt: launched + 1})
			}
			reason = ErrBudget
			return false
		}
		launched++
		running++
		if h.obs != nil {
			bulwark.ObserveContext(ctx, h.obs, bulwark.Event{Kind: bulwark.EventHedge, Component: bulwark.ComponentHedge,
				Name: h.name, Attempt: launched, Delay: delay})
		}
		actx := context.WithValue(&c.ctx, attemptKey{}, launched)
		go func(n int) {
			c.results <- hedgeResult{err: c.op(actx), attempt: n}
		}(launched)
		return true
	}
	// failed handles a failed attempt; it returns the call's error when the
	// call is over, and whether it is.
	failed := func(err error) (error, bool) {
		last = err
		if h.budget != nil && bulwark.Classify(ctx, err) == bulwark.Failure {
			h.budget.failed()
		}
		if cerr := ctx.Err(); cerr != nil {
			return h.giveUp(ctx, cerr, launched, h.clk.Since(c.begin), last), true
		}
		if bulwark.IsPermanent(err) {
			return h.giveUp(ctx, ErrNotRetryable, launched, h.clk.Since(c.begin), last), true
		}
		if wait, _, _ := pushback(err); wait > 0 {
			// Pushback: start nothing more for this call.
			reason, ticks = ErrRetryAfter, nil
		}
		delay = 0
		if reason == nil && spend() {
			arm()
			return nil, false
		}
		if running == 0 {
			if reason == nil {
				reason = ErrAttempts
			}
			return h.giveUp(ctx, reason, launched, h.clk.Since(c.begin), last), true
		}
		return nil, false
	}
	if tick {
		if spend() {
			arm()
		}
	} else if err, done := failed(last); done {
		return err
	}
	for {
		select {
		case r := <-c.results:
			running--
			if r.err == nil {
				h.won(c.begin)
				return nil
			}
			if err, done := failed(r.err); done {
				return err
			}
		case <-ticks:
			if reason == nil && spend() {
				arm()
			} else {
				ticks = nil
			}
		case <-ctx.Done():
			return h.giveUp(ctx, ctx.Err(), launched, h.clk.Since(c.begin), last)
		}
	}
}

// lazyCancel is a context that can be canceled, but that makes its cancelable
// context only when it is canceled or something asks for its Done channel (or
// derives a cancelable context from it): until then it costs nothing. Its
// zero value, with Context set, is ready to use.
type lazyCancel struct {
	context.Context // the parent
	scope           atomic.Pointer[cancelScope]
}

type cancelScope struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func (c *lazyCancel) get() *cancelScope {
	if s := c.scope.Load(); s != nil {
		return s
	}
	ctx, cancel := context.WithCancel(c.Context)
	s := &cancelScope{ctx: ctx, cancel: cancel}
	if c.scope.CompareAndSwap(nil, s) {
		return s
	}
	cancel()
	return c.scope.Load()
}

func (c *lazyCancel) Done() <-chan struct{} { return c.get().ctx.Done() }

func (c *lazyCancel) Err() error {
	if s := c.scope.Load(); s != nil {
		return s.ctx.Err()
	}
	return c.Context.Err()
}

// Value defers to the cancelable context once it exists, so that the context
// package finds it and attaches the contexts derived from this one to it.
func (c *lazyCancel) Value(key any) any {
	if s := c.scope.Load(); s != nil {
		return s.ctx.Value(key)
	}
	return c.Context.Value(key)
}

// cancel cancels the context.
func (c *lazyCancel) cancel() { c.get().cancel() }

// release frees the cancelable context, if one was made.
func (c *lazyCancel) release() {
	if s := c.scope.Load(); s != nil {
		s.cancel()
	}
}

func (h *Hedge) giveUp(ctx context.Context, reason error, attempts int, elapsed time.Duration, err error) error {
	if h.obs != nil {
		bulwark.ObserveContext(ctx, h.obs, bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentHedge,
			Name: h.name, Attempt: attempts, Err: err, Reason: reasonCode(reason)})
	}
	return &GiveUpError{Reason: reason, Attempts: attempts, Elapsed: elapsed, Err: err}
}

// record adds the latency of a successful attempt to the percentile tracker.
func (h *Hedge) record(d time.Duration) {
	if h.percentile == 0 {
		return
	}
	n := h.lat.add(d)
	if n < minSamples || n%recomputeEvery != 0 {
		return
	}
	p := h.lat.quantile(h.percentile)
	h.tracked.Store(int64(max(p, h.minDelay)))
	if n >= decayAt {
		h.lat.halve()
	}
}

// latencies is a lock-free log-linear histogram: 8 buckets per power of two,
// so a quantile is within 12.5 % of the true value.
type latencies struct {
	n       atomic.Int64
	buckets [64 * 8]atomic.Int64
}

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 1))
	e := bits.Len64(v) - 1
	if e < 3 {
		return int(v) // 1..7: exact
	}
	return e<<3 | int(v>>(e-3))&7
}

// bucketTop returns the largest duration in bucket i.
func bucketTop(i int) time.Duration {
	e, sub := i>>3, i&7
	if e < 3 {
		return time.Duration(i)
	}
	return time.Duration(uint64(8|sub+1)<<(e-3) - 1)
}

func (l *latencies) add(d time.Duration) int64 {
	l.buckets[bucketOf(d)].Add(1)
	return l.n.Add(1)
}

func (l *latencies) quantile(q float64) time.Duration {
	var total int64
	for i := range l.buckets {
		total += l.buckets[i].Load()
	}
	if total == 0 {
		return 0
	}
	rank := int64(q*float64(total)) + 1
	var seen int64
	for i := range l.buckets {
		seen += l.buckets[i].Load()
		if seen >= rank {
			return bucketTop(i)
		}
	}
	return bucketTop(len(l.buckets) - 1)
}

func (l *latencies) halve() {
	for i := range l.buckets {
		if v := l.buckets[i].Load(); v > 0 {
			l.buckets[i].Add(-(v / 2))
		}
	}
	l.n.Add(-(l.n.Load() / 2))
}
