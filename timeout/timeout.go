package timeout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

var _ bulwark.Policy = (*Policy)(nil)

var (
	// ErrTimeout is matched (errors.Is) by the error of a call that
	// overran its Policy's Timeout, and is the context.Cause of the
	// context the call was given.
	ErrTimeout = errors.New("timeout: call timed out")

	// ErrInvalidConfig is wrapped by the error of New for a Config it
	// cannot use.
	ErrInvalidConfig = errors.New("timeout: invalid config")
)

// Config configures a Policy.
type Config struct {
	// Name names the policy in events and errors. Optional.
	Name string

	// Timeout bounds each call: the op's context is done this long after
	// Do starts it. Required: it must be positive.
	Timeout time.Duration

	// Clock is the time source; the deadline of the op's context is on its
	// time line and a timer of this clock ends it. If nil, the wall clock
	// (and the context is a standard context.WithTimeout).
	Clock bulwark.Clock

	// Observer receives an EventCall for each call, with Latency, Outcome
	// (bulwark.Classify of the caller's context and the error returned)
	// and Err; Reason is "timeout" for a call that overran. If nil, no
	// events and no cost.
	Observer bulwark.Observer
}

// Policy bounds the time a call may take. A Policy is safe for concurrent
// use by multiple goroutines. Use New; the zero Policy is not usable.
type Policy struct {
	name string
	d    time.Duration
	clk  bulwark.Clock
	wall bool
	obs  bulwark.Observer
}

// New returns a Policy for cfg. It returns an error wrapping
// ErrInvalidConfig unless cfg.Timeout is positive.
func New(cfg Config) (*Policy, error) {
	if cfg.Timeout <= 0 {
		return nil, fmt.Errorf("%w: Timeout %v, want > 0", ErrInvalidConfig, cfg.Timeout)
	}
	clk := base.ClockOrWall(cfg.Clock)
	return &Policy{name: cfg.Name, d: cfg.Timeout, clk: clk, wall: clk == bulwark.WallClock(), obs: cfg.Observer}, nil
}

// Timeout returns Config.Timeout.
func (p *Policy) Timeout() time.Duration { return p.d }

// Do runs op with a context whose deadline is Timeout from now, or ctx's own
// deadline when that is earlier (then Do adds nothing). Do runs op on the
// caller's goroutine and returns when op returns: a Go function cannot be
// stopped from outside, so a Policy that returned at the deadline would
// leave op running unseen, still holding its connection and its memory,
// while the caller, told it failed, sends more work to the dependency that
// is already too slow. Every op that honours its context (net/http, gRPC,
// database drivers) returns at the deadline; an op that ignores it makes Do
// late, and Do then reports the overrun.
//
// When op returns an error after the deadline, Do returns an *Error that
// wraps it and matches both ErrTimeout and context.DeadlineExceeded, so that
// retry and breaker count it as a failure (bulwark.Classify), not as the
// caller's cancellation. An op that returns nil, even late, succeeded: Do
// returns nil rather than discard work that was done. Any other error, and
// every error when the caller's own ctx ended first, is returned as it is.
//
// Outside a retry, bulwark.Compose(timeout, retryPolicy) bounds the whole
// call, retries and backoff included; inside, Compose(retryPolicy, timeout)
// bounds each attempt.
func (p *Policy) Do(ctx context.Context, op func(context.Context) error) error {
	var start time.Time
	if p.obs != nil {
		start = p.clk.Now()
	}
	fired, err := p.run(ctx, op)
	if fired {
		err = &Error{Name: p.name, Timeout: p.d, Err: err}
	}
	if p.obs != nil {
		e := bulwark.Event{
			Kind:      bulwark.EventCall,
			Component: bulwark.ComponentTimeout,
			Name:      p.name,
			Latency:   p.clk.Since(start),
			Outcome:   bulwark.Classify(ctx, err),
			Err:       err,
		}
		if fired {
			e.Reason = "timeout"
		}
		base.ObserveContext(ctx, p.obs, e)
	}
	return err
}

