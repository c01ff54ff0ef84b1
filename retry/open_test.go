package retry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

// By default an open breaker's refusal ends the call at once: no wait, no
// timer, whatever its RetryAfter, and a give-up that says why.
func TestDoFailsFastOnOpenBreaker(t *testing.T) {
	for _, wait := range []time.Duration{time.Millisecond, 5 * time.Second, time.Hour} {
		t.Run(wait.String(), func(t *testing.T) {
			clk := bulwarktest.NewClock(time.Time{})
			rec := newRecorder()
			p := mustNew(t, Config{MaxAttempts: 4, Clock: clk, Observer: rec})
			calls := 0
			err := p.Do(context.Background(), func(context.Context) error {
				calls++
				return fmt.Errorf("charge: %w", openErr{wait})
			})
			var g *GiveUpError
			if !errors.As(err, &g) || g.Reason != ErrNotRetryable || !errors.As(err, new(openErr)) || calls != 1 {
				t.Fatalf("Do = %v after %d calls, want ErrNotRetryable wrapping the refusal after 1", err, calls)
			}
			if n := clk.Timers(); n != 0 {
				t.Errorf("%d timers armed, want none", n)
			}
			if gu := rec.kinds(bulwark.EventGiveUp); len(gu) != 1 || gu[0].Reason != "circuit_open" {
				t.Errorf("give-up events = %+v, want one with Reason circuit_open", gu)
			}
		})
	}
}

// A refusal after a failure ends the call too, mid-retry.
func TestDoFailsFastWhenBreakerOpensMidCall(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	rec := newRecorder()
	p := mustNew(t, Config{MaxAttempts: 4, Clock: clk, Observer: rec, Backoff: Backoff{Base: time.Second, Jitter: NoJitter}})
	calls := 0
	err := drive(t, clk, rec, func() error {
		return p.Do(context.Background(), func(context.Context) error {
			calls++
			if calls == 1 {
				return errFlaky
			}
			return openErr{30 * time.Second}
		})
	})
	if !errors.Is(err, ErrNotRetryable) || calls != 2 {
		t.Errorf("Do = %v after %d calls, want ErrNotRetryable after 2", err, calls)
	}
}

// With MaxOpenWait, the policy waits for the breaker, within MaxOpenWait and
// never past the deadline.
func TestDoWaitsForOpenBreakerWhenAsked(t *testing.T) {
	cases := []struct {
		name       string
		wait       time.Duration
		deadline   time.Duration // 0: none
		wantReason error         // nil: the second attempt runs and succeeds
	}{
		{"within MaxOpenWait", 8 * time.Second, 0, nil},
		{"beyond MaxOpenWait", 20 * time.Second, 0, ErrRetryAfter},
		{"beyond the deadline", 8 * time.Second, 5 * time.Second, ErrDeadline},
		{"at the deadline", 8 * time.Second, 8 * time.Second, ErrDeadline},
		{"before the deadline", 8 * time.Second, 9 * time.Second, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := bulwarktest.NewClock(time.Time{})
			rec := newRecorder()
			p := mustNew(t, Config{MaxAttempts: 4, MaxOpenWait: 10 * time.Second, Clock: clk, Observer: rec,
				Backoff: Backoff{Base: time.Millisecond, Jitter: NoJitter}})
			ctx := context.Background()
			if tc.deadline > 0 {
				ctx = clockDeadline{ctx, clk.Now().Add(tc.deadline)}
			}
			start := clk.Now()
			var second time.Duration
			calls := 0
			err := drive(t, clk, rec, func() error {
				return p.Do(ctx, func(context.Context) error {
					calls++
					if calls == 1 {
						return openErr{tc.wait}
					}
					second = clk.Since(start)
					return nil
				})
			})
			if tc.wantReason == nil {
				if err != nil || second != tc.wait {
					t.Errorf("Do = %v, second attempt after %v; want nil after %v", err, second, tc.wait)
				}
				if r := rec.kinds(bulwark.EventRetry); len(r) != 1 || r[0].Reason != "circuit_open" {
					t.Errorf("retry events = %+v, want one with Reason circuit_open", r)
				}
				return
			}
			if !errors.Is(err, tc.wantReason) || calls != 1 || clk.Since(start) != 0 {
				t.Errorf("Do = %v after %d calls and %v, want %v at once", err, calls, clk.Since(start), tc.wantReason)
			}
		})
	}
}

// Server pushback is not a breaker's refusal: it is still waited out up to
// MaxRetryAfter, with MaxOpenWait zero.
func TestDoWaitsForPushbackButNotForBreaker(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	rec := newRecorder()
	p := mustNew(t, Config{Clock: clk, Observer: rec})
	calls := 0
	err := drive(t, clk, rec, func() error {
		return p.Do(context.Background(), func(context.Context) error {
			calls++
			if calls == 1 {
				return &bulwark.StatusError{StatusCode: 503, Wait: 2 * time.Second}
			}
			return nil
		})
	})
	if err != nil || calls != 2 || clk.Since(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) < 2*time.Second {
		t.Errorf("Do = %v after %d calls, want nil after 2, the second 2s later", err, calls)
	}
}
