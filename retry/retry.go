package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/compose"
)

var (
	_ bulwark.Policy   = (*Policy)(nil)
	_ compose.Sync     = (*Policy)(nil)
	_ compose.Budgeted = (*Policy)(nil)
)

// Config configures a Policy. The zero Config is valid: 3 attempts, full
// jitter from 100 ms doubling up to 10 s, every error retried except
// permanent ones and the caller's own cancellation.
type Config struct {
	// Name identifies the policy in events. Optional.
	Name string

	// MaxAttempts bounds the attempts, the first included. If zero, 3. It
	// must not be negative; 1 means no retry.
	MaxAttempts int
	// MaxElapsed bounds the time from the start of Do to the start of the
	// last attempt: a retry whose delay would end later is not made. If
	// zero, no bound. When set, Do reads the clock once before the first
	// attempt.
	MaxElapsed time.Duration
	// AttemptTimeout bounds each attempt: op's context is done after it,
	// and the error of an attempt that overran is an ErrAttemptTimeout
	// that also matches context.DeadlineExceeded; such an attempt is
	// retried. If zero, attempts are bounded only by ctx. Setting it costs
	// a context and a timer per attempt.
	AttemptTimeout time.Duration

	// Backoff computes the delays. The zero Backoff is full jitter from
	// 100 ms, doubling, capped at 10 s.
	Backoff Backoff
	// Delay, if not nil, replaces Backoff: it returns the wait before retry
	// n (1 for the first retry), given the delay before (zero for the first
	// retry) and the error that caused the retry. A negative result counts as
	// zero. It is called from the goroutine that called Do, concurrently
	// for concurrent calls.
	Delay func(n int, prev time.Duration, err error) time.Duration
	// Seed seeds the random source of the jitter, for reproducible tests.
	// If zero, a random seed. The source is the policy's own, lock-free and
	// shared by its calls; with a fixed Seed, a sequential run of calls
	// gives the same delays every time.
	Seed uint64

	// Retryable, if not nil, decides whether an error is worth another
	// attempt. Whatever it says, errors marked with bulwark.Permanent and
	// errors returned once ctx is done are never retried. If nil, every
	// other error is retried. It is called from the goroutine that called
	// Do and must not block.
	Retryable func(err error) bool

	// MaxRetryAfter bounds the wait that an error may ask for: any error in
	// the chain (found with errors.As) that has a method RetryAfter()
	// time.Duration — a *bulwark.StatusError from a 429 or 503 with
	// Retry-After, a rate limit's refusal — makes the next delay at least
	// that long, so the call is never retried before the server allows it.
	// When the wait asked for is longer than MaxRetryAfter, Do gives up at
	// once with ErrRetryAfter rather than retry early. If zero, 10 seconds.
	// An open circuit breaker's refusal is the business of MaxOpenWait.
	MaxRetryAfter time.Duration
	// MaxOpenWait is how long a call may wait for an open circuit breaker.
	// An attempt refused by a breaker (the error with a RetryAfter method
	// in its chain also has a method CircuitOpen() bool that returns true,
	// as *breaker.OpenError does) ends the call at once by default: Do
	// gives up with ErrNotRetryable and the refusal, as a breaker means it
	// to.
	// With MaxOpenWait set, Do waits instead until the breaker lets a probe
	// through (the refusal's RetryAfter), when that is at most MaxOpenWait
	// away, and gives up with ErrRetryAfter otherwise. The wait is a retry
	// like any other: it never ends at or after ctx's deadline (ErrDeadline),
	// and it spends from the Budget. It must not be negative.
	MaxOpenWait time.Duration
	// RetryAfterJitter adds up to this fraction of a RetryAfter wait to it,
	// at random, so that clients told the same wait do not return in a
	// herd. If zero, none. It must be within [0, 1].
	RetryAfterJitter float64

	// Budget, if not nil, is the shared retry budget this policy spends
	// from: each call deposits, each retry withdraws, and a retry that the
	// budget refuses ends the call with ErrBudget. In a bulwark.Compose, a
	// layer whose Budget an outer layer deposits into does not deposit: a
	// composed call counts once, however many layers spend from it.
	Budget *Budget

	// Clock is the time source. If nil, the wall clock.
	Clock bulwark.Clock
	// Observer receives EventRetry, EventGiveUp and EventBudgetExhausted.
	// If nil, no events and no cost.
	Observer bulwark.Observer
}

