package retry

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"go.uber.org/goleak"
)

// noLeak fails t if goroutines started during the test are still running
// after it; the hedge's losers are canceled and must return.
func noLeak(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

func mustHedge(t testing.TB, cfg HedgeConfig) *Hedge {
	t.Helper()
	h, err := NewHedge(cfg)
	if err != nil {
		t.Fatalf("NewHedge(%+v) = %v", cfg, err)
	}
	return h
}

func TestNewHedgeRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  HedgeConfig
		want string
	}{
		{"negative attempts", HedgeConfig{MaxAttempts: -1}, "MaxAttempts -1"},
		{"negative delay", HedgeConfig{Delay: -1}, "negative hedge Delay"},
		{"negative min delay", HedgeConfig{MinDelay: -1}, "negative hedge MinDelay"},
		{"percentile 1", HedgeConfig{Percentile: 1}, "Percentile 1"},
		{"negative percentile", HedgeConfig{Percentile: -0.5}, "Percentile -0.5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewHedge(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewHedge(%+v) = %v, %v, want an error containing %q", tc.cfg, h, err, tc.want)
			}
		})
	}
}

func TestHedgeFastFirstAttemptIsAlone(t *testing.T) {
	noLeak(t)
	clk := bulwarktest.NewClock(time.Time{})
	rec := newRecorder()
	h := mustHedge(t, HedgeConfig{MaxAttempts: 3, Clock: clk, Observer: rec})
	var calls atomic.Int64
	if err := h.Do(context.Background(), func(context.Context) error { calls.Add(1); return nil }); err != nil {
		t.Fatalf("Do = %v, want nil", err)
	}
	if calls.Load() != 1 || len(rec.kinds(bulwark.EventHedge)) != 0 {
		t.Errorf("calls = %d, hedge events = %d, want 1 and 0", calls.Load(), len(rec.kinds(bulwark.EventHedge)))
	}
	if n := clk.Timers(); n != 0 {
		t.Errorf("Timers() = %d after Do, want 0 (timer stopped)", n)
	}
}

// A slow first attempt gets a hedge after Delay; the hedge's success is
// returned and the first attempt is canceled.
func TestHedgeCancelsLosers(t *testing.T) {
	noLeak(t)
	clk := bulwarktest.NewClock(time.Time{})
	rec := newRecorder()
	h := mustHedge(t, HedgeConfig{MaxAttempts: 3, Delay: 50 * time.Millisecond, Clock: clk, Observer: rec})
	canceled := make(chan error, 3)
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- h.Do(context.Background(), func(ctx context.Context) error {
			switch Attempt(ctx) {
			case 1, 2: // slow: wait for cancellation
				<-ctx.Done()
				canceled <- ctx.Err()
				return ctx.Err()
			default:
				<-release
				return nil
			}
		})
	}()
	for range 2 {
		if err := clk.BlockUntil(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(50 * time.Millisecond)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Do = %v, want nil", err)
	}
	// Do waited for the losers: both have returned already.
	if n := len(canceled); n != 2 {
		t.Fatalf("%d of 2 losers had returned when Do returned, want both", n)
	}
	for i := range 2 {
		if err := <-canceled; !errors.Is(err, context.Canceled) {
			t.Errorf("loser %d saw %v, want context.Canceled", i, err)
		}
	}
	hedges := rec.kinds(bulwark.EventHedge)
	if len(hedges) != 2 || hedges[0].Attempt != 2 || hedges[1].Attempt != 3 || hedges[0].Delay != 50*time.Millisecond {
		t.Errorf("hedge events = %+v, want attempts 2 and 3 after 50ms", hedges)
	}
}

func TestHedgeFailureStartsNextAtOnce(t *testing.T) {
	noLeak(t)
	clk := bulwarktest.NewClock(time.Time{})
	h := mustHedge(t, HedgeConfig{MaxAttempts: 3, Delay: time.Hour, Clock: clk})
	var calls atomic.Int64
	err := h.Do(context.Background(), func(ctx context.Context) error {
		calls.Add(1)
		if Attempt(ctx) < 3 {
			return errFlaky
		}
		return nil
	})
	if err != nil || calls.Load() != 3 {
		t.Errorf("Do = %v after %d calls, want nil after 3 without the clock moving", err, calls.Load())
	}
}

func TestHedgeGivesUp(t *testing.T) {
	errBad := errors.New("bad")
	cases := []struct {
		name       string
		max        int
		op         func(ctx context.Context) error
		wantReason error
		wantErr    error
		wantCalls  int64
	}{
		{"all fail", 3, func(context.Context) error { return errFlaky }, ErrAttempts, errFlaky, 3},
		{"permanent", 3, func(context.Context) error { return bulwark.Permanent(errBad) }, ErrNotRetryable, errBad, 1},
		{"pushback", 3, func(context.Context) error { return waitErr{time.Second} }, ErrRetryAfter, waitErr{time.Second}, 1},
		{"no hedging", 1, func(context.Context) error { return errFlaky }, ErrAttempts, errFlaky, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			noLeak(t)
			h := mustHedge(t, HedgeConfig{MaxAttempts: tc.max, Clock: bulwarktest.NewClock(time.Time{})})
			var calls atomic.Int64
			err := h.Do(context.Background(), func(ctx context.Context) error { calls.Add(1); return tc.op(ctx) })
			var g *GiveUpError
			if !errors.As(err, &g) || g.Reason != tc.wantReason || !errors.Is(err, tc.wantErr) || calls.Load() != tc.wantCalls {
				t.Errorf("Do = %v after %d calls, want reason %v wrapping %v after %d", err, calls.Load(), tc.wantReason, tc.wantErr, tc.wantCalls)
			}
		})
	}
}

