package ratelimit

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

var _ bulwark.Policy = (*Limiter)(nil)

// dead marks the bucket of a Group key that was evicted: callers that still
// hold it look the key up again.
const dead = math.MinInt64

// Limiter is a rate limiter: the generic cell rate algorithm (GCRA), which
// decides exactly as a token bucket of Burst tokens refilled at Rate per
// Period, but keeps one number, the theoretical arrival time (TAT) of the
// next event: a request for n tokens at time now passes when
// max(TAT, now) + n × T − now ≤ Burst × T, where T = Period / Rate, and then
// moves TAT to max(TAT, now) + n × T.
//
// That number is one atomic word: a decision reads the clock once and does
// one compare-and-swap, without a lock. Allow has explicit-time twins
// (AllowAt, AllowN), as in golang.org/x/time/rate, for callers that already
// hold the time or test without a clock; Do and Wait run on the Clock.
//
// A Limiter is safe for concurrent use by multiple goroutines. Use New; the
// zero Limiter is not usable.
type Limiter struct {
	tat atomic.Int64 // ns since s.base
	s   *settings
}

// New returns a Limiter for cfg, with a full bucket. It returns an error
// wrapping ErrInvalidConfig when Rate is not positive, a duration or Burst
// is negative, or the rate or burst is out of range.
func New(cfg Config) (*Limiter, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	l := &Limiter{s: s}
	l.tat.Store(-maxTime) // full since ever, whatever time AllowAt is given
	return l, nil
}

// Allow reports whether one event may happen now, and takes its token if
// so. It allocates nothing and, when it refuses, reports EventRejected.
func (l *Limiter) Allow() bool { return l.allow1(l.s.now()) }

// AllowAt is Allow at time now.
func (l *Limiter) AllowAt(now time.Time) bool { return l.allow1(l.s.at(now)) }

func (l *Limiter) allow1(now int64) bool {
	s := l.s
	for {
		old := l.tat.Load()
		nt := max(old, now) + s.interval
		if nt-now > s.tau {
			if s.obs != nil {
				s.reject(context.Background(), "", time.Duration(nt-s.tau-now), reasonRate)
			}
			return false
		}
		if l.tat.CompareAndSwap(old, nt) {
			return true
		}
	}
}

// AllowN decides on n tokens at time now: it takes them if they are all
// there, and otherwise takes none. A request for more than Burst tokens is
// never allowed (its RetryAfter is the longest Duration); n ≤ 0 is allowed
// and takes nothing.
func (l *Limiter) AllowN(now time.Time, n int) Result {
	r, _ := l.s.decide(context.Background(), &l.tat, "", l.s.at(now), n)
	return r
}

// Wait waits for one token; see WaitN.
func (l *Limiter) Wait(ctx context.Context) error { return l.WaitN(ctx, 1) }

// WaitN waits until n tokens are available and takes them. It never waits
// past ctx's deadline: when the tokens would come later, it returns at once
// a *LimitError (Reason "deadline", RetryAfter the wait it would need). It
// returns a *LimitError at once for more than Burst tokens, and ctx.Err()
// if ctx ends during the wait, in which case the tokens go back to the
// bucket unless a later request has already queued behind them.
func (l *Limiter) WaitN(ctx context.Context, n int) error {
	return l.s.wait(ctx, &l.tat, "", n, math.MaxInt64)
}

// Do runs op if a token is available now, or once one is within
// Config.MaxWait and before ctx's deadline; otherwise it returns a
// *LimitError, wrapping ErrLimited, without running op. It returns ctx.Err()
// if ctx ends while it waits. Do makes a Limiter a bulwark.Policy: in
// bulwark.Compose(retryPolicy, limiter), a refusal's RetryAfter tells the
// retry how long to wait.
func (l *Limiter) Do(ctx context.Context, op func(context.Context) error) error {
	if err := l.s.wait(ctx, &l.tat, "", 1, l.s.maxWait); err != nil {
		return err
	}
	return op(ctx)
}