// defaultMaxAttempts and defaultMaxRetryAfter are the defaults of the Config
// fields of the same names.
const (
	defaultMaxAttempts   = 3
	defaultMaxRetryAfter = 10 * time.Second
)

// The reasons a Policy or a Hedge gives up, found with errors.Is in the error
// they return. A call that ends because ctx is done has ctx.Err() as its
// reason instead.
var (
	// ErrAttempts: MaxAttempts were made.
	ErrAttempts = errors.New("retry: attempts exhausted")
	// ErrElapsed: the next retry would start after MaxElapsed.
	ErrElapsed = errors.New("retry: max elapsed time reached")
	// ErrDeadline: the next retry would start at or after the context's
	// deadline, so Do returned early rather than sleep past it.
	ErrDeadline = errors.New("retry: context deadline before next attempt")
	// ErrBudget: the retry budget refused the retry or hedge.
	ErrBudget = errors.New("retry: budget exhausted")
	// ErrNotRetryable: the error was permanent, Retryable said no, or an
	// open circuit breaker refused the attempt (see Config.MaxOpenWait).
	ErrNotRetryable = errors.New("retry: error not retryable")
	// ErrRetryAfter: the error asked for a wait above MaxRetryAfter (above
	// MaxOpenWait, for an open circuit breaker).
	ErrRetryAfter = errors.New("retry: retry-after beyond cap")
)

// ErrAttemptTimeout is matched (errors.Is) by the error of an attempt that
// overran Config.AttemptTimeout; such an error also matches
// context.DeadlineExceeded.
var ErrAttemptTimeout = errors.New("retry: attempt timed out")

// GiveUpError is what Do returns when it stops without a success. Reason is
// one of the Err… sentinels of this package, or ctx.Err() when the caller's
// context ended the call; Err is the last error of op. Unwrap returns both, so
// errors.Is and errors.As reach the reason and the last error and everything
// it wraps.
type GiveUpError struct {
	Reason   error
	Attempts int           // attempts made
	Elapsed  time.Duration // for a Policy, the time from the first failure (from the start of Do when MaxElapsed is set); for a Hedge, from the start of Do
	Err      error         // the last error of op
}