func TestHedgeRespectsBudget(t *testing.T) {
	noLeak(t)
	clk := bulwarktest.NewClock(time.Time{})
	// No ratio to speak of and a minimum of exactly one retry per window.
	budget := mustBudget(t, BudgetConfig{Ratio: 1e-9, MinPerSecond: 0.1, Window: 10 * time.Second, Clock: clk})
	rec := newRecorder()
	refused := make(chan bulwark.Event, 1)
	obs := bulwark.ObserverFunc(func(e bulwark.Event) {
		rec.Observe(e)
		if e.Kind == bulwark.EventBudgetExhausted {
			refused <- e
		}
	})
	h := mustHedge(t, HedgeConfig{MaxAttempts: 4, Delay: time.Second, Budget: budget, Clock: clk, Observer: obs})
	started := make(chan int, 4)
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- h.Do(context.Background(), func(ctx context.Context) error {
			started <- Attempt(ctx)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	// The first hedge is paid for; the second is refused, and then no
	// timer is left.
	if got := <-started; got != 1 {
		t.Fatalf("first attempt = %d, want 1", got)
	}
	for i := range 2 {
		if err := clk.BlockUntil(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		if i == 0 {
			if got := <-started; got != 2 {
				t.Fatalf("hedged attempt = %d, want 2", got)
			}
		}
	}
	if e := <-refused; e.Attempt != 3 {
		t.Errorf("budget refused attempt %d, want 3", e.Attempt)
	}
	if n := clk.Timers(); n != 0 {
		t.Errorf("%d timers after the budget refused a hedge, want none", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Do = %v, want nil", err)
	}
	if n := len(started); n != 0 {
		t.Errorf("%d attempts beyond the 2 the budget allows", n)
	}
	if e := rec.kinds(bulwark.EventBudgetExhausted); len(e) != 1 || e[0].Attempt != 3 {
		t.Errorf("budget events = %+v, want one for attempt 3", e)
	}
}

func TestHedgeCallerCancel(t *testing.T) {
	noLeak(t)
	h := mustHedge(t, HedgeConfig{Clock: bulwarktest.NewClock(time.Time{})})
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- h.Do(ctx, func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Do = %v, want context.Canceled", err)
	}
}

// With Percentile set, the hedge delay follows the observed latencies.
func TestHedgeTracksPercentile(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	h := mustHedge(t, HedgeConfig{Percentile: 0.95, Delay: time.Second, Clock: clk})
	if got := h.currentDelay(); got != time.Second {
		t.Errorf("currentDelay() with no samples = %v, want the initial 1s", got)
	}
	// Latencies 1..100 ms, uniformly: p95 is 95 ms.
	for i := range 1000 {
		h.record(time.Duration(i%100+1) * time.Millisecond)
	}
	got := h.currentDelay()
	if got < 95*time.Millisecond || got > 95*time.Millisecond*1125/1000 {
		t.Errorf("currentDelay() after 1..100ms = %v, want within 12.5%% above 95ms", got)
	}
	// Latencies rise tenfold: the percentile follows as old counts decay.
	for i := range 20000 {
		h.record(time.Duration(i%100+1) * 10 * time.Millisecond)
	}
	got = h.currentDelay()
	if got < 900*time.Millisecond || got > 1070*time.Millisecond {
		t.Errorf("currentDelay() after 10..1000ms = %v, want about 950ms", got)
	}
}

func TestLatencyBuckets(t *testing.T) {
	for _, d := range []time.Duration{1, 2, 7, 8, 9, 15, 16, 17, 1000, 123456789, time.Hour, 1<<63 - 1} {
		i := bucketOf(d)
		prev := i - 1
		if prev == 3<<3-1 { // indices 8..23 are unused: 1..7 are exact
			prev = 7
		}
		if top := bucketTop(i); top < d || (prev > 0 && bucketTop(prev) >= d) {
			t.Errorf("bucketOf(%d) = %d with top %d (previous top %d), want d within the bucket", d, i, top, bucketTop(prev))
		}
	}
}

func TestHedgeConcurrentSafe(t *testing.T) {
	noLeak(t)
	budget := mustBudget(t, BudgetConfig{})
	h := mustHedge(t, HedgeConfig{MaxAttempts: 3, Percentile: 0.9, Delay: time.Microsecond, MinDelay: time.Microsecond, Budget: budget})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				_, err := bulwark.Call(context.Background(), h, func(ctx context.Context) (int, error) {
					if (g+i)%5 == 0 && Attempt(ctx) == 1 {
						return 0, errFlaky
					}
					return Attempt(ctx), nil
				})
				if err != nil && !(errors.Is(err, ErrBudget) && errors.Is(err, errFlaky)) {
					t.Errorf("Do = %v, want nil or a budget refusal after errFlaky", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// onCallersGoroutine reports whether the function named fn is on the calling
// goroutine's stack: an op that Do runs on the goroutine that called it sees
// its caller there.
func onCallersGoroutine(fn string) bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, "."+fn) {
			return true
		}
		if !more {
			return false
		}
	}
}

// The first attempt runs on the caller's goroutine, and a call that no hedge
// joins starts no goroutine and leaves no timer.
func TestHedgeFirstAttemptRunsOnCallersGoroutine(t *testing.T) {
	noLeak(t)
	clk := bulwarktest.NewClock(time.Time{})
	h := mustHedge(t, HedgeConfig{MaxAttempts: 3, Delay: time.Second, Clock: clk})
	var first, hedged bool
	err := h.Do(context.Background(), func(ctx context.Context) error {
		first = onCallersGoroutine("TestHedgeFirstAttemptRunsOnCallersGoroutine")
		return nil
	})
	if err != nil || !first {
		t.Errorf("Do = %v, first attempt on the caller's goroutine: %v; want nil, true", err, first)
	}
	if n := clk.Timers(); n != 0 {
		t.Errorf("Timers() = %d after Do, want 0", n)
	}
	// A hedge runs on a goroutine of its own.
	release := make(chan struct{})
	go func() {
		_ = clk.BlockUntil(context.Background(), 1)
		clk.Advance(time.Second)
	}()
	err = h.Do(context.Background(), func(ctx context.Context) error {
		if Attempt(ctx) == 1 {
			<-ctx.Done()
			close(release)
			return ctx.Err()
		}
		hedged = !onCallersGoroutine("TestHedgeFirstAttemptRunsOnCallersGoroutine")
		return nil
	})
	<-release
	if err != nil || !hedged {
		t.Errorf("Do = %v, hedge on a goroutine of its own: %v; want nil, true", err, hedged)
	}
}

// lazyCancel makes its cancelable context only when asked, and behaves as
// context.WithCancel's either way.
func TestLazyCancel(t *testing.T) {
	type key struct{}
	parent := context.WithValue(context.Background(), key{}, "v")
	t.Run("canceled before anyone looked", func(t *testing.T) {
		c := &lazyCancel{Context: parent}
		if c.Err() != nil || c.scope.Load() != nil {
			t.Fatalf("new lazyCancel: Err() = %v, made its context: %v; want nil, false", c.Err(), c.scope.Load() != nil)
		}
		c.cancel()
		if !errors.Is(c.Err(), context.Canceled) || c.Value(key{}) != "v" {
			t.Errorf("after cancel: Err() = %v, Value = %v; want context.Canceled, v", c.Err(), c.Value(key{}))
		}
		select {
		case <-c.Done():
		default:
			t.Error("Done() not closed after cancel")
		}
	})
	t.Run("derived contexts follow it", func(t *testing.T) {
		c := &lazyCancel{Context: parent}
		child, stop := context.WithCancel(c)
		defer stop()
		fired := make(chan struct{})
		context.AfterFunc(c, func() { close(fired) })
		c.cancel()
		<-child.Done()
		<-fired
		if !errors.Is(child.Err(), context.Canceled) || child.Value(key{}) != "v" {
			t.Errorf("child: Err() = %v, Value = %v; want context.Canceled, v", child.Err(), child.Value(key{}))
		}
	})
	t.Run("parent canceled", func(t *testing.T) {
		p, cancel := context.WithCancel(parent)
		c := &lazyCancel{Context: p}
		cancel()
		if !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("Err() with the parent canceled = %v, want context.Canceled", c.Err())
		}
		<-c.Done()
		c.release()
	})
}

// A first attempt that panics while a hedge runs ends the call: the hedge is
// canceled and waited for, and the panic reaches the caller.
func TestHedgeFirstAttemptPanics(t *testing.T) {
	noLeak(t)
	clk := bulwarktest.NewClock(time.Time{})
	h := mustHedge(t, HedgeConfig{Delay: time.Second, Clock: clk})
	hedgeStarted := make(chan struct{})
	hedgeEnded := make(chan error, 1)
	go func() {
		_ = clk.BlockUntil(context.Background(), 1)
		clk.Advance(time.Second)
	}()
	defer func() {
		if r := recover(); r != "boom" {
			t.Errorf("recovered %v, want the attempt's panic", r)
		}
		select {
		case err := <-hedgeEnded:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("hedge ended with %v, want context.Canceled", err)
			}
		default:
			t.Error("the panic reached the caller before the hedge returned")
		}
	}()
	_ = h.Do(context.Background(), func(ctx context.Context) error {
		if Attempt(ctx) == 2 {
			close(hedgeStarted)
			<-ctx.Done()
			hedgeEnded <- ctx.Err()
			return ctx.Err()
		}
		<-hedgeStarted
		panic("boom")
	})
	t.Error("Do returned, want a panic")
}
