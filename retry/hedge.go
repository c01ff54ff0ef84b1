package retry

import (
	"context"
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
)

var _ bulwark.Policy = (*Hedge)(nil)

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
	// from; when it refuses, no further attempt is started.
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
// A Hedge is safe for concurrent use by multiple goroutines. Use NewHedge; the
// zero Hedge is not usable.
type Hedge struct {
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
	start   time.Time
}

// Do runs op, hedged, and returns nil once one attempt succeeds, after
// canceling the contexts of the others and waiting for them to return: no
// attempt outlives Do, so op must honour its context, and must be safe to run
// concurrently with itself. An attempt that fails with an error asking for a wait (a
// RetryAfter() time.Duration method returning more than zero, such as an
// open breaker's or a 503's) stops further attempts of the call: waiting is
// the job of a Policy composed outside the Hedge. When every attempt failed,
// or ctx ended first, Do returns a *GiveUpError that unwraps to the last
// error and to the reason (ErrAttempts, ErrBudget, ErrRetryAfter,
// ErrNotRetryable for a permanent error, or ctx.Err()). Attempt(ctx) tells op
// which attempt it is.
func (h *Hedge) Do(ctx context.Context, op func(context.Context) error) error {
	if h.budget != nil {
		h.budget.deposit()
	}
	begin := h.clk.Now()
	hctx, cancel := context.WithCancel(ctx)
	results := make(chan hedgeResult, h.max) // never blocks a finishing attempt
	launch := func(n int) {
		actx := hctx
		if n > 1 {
			actx = context.WithValue(hctx, attemptKey{}, n)
		}
		start := h.clk.Now()
		go func() {
			results <- hedgeResult{err: op(actx), attempt: n, start: start}
		}()
	}
	launch(1)
	launched, running := 1, 1
	defer func() {
		// Every attempt is owned by this call: the others are canceled
		// and waited for, so none outlives Do (and none can race with the
		// caller over what the winner wrote).
		cancel()
		for ; running > 0; running-- {
			<-results
		}
	}()
	var (
		timer  bulwark.Timer
		tick   <-chan time.Time
		last   error
		reason error
	)
	delay := h.currentDelay()
	if h.max > 1 {
		timer = h.clk.NewTimer(delay)
		defer timer.Stop()
		tick = timer.C()
	}
	// spend asks the budget for one more attempt.
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
		launch(launched)
		return true
	}
	for {
		select {
		case r := <-results:
			running--
			if r.err == nil {
				if h.budget != nil {
					h.budget.succeeded()
				}
				// The call's latency, not the winner's: a slow first
				// attempt that lost is never seen otherwise, and the
				// tracked percentile, and the delay, would drift low.
				h.record(h.clk.Since(begin))
				return nil
			}
			last = r.err
			if h.budget != nil && bulwark.Classify(ctx, r.err) == bulwark.Failure {
				h.budget.failed()
			}
			if cerr := ctx.Err(); cerr != nil {
				return h.giveUp(ctx, cerr, launched, h.clk.Since(begin), last)
			}
			if bulwark.IsPermanent(r.err) {
				return h.giveUp(ctx, ErrNotRetryable, launched, h.clk.Since(begin), last)
			}
			if wait, ok := retryAfter(r.err); ok && wait > 0 {
				// Pushback: start nothing more for this call.
				reason, tick = ErrRetryAfter, nil
			}
			delay = 0
			if reason == nil && spend() {
				continue
			}
			if running == 0 {
				if reason == nil {
					reason = ErrAttempts
				}
				return h.giveUp(ctx, reason, launched, h.clk.Since(begin), last)
			}
		case <-tick:
			if reason == nil && spend() && launched < h.max {
				delay = h.currentDelay()
				timer.Reset(delay)
			} else {
				tick = nil
			}
		case <-ctx.Done():
			return h.giveUp(ctx, ctx.Err(), launched, h.clk.Since(begin), last)
		}
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
