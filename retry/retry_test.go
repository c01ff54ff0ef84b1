package retry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

func mustNew(t testing.TB, cfg Config) *Policy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	return p
}

func TestNewRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative attempts", Config{MaxAttempts: -1}, "MaxAttempts -1"},
		{"negative elapsed", Config{MaxElapsed: -time.Second}, "negative MaxElapsed"},
		{"negative attempt timeout", Config{AttemptTimeout: -1}, "negative AttemptTimeout"},
		{"negative retry-after cap", Config{MaxRetryAfter: -1}, "negative MaxRetryAfter"},
		{"negative open wait", Config{MaxOpenWait: -1}, "negative MaxOpenWait"},
		{"retry-after jitter above 1", Config{RetryAfterJitter: 1.5}, "RetryAfterJitter 1.5"},
		{"retry-after jitter NaN", Config{RetryAfterJitter: math.NaN()}, "RetryAfterJitter NaN"},
		{"negative base", Config{Backoff: Backoff{Base: -time.Second}}, "negative Base"},
		{"multiplier below 1", Config{Backoff: Backoff{Multiplier: 0.9}}, "Multiplier 0.9"},
		{"cap below base", Config{Backoff: Backoff{Base: 2 * time.Second, Cap: time.Second}}, "below Base"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New(%+v) = %v, %v, want an error containing %q", tc.cfg, p, err, tc.want)
			}
		})
	}
}

func TestDoFirstAttemptSucceeds(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	rec := newRecorder()
	p := mustNew(t, Config{Clock: clk, Observer: rec})
	calls := 0
	err := p.Do(context.Background(), func(ctx context.Context) error {
		calls++
		if n := Attempt(ctx); n != 1 {
			t.Errorf("Attempt(ctx) = %d on the first attempt, want 1", n)
		}
		return nil
	})
	if err != nil || calls != 1 {
		t.Fatalf("Do = %v after %d calls, want nil after 1", err, calls)
	}
	if n := clk.Timers(); n != 0 {
		t.Errorf("Timers() = %d after a first-attempt success, want 0", n)
	}
	if len(rec.events) != 0 {
		t.Errorf("events = %+v, want none", rec.events)
	}
}