// Error describes the give-up, then the last error.
func (e *GiveUpError) Error() string {
	s := "retry: gave up after " + strconv.Itoa(e.Attempts) + " attempt"
	if e.Attempts != 1 {
		s += "s"
	}
	if e.Elapsed > 0 {
		s += " in " + e.Elapsed.String()
	}
	if e.Reason != nil {
		s += " (" + reasonText(e.Reason) + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the last error of op, then the reason.
func (e *GiveUpError) Unwrap() []error { return []error{e.Err, e.Reason} }

func reasonText(r error) string {
	const prefix = "retry: "
	s := r.Error()
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}

// reasonCode is the low-cardinality Reason of an EventGiveUp.
func reasonCode(r error) string {
	switch r {
	case ErrAttempts:
		return "attempts"
	case ErrElapsed:
		return "elapsed"
	case ErrDeadline, context.DeadlineExceeded:
		return "deadline"
	case ErrBudget:
		return "budget"
	case ErrRetryAfter:
		return "retry_after"
	case context.Canceled:
		return "canceled"
	}
	return "not_retryable"
}

// Policy retries an operation with jittered backoff, within limits and a
// budget. A Policy is reusable and safe for concurrent use by multiple
// goroutines; the context comes with each call. Use New; the zero Policy is
// not usable.
type Policy struct {
	//lint:ignore U1000 used through its method, which makes the type a compose.Sync
	syncMarker // for bulwark.Call: Do runs op on the caller's goroutine only

	name             string
	maxAttempts      int
	maxElapsed       time.Duration
	attemptTimeout   time.Duration
	backoff          Backoff
	delay            func(int, time.Duration, error) time.Duration
	retryable        func(error) bool
	maxRetryAfter    time.Duration
	maxOpenWait      time.Duration
	retryAfterJitter float64
	budget           *Budget
	clk              bulwark.Clock
	wall             bool // clk is the wall clock: use context.WithTimeout
	obs              bulwark.Observer
	rng              atomic.Uint64 // SplitMix64 state, advanced by golden per draw

	budgetHook // bulwark.Compose's one deposit per logical request
}

// New returns a Policy for cfg, or an error that says which field is invalid:
// a negative MaxAttempts, MaxElapsed, AttemptTimeout, MaxRetryAfter or
// MaxOpenWait, a
// RetryAfterJitter outside [0, 1], or an invalid Backoff (negative durations,
// Cap below Base, Multiplier below 1, unknown Jitter).
func New(cfg Config) (*Policy, error) {
	switch {
	case cfg.MaxAttempts < 0:
		return nil, fmt.Errorf("retry: MaxAttempts %d, want 0 (default %d) or at least 1", cfg.MaxAttempts, defaultMaxAttempts)
	case cfg.MaxElapsed < 0:
		return nil, fmt.Errorf("retry: negative MaxElapsed %v", cfg.MaxElapsed)
	case cfg.AttemptTimeout < 0:
		return nil, fmt.Errorf("retry: negative AttemptTimeout %v", cfg.AttemptTimeout)
	case cfg.MaxRetryAfter < 0:
		return nil, fmt.Errorf("retry: negative MaxRetryAfter %v", cfg.MaxRetryAfter)
	case cfg.MaxOpenWait < 0:
		return nil, fmt.Errorf("retry: negative MaxOpenWait %v", cfg.MaxOpenWait)
	case !(cfg.RetryAfterJitter >= 0 && cfg.RetryAfterJitter <= 1):
		return nil, fmt.Errorf("retry: RetryAfterJitter %v, want within [0, 1]", cfg.RetryAfterJitter)
	}
	if err := cfg.Backoff.validate(); err != nil {
		return nil, err
	}
	p := &Policy{
		name:             cfg.Name,
		maxAttempts:      cfg.MaxAttempts,
		maxElapsed:       cfg.MaxElapsed,
		attemptTimeout:   cfg.AttemptTimeout,
		backoff:          cfg.Backoff,
		delay:            cfg.Delay,
		retryable:        cfg.Retryable,
		maxRetryAfter:    cfg.MaxRetryAfter,
		maxOpenWait:      cfg.MaxOpenWait,
		retryAfterJitter: cfg.RetryAfterJitter,
		budget:           cfg.Budget,
		clk:              bulwark.ClockOrWall(cfg.Clock),
		obs:              cfg.Observer,
	}
	if p.maxAttempts == 0 {
		p.maxAttempts = defaultMaxAttempts
	}
	if p.maxRetryAfter == 0 {
		p.maxRetryAfter = defaultMaxRetryAfter
	}
	p.wall = p.clk == bulwark.WallClock()
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	p.rng.Store(seed)
	p.budgetHook = compose.NewBudgetHook(unsafe.Pointer(p.budget), p.doSpending)
	return p, nil
}

// syncMarker and budgetHook tie a Policy and a Hedge into bulwark.Call and
// bulwark.Compose without exported methods.
type (
	//lint:ignore U1000 see the field
	syncMarker = compose.SyncMarker
	budgetHook = compose.BudgetHook
)

// rand returns the next number of the policy's random stream. It is
// lock-free and safe for concurrent use.
func (p *Policy) rand() uint64 { return splitmix64(p.rng.Add(golden)) }

// Do runs op until it succeeds or the policy gives up, and returns nil or a
// *GiveUpError that unwraps to op's last error and to the reason (ErrAttempts,
// ErrElapsed, ErrDeadline, ErrBudget, ErrNotRetryable, ErrRetryAfter, or
// ctx.Err()). Each attempt calls op afresh, so an op that picks an endpoint on
// each call moves to another one on retry; Attempt(ctx) tells op which
// attempt it is. Do runs op on the goroutine that called it, and waits
// between attempts on the policy's Clock, never past ctx's deadline.
//
// Each call deposits into the Budget, but a call made by an inner layer of a
// bulwark.Compose whose outer layer already counted the request into the same
// Budget does not.
func (p *Policy) Do(ctx context.Context, op func(context.Context) error) error {
	// run, spelled out: the first attempt is the hot path.
	var start time.Time
	if p.maxElapsed > 0 {
		start = p.clk.Now()
	}
	if p.budget != nil {
		p.budget.deposit()
	}
	var err error
	if p.attemptTimeout > 0 {
		err = p.timed(ctx, op)
	} else {
		err = op(ctx)
	}
	if err == nil {
		if p.budget != nil {
			p.budget.succeeded()
		}
		return nil
	}
	return p.retry(ctx, op, err, start, true)
}

func (p *Policy) doSpending(ctx context.Context, op func(context.Context) error) error {
	return p.run(ctx, op, false, true)
}

// do is Do for callers, such as Transport, that enforce the attempt timeout
// themselves.
func (p *Policy) do(ctx context.Context, op func(context.Context) error) error {
	return p.run(ctx, op, true, false)
}

// run is Do: deposit says whether to count the call into the Budget (not
// when an outer layer of a bulwark.Compose does), and timeouts whether to
// apply the attempt timeout.
func (p *Policy) run(ctx context.Context, op func(context.Context) error, deposit, timeouts bool) error {
	var start time.Time
	if p.maxElapsed > 0 {
		start = p.clk.Now()
	}
	if p.budget != nil && deposit {
		p.budget.deposit()
	}
	var err error
	if timeouts && p.attemptTimeout > 0 {
		err = p.timed(ctx, op)
	} else {
		err = op(ctx)
	}
	if err == nil {
		if p.budget != nil {
			p.budget.succeeded()
		}
		return nil
	}
	return p.retry(ctx, op, err, start, timeouts)
}

// retry is the slow path, entered after the first attempt failed with err.
func (p *Policy) retry(ctx context.Context, op func(context.Context) error, err error, start time.Time, timeouts bool) error {
	now := p.clk.Now()
	if start.IsZero() {
		start = now
	}
	var prev time.Duration
	for attempt := 1; ; attempt++ {
		if p.budget != nil && bulwark.Classify(ctx, err) == bulwark.Failure {
			p.budget.failed()
		}
		delay, cause, reason := p.next(ctx, attempt, prev, err, now, start)
		if reason != nil {
			return p.giveUp(ctx, reason, cause, attempt, now.Sub(start), err)
		}
		if p.obs != nil {
			bulwark.ObserveContext(ctx, p.obs, bulwark.Event{Kind: bulwark.EventRetry, Component: bulwark.ComponentRetry,
				Name: p.name, Attempt: attempt + 1, Delay: delay, Err: err, Reason: cause})
		}
		if serr := bulwark.Sleep(ctx, p.clk, delay); serr != nil {
			return p.giveUp(ctx, serr, cause, attempt, p.clk.Since(start), err)
		}
		prev = delay
		actx := context.WithValue(ctx, attemptKey{}, attempt+1)
		if timeouts && p.attemptTimeout > 0 {
			err = p.timed(actx, op)
		} else {
			err = op(actx)
		}
		if err == nil {
			if p.budget != nil {
				p.budget.succeeded()
			}
			return nil
		}
		now = p.clk.Now()
	}
}

// next decides whether to retry after attempt failed with err at now, and
// how long to wait first. It returns a non-nil reason to give up, and the
// cause of the retry or give-up for events: "error", "attempt_timeout",
// "retry_after" or "circuit_open".
func (p *Policy) next(ctx context.Context, attempt int, prev time.Duration, err error, now, start time.Time) (time.Duration, string, error) {
	hint, asked, open := pushback(err)
	cause := "error"
	switch {
	case errors.Is(err, ErrAttemptTimeout):
		cause = "attempt_timeout"
	case open:
		cause = "circuit_open"
	case asked:
		cause = "retry_after"
	}
	if cerr := ctx.Err(); cerr != nil {
		return 0, cause, cerr
	}
	if bulwark.IsPermanent(err) || (p.retryable != nil && !p.retryable(err)) || (open && p.maxOpenWait == 0) {
		return 0, cause, ErrNotRetryable
	}
	if attempt >= p.maxAttempts {
		return 0, cause, ErrAttempts
	}
	var d time.Duration
	if p.delay != nil {
		d = max(p.delay(attempt, prev, err), 0)
	} else {
		d = p.backoff.Delay(attempt, prev, p.rand())
	}
	if hint > 0 {
		limit := p.maxRetryAfter
		if open {
			limit = p.maxOpenWait
		}
		if hint > limit {
			return 0, cause, ErrRetryAfter
		}
		if p.retryAfterJitter > 0 {
			hint += uniform(p.rand(), time.Duration(float64(hint)*p.retryAfterJitter))
		}
		d = max(d, hint)
	}
	wake := now.Add(d)
	if dl, ok := ctx.Deadline(); ok && !wake.Before(dl) {
		return 0, cause, ErrDeadline
	}
	if p.maxElapsed > 0 && wake.Sub(start) > p.maxElapsed {
		return 0, cause, ErrElapsed
	}
	if p.budget != nil && !p.budget.withdraw() {
		if p.obs != nil {
			bulwark.ObserveContext(ctx, p.obs, bulwark.Event{Kind: bulwark.EventBudgetExhausted, Component: bulwark.ComponentRetry,
				Name: p.name, Attempt: attempt + 1, Err: err})
		}
		return 0, cause, ErrBudget
	}
	return d, cause, nil
}

// giveUp ends a call; cause is next's, so that an open breaker's refusal
// shows as "circuit_open" in the event rather than "not_retryable".
func (p *Policy) giveUp(ctx context.Context, reason error, cause string, attempts int, elapsed time.Duration, err error) error {
	if p.obs != nil {
		code := reasonCode(reason)
		if reason == ErrNotRetryable && cause == "circuit_open" {
			code = cause
		}
		bulwark.ObserveContext(ctx, p.obs, bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry,
			Name: p.name, Attempt: attempts, Err: err, Reason: code})
	}
	return &GiveUpError{Reason: reason, Attempts: attempts, Elapsed: elapsed, Err: err}
}

// pushback returns the wait asked for by the first error in err's chain that
// has a method RetryAfter() time.Duration, whether there is one, and whether
// that error is an open circuit breaker's refusal: it also has a method
// CircuitOpen() bool that returns true.
func pushback(err error) (wait time.Duration, asked, open bool) {
	var ra interface{ RetryAfter() time.Duration }
	if !errors.As(err, &ra) {
		return 0, false, false
	}
	co, ok := ra.(interface{ CircuitOpen() bool })
	return ra.RetryAfter(), true, ok && co.CircuitOpen()
}

type attemptKey struct{}

// Attempt returns the number of the attempt that ctx was given to, 1 for the
// first; 1 also for a context that no Policy or Hedge made. An op that picks
// an endpoint can use it to know that it is retrying.
func Attempt(ctx context.Context) int {
	if n, ok := ctx.Value(attemptKey{}).(int); ok {
		return n
	}
	return 1
}

// timed runs op under the attempt timeout.
func (p *Policy) timed(ctx context.Context, op func(context.Context) error) error {
	actx, stop := p.attemptContext(ctx)
	err := op(actx)
	timedOut := stop()
	if err != nil && timedOut && ctx.Err() == nil {
		return &timeoutError{err: err}
	}
	return err
}

// attemptContext returns a context done after the attempt timeout and a stop
// function that releases it and reports whether it timed out. With the wall
// clock the context carries a real deadline; with another clock, a deadline
// on that clock's time line, enforced by a timer of that clock.
func (p *Policy) attemptContext(ctx context.Context) (context.Context, func() bool) {
	if p.wall {
		actx, cancel := context.WithTimeout(ctx, p.attemptTimeout)
		return actx, func() bool {
			timedOut := errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
			cancel()
			return timedOut
		}
	}
	inner, cancel := context.WithCancelCause(ctx)
	c := &clockDeadlineCtx{Context: inner, deadline: p.clk.Now().Add(p.attemptTimeout)}
	t := p.clk.AfterFunc(p.attemptTimeout, func() { cancel(context.DeadlineExceeded) })
	return c, func() bool {
		fired := !t.Stop()
		cancel(nil)
		return fired && errors.Is(context.Cause(inner), context.DeadlineExceeded) && ctx.Err() == nil
	}
}

// clockDeadlineCtx is a context whose deadline is on an injected clock.
type clockDeadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c *clockDeadlineCtx) Deadline() (time.Time, bool) {
	if d, ok := c.Context.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *clockDeadlineCtx) Err() error {
	err := c.Context.Err()
	if err != nil && errors.Is(context.Cause(c.Context), context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}

// timeoutError is the error of an attempt that overran AttemptTimeout.
type timeoutError struct{ err error }

func (e *timeoutError) Error() string { return "retry: attempt timed out: " + e.err.Error() }
func (e *timeoutError) Unwrap() error { return e.err }
func (e *timeoutError) Is(target error) bool {
	return target == ErrAttemptTimeout || target == context.DeadlineExceeded
}