// take decides on n tokens of the bucket tat at now, reserving them up to
// maxWait ahead. It returns the decision, the wait before the tokens may be
// used (≤ maxWait when allowed) and the TAT it stored, which is dead if the
// bucket was evicted from its Group (then nothing was decided). It reports
// nothing: its callers know the reason of a refusal.
func (s *settings) take(tat *atomic.Int64, now int64, n int, maxWait int64) (Result, int64, int64) {
	if n > s.burst {
		old := tat.Load()
		return Result{Limit: s.burst, Remaining: s.remaining(old, now), RetryAfter: forever, Reset: reset(old, now)}, 0, old
	}
	n = max(n, 0)
	for {
		old := tat.Load()
		if old == dead {
			return Result{}, 0, dead
		}
		nt := max(old, now) + int64(n)*s.interval
		wait := nt - s.tau - now
		if wait > maxWait {
			return Result{Limit: s.burst, Remaining: s.remaining(old, now), RetryAfter: time.Duration(wait), Reset: reset(old, now)}, wait, old
		}
		if tat.CompareAndSwap(old, nt) {
			return Result{Allowed: true, Limit: s.burst, Remaining: s.remaining(nt, now), Reset: reset(nt, now)}, max(wait, 0), nt
		}
	}
}

// decide is take without waiting, reporting a refusal.
func (s *settings) decide(ctx context.Context, tat *atomic.Int64, key string, now int64, n int) (Result, int64) {
	r, _, stored := s.take(tat, now, n, 0)
	if !r.Allowed && stored != dead && s.obs != nil {
		reason := reasonRate
		if r.RetryAfter == forever {
			reason = reasonBurst
		}
		s.reject(ctx, key, r.RetryAfter, reason)
	}
	return r, stored
}

// remaining returns the whole tokens in a bucket whose TAT is tat.
func (s *settings) remaining(tat, now int64) int {
	free := s.tau - max(tat-now, 0)
	if free <= 0 {
		return 0
	}
	return int(free / s.interval)
}

func reset(tat, now int64) time.Duration { return time.Duration(max(tat-now, 0)) }

// errDead is returned by wait for a bucket evicted from its Group.
var errDead = errors.New("ratelimit: evicted bucket")

// wait takes n tokens of the bucket tat, waiting for them up to maxWait and
// never past ctx's deadline. It returns nil once they are taken, errDead if
// the bucket was evicted, a *LimitError or ctx.Err().
func (s *settings) wait(ctx context.Context, tat *atomic.Int64, key string, n int, maxWait int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	limit := maxWait
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, max(s.at(dl)-now, 0))
	}
	r, wait, stored := s.take(tat, now, n, limit)
	switch {
	case stored == dead:
		return errDead
	case !r.Allowed:
		reason := reasonRate
		switch {
		case r.RetryAfter == forever:
			reason = reasonBurst
		case int64(r.RetryAfter) <= maxWait:
			reason = reasonDeadline // only the deadline stood in the way
		}
		err := &LimitError{Name: s.name, Key: key, Wait: r.RetryAfter, Reason: reason}
		if s.obs != nil {
			s.observe(ctx, err)
		}
		return err
	case wait == 0:
		return nil
	}
	if err := base.Sleep(ctx, s.clk, time.Duration(wait)); err != nil {
		// Give the tokens back if nobody queued behind them; otherwise
		// they are spent, so that the limit is never exceeded.
		tat.CompareAndSwap(stored, stored-int64(n)*s.interval)
		return err
	}
	return nil
}

// reject reports a refusal to the Observer, which must not be nil.
func (s *settings) reject(ctx context.Context, key string, wait time.Duration, reason string) {
	s.observe(ctx, &LimitError{Name: s.name, Key: key, Wait: wait, Reason: reason})
}

func (s *settings) observe(ctx context.Context, err *LimitError) {
	base.ObserveContext(ctx, s.obs, bulwark.Event{
		Kind:      bulwark.EventRejected,
		Component: bulwark.ComponentRateLimit,
		Name:      s.name,
		Key:       err.Key,
		Delay:     err.Wait,
		Err:       err,
		Reason:    err.Reason,
	})
}