func TestDoRetriesUntilSuccess(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	rec := newRecorder()
	p := mustNew(t, Config{MaxAttempts: 5, Clock: clk, Observer: rec, Seed: 1,
		Backoff: Backoff{Base: time.Second, Cap: time.Minute, Jitter: NoJitter}})
	start := clk.Now()
	var at []time.Duration
	var attempts []int
	err := drive(t, clk, rec, func() error {
		return p.Do(context.Background(), func(ctx context.Context) error {
			at = append(at, clk.Since(start))
			attempts = append(attempts, Attempt(ctx))
			if len(at) < 4 {
				return errFlaky
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("Do = %v, want nil", err)
	}
	wantAt := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second}
	if fmt.Sprint(at) != fmt.Sprint(wantAt) {
		t.Errorf("attempt times = %v, want %v", at, wantAt)
	}
	if fmt.Sprint(attempts) != "[1 2 3 4]" {
		t.Errorf("Attempt(ctx) per attempt = %v, want [1 2 3 4]", attempts)
	}
	retries := rec.kinds(bulwark.EventRetry)
	if len(retries) != 3 {
		t.Fatalf("retry events = %d, want 3", len(retries))
	}
	for i, e := range retries {
		want := bulwark.Event{Kind: bulwark.EventRetry, Component: bulwark.ComponentRetry, Attempt: i + 2,
			Delay: time.Second << i, Err: errFlaky, Reason: "error"}
		if e != want {
			t.Errorf("retry event %d = %+v, want %+v", i, e, want)
		}
	}
	if g := rec.kinds(bulwark.EventGiveUp); len(g) != 0 {
		t.Errorf("give-up events = %+v after a success, want none", g)
	}
}

func TestDoGivesUp(t *testing.T) {
	errBad := errors.New("bad request")
	type tc struct {
		name         string
		cfg          Config
		ctx          func(clk *bulwarktest.Clock) context.Context
		op           func(calls int) error
		wantReason   error
		wantCode     string
		wantAttempts int
		wantErr      error
		maxClock     time.Duration // the clock must not have moved further
	}
	base := Backoff{Base: time.Second, Cap: time.Minute, Jitter: NoJitter}
	bg := func(*bulwarktest.Clock) context.Context { return context.Background() }
	cases := []tc{
		{"attempts", Config{MaxAttempts: 3, Backoff: base}, bg,
			func(int) error { return errFlaky }, ErrAttempts, "attempts", 3, errFlaky, 3 * time.Second},
		{"one attempt", Config{MaxAttempts: 1, Backoff: base}, bg,
			func(int) error { return errFlaky }, ErrAttempts, "attempts", 1, errFlaky, 0},
		{"elapsed", Config{MaxAttempts: 10, MaxElapsed: 10 * time.Second, Backoff: base}, bg,
			func(int) error { return errFlaky }, ErrElapsed, "elapsed", 4, errFlaky, 7 * time.Second},
		{"deadline", Config{MaxAttempts: 10, Backoff: base},
			func(clk *bulwarktest.Clock) context.Context {
				return clockDeadline{context.Background(), clk.Now().Add(6500 * time.Millisecond)}
			},
			func(int) error { return errFlaky }, ErrDeadline, "deadline", 3, errFlaky, 3 * time.Second},
		{"deadline at the wake time", Config{MaxAttempts: 10, Backoff: base},
			func(clk *bulwarktest.Clock) context.Context {
				return clockDeadline{context.Background(), clk.Now().Add(time.Second)}
			},
			func(int) error { return errFlaky }, ErrDeadline, "deadline", 1, errFlaky, 0},
		{"permanent", Config{MaxAttempts: 5, Backoff: base}, bg,
			func(n int) error {
				if n == 2 {
					return fmt.Errorf("wrapped: %w", bulwark.Permanent(errBad))
				}
				return errFlaky
			}, ErrNotRetryable, "not_retryable", 2, errBad, time.Second},
		{"predicate", Config{MaxAttempts: 5, Backoff: base, Retryable: func(err error) bool { return !errors.Is(err, errBad) }}, bg,
			func(int) error { return errBad }, ErrNotRetryable, "not_retryable", 1, errBad, 0},
		{"retry-after above cap", Config{MaxAttempts: 5, Backoff: base, MaxRetryAfter: time.Minute}, bg,
			func(int) error { return waitErr{2 * time.Minute} }, ErrRetryAfter, "retry_after", 1, waitErr{2 * time.Minute}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := bulwarktest.NewClock(time.Time{})
			rec := newRecorder()
			cfg := tc.cfg
			cfg.Clock, cfg.Observer = clk, rec
			p := mustNew(t, cfg)
			start := clk.Now()
			calls := 0
			err := drive(t, clk, rec, func() error {
				return p.Do(tc.ctx(clk), func(context.Context) error {
					calls++
					return tc.op(calls)
				})
			})
			var g *GiveUpError
			if !errors.As(err, &g) {
				t.Fatalf("Do = %v, want a *GiveUpError", err)
			}
			if g.Reason != tc.wantReason || g.Attempts != tc.wantAttempts || calls != tc.wantAttempts {
				t.Errorf("Do = %+v after %d calls, want reason %v after %d attempts", g, calls, tc.wantReason, tc.wantAttempts)
			}
			if !errors.Is(err, tc.wantReason) || !errors.Is(err, tc.wantErr) {
				t.Errorf("errors.Is(%v, reason %v / last %v) = %v / %v, want true / true",
					err, tc.wantReason, tc.wantErr, errors.Is(err, tc.wantReason), errors.Is(err, tc.wantErr))
			}
			if moved := clk.Since(start); moved > tc.maxClock {
				t.Errorf("the clock moved %v, want at most %v (no sleeping past the limit)", moved, tc.maxClock)
			}
			gu := rec.kinds(bulwark.EventGiveUp)
			if len(gu) != 1 || gu[0].Reason != tc.wantCode || gu[0].Attempt != tc.wantAttempts {
				t.Errorf("give-up events = %+v, want one with Reason %q and Attempt %d", gu, tc.wantCode, tc.wantAttempts)
			}
		})
	}
}

// A deadline that does not leave time for the next wait ends Do at once, with
// the last error: it never sleeps into the deadline.
func TestDoNeverSleepsPastDeadline(t *testing.T) {
	for _, j := range []Jitter{FullJitter, EqualJitter, DecorrelatedJitter, NoJitter} {
		for budget := 100 * time.Millisecond; budget <= 20*time.Second; budget *= 3 {
			t.Run(fmt.Sprintf("%v/%v", j, budget), func(t *testing.T) {
				clk := bulwarktest.NewClock(time.Time{})
				rec := newRecorder()
				p := mustNew(t, Config{MaxAttempts: 100, Clock: clk, Observer: rec, Seed: uint64(budget),
					Backoff: Backoff{Base: 50 * time.Millisecond, Cap: 5 * time.Second, Jitter: j}})
				deadline := clk.Now().Add(budget)
				ctx := clockDeadline{context.Background(), deadline}
				err := drive(t, clk, rec, func() error {
					return p.Do(ctx, func(context.Context) error {
						if !clk.Now().Before(deadline) {
							t.Errorf("attempt at %v, at or after the deadline %v", clk.Now(), deadline)
						}
						return errFlaky
					})
				})
				if !errors.Is(err, ErrDeadline) || !errors.Is(err, errFlaky) {
					t.Errorf("Do = %v, want ErrDeadline wrapping errFlaky", err)
				}
				if now := clk.Now(); !now.Before(deadline) {
					t.Errorf("Do returned at %v, want before the deadline %v", now, deadline)
				}
			})
		}
	}
}

func TestDoHonoursRetryAfter(t *testing.T) {
	cases := []struct {
		name     string
		jitter   float64
		hint     time.Duration
		min, max time.Duration
	}{
		{"exact", 0, 5 * time.Second, 5 * time.Second, 5 * time.Second},
		{"jittered", 0.5, 4 * time.Second, 4 * time.Second, 6 * time.Second},
		{"backoff longer than hint", 0, time.Millisecond, 2 * time.Second, 2 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 20; seed++ {
				clk := bulwarktest.NewClock(time.Time{})
				rec := newRecorder()
				p := mustNew(t, Config{Clock: clk, Observer: rec, Seed: seed, RetryAfterJitter: tc.jitter,
					Backoff: Backoff{Base: 2 * time.Second, Jitter: NoJitter}})
				start := clk.Now()
				var second time.Duration
				calls := 0
				err := drive(t, clk, rec, func() error {
					return p.Do(context.Background(), func(context.Context) error {
						calls++
						if calls == 1 {
							return fmt.Errorf("open: %w", waitErr{tc.hint})
						}
						second = clk.Since(start)
						return nil
					})
				})
				if err != nil {
					t.Fatalf("Do = %v, want nil", err)
				}
				if second < tc.min || second > tc.max {
					t.Errorf("seed %d: second attempt after %v, want within [%v, %v]", seed, second, tc.min, tc.max)
				}
				if r := rec.kinds(bulwark.EventRetry); len(r) != 1 || r[0].Reason != "retry_after" {
					t.Errorf("retry events = %+v, want one with Reason retry_after", r)
				}
			}
		})
	}
}

func TestGiveUpErrorUnwrap(t *testing.T) {
	p := mustNew(t, Config{MaxAttempts: 2, Clock: bulwarktest.NewClock(time.Time{}),
		Delay: func(int, time.Duration, error) time.Duration { return 0 }})
	cause := &bulwark.StatusError{StatusCode: 503}
	err := p.Do(context.Background(), func(context.Context) error { return fmt.Errorf("call: %w", cause) })
	var g *GiveUpError
	if !errors.As(err, &g) {
		t.Fatalf("Do = %v, want a *GiveUpError", err)
	}
	var se *bulwark.StatusError
	if !errors.As(err, &se) || se != cause {
		t.Errorf("errors.As(%v, *StatusError) = %v, want the op's error", err, se)
	}
	if !errors.Is(err, ErrAttempts) || errors.Is(err, ErrBudget) {
		t.Errorf("errors.Is(%v, ErrAttempts / ErrBudget) = %v / %v, want true / false", err, errors.Is(err, ErrAttempts), errors.Is(err, ErrBudget))
	}
	const want = "retry: gave up after 2 attempts (attempts exhausted): call: HTTP 503 Service Unavailable"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if bulwark.IsPermanent(err) {
		t.Errorf("IsPermanent(%v) = true, want false", err)
	}
	perm := p.Do(context.Background(), func(context.Context) error { return bulwark.Permanent(cause) })
	if !bulwark.IsPermanent(perm) || !errors.Is(perm, ErrNotRetryable) {
		t.Errorf("Do(permanent) = %v, want permanent and ErrNotRetryable", perm)
	}
}

func TestDoStopsOnCallerCancel(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	p := mustNew(t, Config{MaxAttempts: 5, Clock: clk, Backoff: Backoff{Base: time.Second, Jitter: NoJitter}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	calls := 0
	go func() {
		done <- p.Do(ctx, func(context.Context) error { calls++; return errFlaky })
	}()
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errFlaky) || calls != 1 {
		t.Errorf("Do = %v after %d calls, want context.Canceled wrapping errFlaky after 1", err, calls)
	}
	// An op that fails because the caller canceled is not retried.
	calls = 0
	err = p.Do(ctx, func(ctx context.Context) error { calls++; return ctx.Err() })
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Errorf("Do(canceled ctx) = %v after %d calls, want context.Canceled after 1", err, calls)
	}
}

func TestDoAttemptTimeout(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	rec := newRecorder()
	p := mustNew(t, Config{MaxAttempts: 3, AttemptTimeout: 2 * time.Second, Clock: clk, Observer: rec,
		Backoff: Backoff{Base: time.Second, Jitter: NoJitter}})
	start := clk.Now()
	var errs []error
	var deadlines []time.Duration
	done := make(chan error, 1)
	go func() {
		done <- p.Do(context.Background(), func(ctx context.Context) error {
			dl, _ := ctx.Deadline()
			deadlines = append(deadlines, dl.Sub(start))
			if Attempt(ctx) == 3 {
				return nil
			}
			<-ctx.Done()
			errs = append(errs, ctx.Err())
			return ctx.Err()
		})
	}()
	// Attempt 1 times out at 2s, waits 1s; attempt 2 starts at 3s and times out at 5s.
	for _, step := range []time.Duration{2 * time.Second, time.Second, 2 * time.Second, 2 * time.Second} {
		if err := clk.BlockUntil(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(step)
		if step == time.Second {
			<-rec.retries
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Do = %v, want nil", err)
	}
	if fmt.Sprint(errs) != fmt.Sprint([]error{context.DeadlineExceeded, context.DeadlineExceeded}) {
		t.Errorf("op saw ctx.Err() = %v, want DeadlineExceeded twice", errs)
	}
	if want := "[2s 5s 9s]"; fmt.Sprint(deadlines) != want {
		t.Errorf("attempt deadlines = %v, want %v", deadlines, want)
	}
	r := rec.kinds(bulwark.EventRetry)
	if len(r) != 2 || r[0].Reason != "attempt_timeout" || !errors.Is(r[0].Err, ErrAttemptTimeout) || !errors.Is(r[0].Err, context.DeadlineExceeded) {
		t.Errorf("retry events = %+v, want two attempt_timeout retries", r)
	}
}

func TestDoCustomDelay(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	rec := newRecorder()
	type call struct {
		n    int
		prev time.Duration
	}
	var got []call
	p := mustNew(t, Config{MaxAttempts: 4, Clock: clk, Observer: rec,
		Delay: func(n int, prev time.Duration, err error) time.Duration {
			got = append(got, call{n, prev})
			if n == 3 {
				return -time.Second // counts as zero
			}
			return time.Duration(n) * time.Second
		}})
	err := drive(t, clk, rec, func() error {
		return p.Do(context.Background(), func(context.Context) error { return errFlaky })
	})
	if !errors.Is(err, ErrAttempts) {
		t.Fatalf("Do = %v, want ErrAttempts", err)
	}
	if want := fmt.Sprint([]call{{1, 0}, {2, time.Second}, {3, 2 * time.Second}}); fmt.Sprint(got) != want {
		t.Errorf("Delay calls = %v, want %v", got, want)
	}
	if moved := clk.Since(bulwarktest.NewClock(time.Time{}).Now()); moved != 3*time.Second {
		t.Errorf("clock moved %v, want 3s", moved)
	}
}

// Two policies with the same seed make the same delays.
func TestSeedIsReproducible(t *testing.T) {
	run := func(seed uint64) []time.Duration {
		clk := bulwarktest.NewClock(time.Time{})
		rec := newRecorder()
		p := mustNew(t, Config{MaxAttempts: 8, Clock: clk, Observer: rec, Seed: seed, Backoff: Backoff{Jitter: DecorrelatedJitter}})
		_ = drive(t, clk, rec, func() error {
			return p.Do(context.Background(), func(context.Context) error { return errFlaky })
		})
		var ds []time.Duration
		for _, e := range rec.kinds(bulwark.EventRetry) {
			ds = append(ds, e.Delay)
		}
		return ds
	}
	a, b, c := run(7), run(7), run(8)
	if fmt.Sprint(a) != fmt.Sprint(b) || len(a) != 7 {
		t.Errorf("delays with seed 7 = %v then %v, want the same 7", a, b)
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Errorf("delays with seeds 7 and 8 are both %v, want different", a)
	}
}

func TestPolicyConcurrentSafe(t *testing.T) {
	budget, err := NewBudget(BudgetConfig{Ratio: 1, Clock: bulwarktest.NewClock(time.Time{})})
	if err != nil {
		t.Fatal(err)
	}
	var events atomic.Int64
	p := mustNew(t, Config{MaxAttempts: 3, Budget: budget, Seed: 3,
		Observer: bulwark.ObserverFunc(func(bulwark.Event) { events.Add(1) }),
		Backoff:  Backoff{Base: time.Microsecond, Cap: time.Microsecond}})
	var wg sync.WaitGroup
	var calls, fails atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				err := p.Do(context.Background(), func(ctx context.Context) error {
					calls.Add(1)
					if (g+i)%3 == 0 && Attempt(ctx) == 1 {
						return errFlaky
					}
					return nil
				})
				if err != nil {
					fails.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if calls.Load() < 1600 || calls.Load() > 1600+600 {
		t.Errorf("calls = %d, want within [1600, 2200]", calls.Load())
	}
	if fails.Load() != 0 {
		t.Errorf("failed calls = %d, want 0 (the budget's minimum covers these retries)", fails.Load())
	}
}

// An op that picks an endpoint on each call moves to another one on retry:
// the Policy calls op afresh and Attempt tells it which attempt it is.
func TestDoMovesToAnotherEndpoint(t *testing.T) {
	endpoints := []bulwark.Endpoint{{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.2:80"}, {Addr: "10.0.0.3:80"}}
	p := mustNew(t, Config{MaxAttempts: 3, Clock: bulwarktest.NewClock(time.Time{}),
		Delay: func(int, time.Duration, error) time.Duration { return 0 }})
	var tried []string
	err := p.Do(context.Background(), func(ctx context.Context) error {
		ep := endpoints[(Attempt(ctx)-1)%len(endpoints)]
		tried = append(tried, ep.Addr)
		if ep.Addr == "10.0.0.1:80" {
			return fmt.Errorf("%s: connection refused", ep.Addr)
		}
		return nil
	})
	if err != nil || fmt.Sprint(tried) != "[10.0.0.1:80 10.0.0.2:80]" {
		t.Errorf("Do = %v after trying %v, want nil after [10.0.0.1:80 10.0.0.2:80]", err, tried)
	}
}

type reqKey struct{}

// ctxEvents records the request id of the context each event came with.
type ctxEvents struct {
	mu  sync.Mutex
	got []string
}

func (c *ctxEvents) Observe(e bulwark.Event) { c.add("none", e) }
func (c *ctxEvents) ObserveContext(ctx context.Context, e bulwark.Event) {
	id, _ := ctx.Value(reqKey{}).(string)
	c.add(id, e)
}
func (c *ctxEvents) add(id string, e bulwark.Event) {
	c.mu.Lock()
	c.got = append(c.got, id+":"+e.Kind.String())
	c.mu.Unlock()
}

// TestEventsCarryTheCallContext: retries and the give-up reach a
// bulwark.ContextObserver with the context of the call they belong to, so
// that an OpenTelemetry observer can put them on the request's span.
func TestEventsCarryTheCallContext(t *testing.T) {
	obs := &ctxEvents{}
	p, err := New(Config{MaxAttempts: 2, Delay: func(int, time.Duration, error) time.Duration { return 0 }, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.WithValue(context.Background(), reqKey{}, "req-1")
	_ = p.Do(ctx, func(context.Context) error { return errors.New("boom") })
	if got, want := strings.Join(obs.got, ","), "req-1:retry,req-1:give_up"; got != want {
		t.Errorf("events = %q, want %q", got, want)
	}
}