// run runs op under the deadline and reports whether op failed after the
// Policy's own deadline passed (not the caller's).
func (p *Policy) run(ctx context.Context, op func(context.Context) error) (fired bool, err error) {
	if p.wall {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= p.d {
			return false, op(ctx)
		}
		tctx, cancel := context.WithTimeoutCause(ctx, p.d, ErrTimeout)
		err = op(tctx)
		fired = err != nil && ctx.Err() == nil && tctx.Err() != nil && context.Cause(tctx) == ErrTimeout
		cancel()
		return fired, err
	}
	deadline := p.clk.Now().Add(p.d)
	if dl, ok := ctx.Deadline(); ok && !dl.After(deadline) {
		return false, op(ctx)
	}
	c := newClockCtx(ctx, deadline)
	t := p.clk.AfterFunc(p.d, c.expire)
	err = op(c)
	t.Stop()
	fired = err != nil && ctx.Err() == nil && c.expired()
	c.release()
	return fired, err
}

// clockCtx is the context of a call on an injected clock: its deadline is on
// that clock's time line, and a timer of that clock ends it. Once expired it
// reports context.DeadlineExceeded with the cause ErrTimeout, and so do the
// contexts derived from it, as with context.WithDeadline.
//
// inner carries the cancellation and the cause (Value hands it to
// context.Cause). Done is the channel of ended, a child of inner, closed
// when inner ends, so that the context package does not take c for inner
// (whose children would see context.Canceled) and asks AfterFunc instead,
// then gives derived contexts c.Err(). AfterFunc waits for ended, not inner:
// its functions then run once Done is closed, when Err is no longer nil (a
// derived context that read a nil Err made the context package panic).
type clockCtx struct {
	parent   context.Context
	inner    context.Context // ends with the parent, or on expire or release
	cancel   context.CancelCauseFunc
	ended    context.Context // a child of inner: ends just after it
	done     <-chan struct{} // ended's
	stop     context.CancelFunc
	deadline time.Time

	mu      sync.Mutex
	timeout bool // guarded by mu: expired before the parent ended
}

var errReleased = errors.New("timeout: call returned")

func newClockCtx(parent context.Context, deadline time.Time) *clockCtx {
	inner, cancel := context.WithCancelCause(parent)
	ended, stop := context.WithCancel(inner)
	return &clockCtx{parent: parent, inner: inner, cancel: cancel, ended: ended, done: ended.Done(), stop: stop, deadline: deadline}
}

func (c *clockCtx) expire() {
	c.mu.Lock()
	if c.inner.Err() == nil {
		c.timeout = true
	}
	c.mu.Unlock()
	c.cancel(ErrTimeout)
}

func (c *clockCtx) expired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.timeout
}

func (c *clockCtx) release() {
	c.cancel(errReleased)
	c.stop()
}

func (c *clockCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *clockCtx) Done() <-chan struct{}       { return c.done }
func (c *clockCtx) Value(key any) any           { return c.inner.Value(key) }

func (c *clockCtx) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	if c.expired() {
		return context.DeadlineExceeded
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	return context.Canceled // released: the call has returned
}

// AfterFunc lets the contexts derived from c learn of its end without a
// goroutine each, once Done is closed.
func (c *clockCtx) AfterFunc(f func()) func() bool { return context.AfterFunc(c.ended, f) }

// Error is the error of a call that overran its Policy's Timeout. It matches
// ErrTimeout and context.DeadlineExceeded with errors.Is, and unwraps to the
// error the call returned.
type Error struct {
	// Name is the Policy's Config.Name.
	Name string
	// Timeout is the Policy's Config.Timeout.
	Timeout time.Duration
	// Err is the error the call returned.
	Err error
}

// Error returns a message such as
// "timeout: call timed out after 2s (payments): context deadline exceeded".
func (e *Error) Error() string {
	s := ErrTimeout.Error() + " after " + e.Timeout.String()
	if e.Name != "" {
		s += " (" + e.Name + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is ErrTimeout or context.DeadlineExceeded.
func (e *Error) Is(target error) bool {
	return target == ErrTimeout || target == context.DeadlineExceeded
}
