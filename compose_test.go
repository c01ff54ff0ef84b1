package bulwark_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/retry"
)

var errDown = errors.New("connection refused")

// A failing dependency behind a retry policy and a hedge that share one
// budget sees at most (1 + ratio) × the logical requests plus the budget's
// reserve, in either order of the layers: the composed call deposits once.
// (With a deposit in every layer, Compose(retry, hedge) made about 2 × the
// requests and Compose(hedge, retry) about 1.6 ×.)
func TestSimulationComposeCountsALogicalRequestOnce(t *testing.T) {
	const (
		requests = 1000
		ratio    = 0.2
		reserve  = 10 // MinPerSecond × Window
	)
	orders := []struct {
		name    string
		compose func(rp *retry.Policy, h *retry.Hedge) bulwark.Policy
	}{
		{"Compose(retry, hedge)", func(rp *retry.Policy, h *retry.Hedge) bulwark.Policy { return bulwark.Compose(rp, h) }},
		{"Compose(hedge, retry)", func(rp *retry.Policy, h *retry.Hedge) bulwark.Policy { return bulwark.Compose(h, rp) }},
		{"Compose(retry, another layer, hedge)", func(rp *retry.Policy, h *retry.Hedge) bulwark.Policy {
			return bulwark.Compose(rp, bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error { return op(ctx) }), h)
		}},
	}
	for _, o := range orders {
		t.Run(o.name, func(t *testing.T) {
			clk := bulwarktest.NewClock(time.Time{}) // never advanced: no decay, no refill
			budget, err := retry.NewBudget(retry.BudgetConfig{Ratio: ratio, MinPerSecond: reserve / 10.0, Window: 10 * time.Second, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			rp, err := retry.New(retry.Config{MaxAttempts: 4, Budget: budget, Clock: clk,
				Delay: func(int, time.Duration, error) time.Duration { return 0 }})
			if err != nil {
				t.Fatal(err)
			}
			h, err := retry.NewHedge(retry.HedgeConfig{MaxAttempts: 2, Delay: time.Hour, Budget: budget, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			p := o.compose(rp, h)
			calls := 0
			for range requests {
				err := p.Do(context.Background(), func(context.Context) error { calls++; return errDown })
				if !errors.Is(err, errDown) {
					t.Fatalf("Do = %v, want the dependency's error", err)
				}
			}
			limit := int((1+ratio)*requests) + reserve
			t.Logf("%s: %d calls for %d requests (limit %d)", o.name, calls, requests, limit)
			if calls > limit {
				t.Errorf("%d requests made %d calls to a failing dependency, want at most (1 + %v) × %d + %d = %d",
					requests, calls, ratio, requests, reserve, limit)
			}
			if calls < requests+reserve {
				t.Errorf("%d requests made %d calls, want at least the requests and the reserve (%d): the layers must still retry", requests, calls, requests+reserve)
			}
		})
	}
}

// quickStart returns the README's quick-start guard, on clk (nil: the wall
// clock), and its breaker.
func quickStart(t *testing.T, clk bulwark.Clock) (bulwark.Policy, *breaker.Breaker) {
	t.Helper()
	budget, err := retry.NewBudget(retry.BudgetConfig{Clock: clk}) // 20 % of requests + 10/s
	if err != nil {
		t.Fatal(err)
	}
	rp, err := retry.New(retry.Config{MaxAttempts: 4, Budget: budget, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := breaker.New(breaker.Config{FailureRate: 0.5, WindowCalls: 100, OpenDuration: 5 * time.Second, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return bulwark.Compose(rp, cb), cb
}

type charge struct{ ID string }

// waitsOnClock reports whether a timer is armed on clk before done holds a
// result; it leaves that result in done.
func waitsOnClock(clk *bulwarktest.Clock, done chan error) bool {
	watch, stop := context.WithCancel(context.Background())
	defer stop()
	waiting := make(chan struct{})
	go func() {
		if clk.BlockUntil(watch, 1) == nil {
			close(waiting)
		}
	}()
	select {
	case err := <-done:
		done <- err
		return false
	case <-waiting:
		return true
	}
}

func chargeDead(context.Context) (charge, error) { return charge{}, errDown }

// The README's quick start against a dead dependency: once the breaker is
// open, each call fails at once with the breaker's refusal, without waiting
// on the clock.
func TestQuickStartFailsFastOnDeadDependency(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	guard, cb := quickStart(t, clk)
	ctx := context.Background()

	// Until the breaker opens, calls fail and are retried after backoffs:
	// let the clock run for them.
	for i := 0; cb.State() != breaker.Open; i++ {
		if i == 100 {
			t.Fatalf("breaker still %v after %d calls to a dead dependency", cb.State(), i)
		}
		done := make(chan error, 1)
		go func() { _, err := bulwark.Call(ctx, guard, chargeDead); done <- err }()
		for waited := true; waited; {
			if waited = waitsOnClock(clk, done); waited {
				clk.Advance(time.Second) // past any backoff of four attempts
			}
		}
	}

	start := clk.Now()
	for i := range 100 {
		done := make(chan error, 1)
		go func() { _, err := bulwark.Call(ctx, guard, chargeDead); done <- err }()
		if waitsOnClock(clk, done) {
			t.Fatalf("call %d with the breaker open waits on the clock (%d timers), want it to fail at once", i, clk.Timers())
		}
		if err := <-done; !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("call %d with the breaker open = %v, want the breaker's refusal", i, err)
		}
	}
	if clk.Now() != start {
		t.Errorf("the clock moved while the breaker was open")
	}
	if n := clk.Timers(); n != 0 {
		t.Errorf("%d timers armed after the calls, want 0", n)
	}
}

// The same on the wall clock: 100 calls of the quick start against a dead
// dependency whose breaker is open take well under a second.
func TestQuickStartFailsFastOnWallClock(t *testing.T) {
	guard, cb := quickStart(t, nil)
	ctx := context.Background()
	for cb.State() != breaker.Open { // trip it without waiting for backoffs
		_ = cb.Do(ctx, func(context.Context) error { return errDown })
	}
	start := time.Now()
	for i := range 100 {
		if _, err := bulwark.Call(ctx, guard, chargeDead); !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("call %d = %v, want the breaker's refusal", i, err)
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("100 calls with the breaker open took %v, want well under 1s", took)
	}
}

// Call keeps its frame on the stack for a breaker or a retry policy: the
// value must survive the goroutine's stack growing and being shrunk while op
// runs.
func TestCallFrameSurvivesStackMoves(t *testing.T) {
	cb, err := breaker.New(breaker.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rp, err := retry.New(retry.Config{MaxAttempts: 3, Delay: func(int, time.Duration, error) time.Duration { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	var deep func(n int) int
	deep = func(n int) int {
		var pad [256]byte
		if n == 0 {
			return int(pad[0]) + 1
		}
		return deep(n-1) + int(pad[n%256])
	}
	for _, p := range []bulwark.Policy{cb, rp} {
		_, retries := p.(*retry.Policy)
		t.Run(fmt.Sprintf("%T", p), func(t *testing.T) {
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 20 {
						want := fmt.Sprint("value ", g, i)
						attempt := 0
						got, err := bulwark.Call(context.Background(), p, func(ctx context.Context) (string, error) {
							attempt++
							_ = deep(2000) // grows the stack past its start
							runtime.GC()   // may shrink stacks
							if retries && attempt == 1 && i%2 == 0 {
								return "", errDown // the retry policy tries again
							}
							return want, nil
						})
						if err != nil || got != want {
							t.Errorf("Call = %q, %v, want %q", got, err, want)
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// A layer that runs op under a context not derived from its own breaks the
// composition's contract: the call gets a permanent error, not a crash.
func TestComposeLayerLosesTheContext(t *testing.T) {
	rude := bulwark.PolicyFunc(func(_ context.Context, op func(context.Context) error) error {
		return op(context.Background())
	})
	ran := false
	p := bulwark.Compose(rude, bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error { return op(ctx) }))
	err := p.Do(context.Background(), func(context.Context) error { ran = true; return nil })
	if err == nil || !bulwark.IsPermanent(err) || ran {
		t.Errorf("Do through a layer that dropped the context = %v (op ran: %v), want a permanent error and op not run", err, ran)
	}
}

func TestComposeFlattens(t *testing.T) {
	var log []string
	inner := bulwark.Compose(recorder{"b", &log}, recorder{"c", &log})
	p := bulwark.Compose(recorder{"a", &log}, inner)
	if err := p.Do(context.Background(), func(context.Context) error { log = append(log, "op"); return nil }); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(log), "[a> b> c> op <c <b <a]"; got != want {
		t.Errorf("Compose(a, Compose(b, c)) ran %v, want %v", got, want)
	}
}

// Two different composed policies nested by hand, each with its own frame,
// find their own frames.
func TestComposeNestedByHand(t *testing.T) {
	var log []string
	inner := bulwark.Compose(recorder{"x", &log}, recorder{"y", &log})
	outer := bulwark.Compose(recorder{"a", &log}, bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		return inner.Do(ctx, op) // runs outer's next step inside inner's frame
	}), recorder{"b", &log})
	if err := outer.Do(context.Background(), func(context.Context) error { log = append(log, "op"); return nil }); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(log), "[a> x> y> b> op <b <y <x <a]"; got != want {
		t.Errorf("ran %v, want %v", got, want)
	}
}

// Many goroutines through a composition of all three, with hedges firing and
// attempts failing: the race detector and the values returned check it.
func TestComposeConcurrentSafe(t *testing.T) {
	budget, err := retry.NewBudget(retry.BudgetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	rp, err := retry.New(retry.Config{MaxAttempts: 3, Budget: budget, Delay: func(int, time.Duration, error) time.Duration { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	h, err := retry.NewHedge(retry.HedgeConfig{MaxAttempts: 2, Delay: 20 * time.Microsecond, Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := breaker.New(breaker.Config{FailureRate: 0.9, WindowCalls: 1000, MinCalls: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []bulwark.Policy{bulwark.Compose(rp, h, cb), bulwark.Compose(h, rp, cb), bulwark.Compose(cb, rp)} {
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 200 {
					want := g*1000 + i
					got, err := bulwark.Call(context.Background(), p, func(ctx context.Context) (int, error) {
						if i%3 == 0 && retry.Attempt(ctx) == 1 {
							return 0, errDown
						}
						if i%5 == 0 {
							time.Sleep(50 * time.Microsecond) // slower than the hedge delay: a hedge starts
						}
						return want, nil
					})
					if err != nil && !errors.Is(err, errDown) {
						t.Errorf("Call = %v, want nil or the dependency's error", err)
						return
					}
					if err == nil && got != want {
						t.Errorf("Call = %d, want %d", got, want)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
}
