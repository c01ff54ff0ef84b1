package timeout_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/timeout"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newPolicy(t *testing.T, cfg timeout.Config) (*timeout.Policy, *bulwarktest.Clock) {
	t.Helper()
	clk := bulwarktest.NewClock(t0)
	if cfg.Clock == nil {
		cfg.Clock = clk
	}
	p, err := timeout.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, clk
}

func TestNewInvalidConfig(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		if _, err := timeout.New(timeout.Config{Timeout: d}); !errors.Is(err, timeout.ErrInvalidConfig) {
			t.Errorf("New(Timeout %v) = %v, want ErrInvalidConfig", d, err)
		}
	}
}

// blockUntilDone is an op that honours its context.
func blockUntilDone(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// On the fake clock, a call that overruns fails with an *Error matching
// ErrTimeout and context.DeadlineExceeded; its context, and contexts derived
// from it, report context.DeadlineExceeded, so that a breaker or retry
// inside counts a failure; its cause is ErrTimeout.
func TestTimeoutOnClock(t *testing.T) {
	p, clk := newPolicy(t, timeout.Config{Name: "inventory", Timeout: 2 * time.Second})
	type seen struct {
		deadline        time.Time
		err, child, cse error
		outcome         bulwark.Outcome
	}
	got := make(chan seen, 1)
	done := make(chan error, 1)
	go func() {
		done <- p.Do(context.Background(), func(ctx context.Context) error {
			dl, _ := ctx.Deadline()
			child, cancel := context.WithCancel(ctx)
			defer cancel()
			err := blockUntilDone(ctx)
			<-child.Done()
			got <- seen{dl, err, child.Err(), context.Cause(ctx), bulwark.Classify(ctx, err)}
			return err
		})
	}()
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	err := <-done
	s := <-got
	if want := t0.Add(2 * time.Second); !s.deadline.Equal(want) {
		t.Errorf("op's deadline = %v, want %v", s.deadline, want)
	}
	if s.err != context.DeadlineExceeded || s.child != context.DeadlineExceeded {
		t.Errorf("op's ctx.Err() = %v, a derived context's = %v; want context.DeadlineExceeded for both", s.err, s.child)
	}
	if s.cse != timeout.ErrTimeout {
		t.Errorf("context.Cause = %v, want ErrTimeout", s.cse)
	}
	if s.outcome != bulwark.Failure {
		t.Errorf("Classify inside the op = %v, want failure", s.outcome)
	}
	checkTimeoutError(t, err, "timeout: call timed out after 2s (inventory): context deadline exceeded")
}

func checkTimeoutError(t *testing.T, err error, msg string) {
	t.Helper()
	var te *timeout.Error
	if !errors.As(err, &te) || !errors.Is(err, timeout.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do = %v, want a *timeout.Error matching ErrTimeout and context.DeadlineExceeded", err)
	}
	if msg != "" && err.Error() != msg {
		t.Errorf("Error() = %q, want %q", err.Error(), msg)
	}
	if o := bulwark.Classify(context.Background(), err); o != bulwark.Failure {
		t.Errorf("Classify(caller's ctx, %v) = %v, want failure", err, o)
	}
}

func TestTimeoutWallClock(t *testing.T) {
	p, err := timeout.New(timeout.Config{Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var inner error
	err = p.Do(context.Background(), func(ctx context.Context) error {
		inner = blockUntilDone(ctx)
		if c := context.Cause(ctx); c != timeout.ErrTimeout {
			t.Errorf("context.Cause = %v, want ErrTimeout", c)
		}
		return inner
	})
	if inner != context.DeadlineExceeded {
		t.Errorf("op's ctx.Err() = %v, want DeadlineExceeded", inner)
	}
	checkTimeoutError(t, err, "timeout: call timed out after 20ms: context deadline exceeded")
}

// A call that ends in time returns what op returned, with nothing added.
func TestInTime(t *testing.T) {
	p, _ := newPolicy(t, timeout.Config{Timeout: time.Second})
	boom := errors.New("boom")
	if err := p.Do(context.Background(), func(context.Context) error { return boom }); err != boom {
		t.Fatalf("Do = %v, want op's error as it is", err)
	}
	if err := p.Do(context.Background(), func(context.Context) error { return nil }); err != nil {
		t.Fatalf("Do = %v, want nil", err)
	}
}

// When the caller's deadline comes first, it is the caller's: Do gives op
// the caller's context and returns its error unwrapped.
func TestCallerDeadlineFirst(t *testing.T) {
	for _, wall := range []bool{false, true} {
		cfg := timeout.Config{Timeout: time.Hour}
		if wall {
			cfg.Clock = bulwark.WallClock()
		}
		p, clk := newPolicy(t, cfg)
		now := clk.Now()
		if wall {
			now = time.Now()
		}
		ctx, cancel := context.WithDeadline(context.Background(), now.Add(time.Minute))
		var got context.Context
		err := p.Do(ctx, func(c context.Context) error { got = c; return context.DeadlineExceeded })
		cancel()
		if got != ctx {
			t.Errorf("wall=%v: op got a context of the policy's, want the caller's (its deadline is earlier)", wall)
		}
		if errors.Is(err, timeout.ErrTimeout) {
			t.Errorf("wall=%v: Do = %v, want the caller's deadline error, not ErrTimeout", wall, err)
		}
	}
}

// A call canceled by its own caller is not a timeout: the error stays as it
// is and is neutral.
func TestCallerCancels(t *testing.T) {
	p, clk := newPolicy(t, timeout.Config{Timeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Do(ctx, blockUntilDone) }()
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	err := <-done
	if err != context.Canceled || bulwark.Classify(ctx, err) != bulwark.Neutral {
		t.Fatalf("Do canceled by the caller = %v, want context.Canceled (neutral)", err)
	}
	if n := clk.Timers(); n != 0 {
		t.Fatalf("%d timers left after Do returned", n)
	}
}

// An op that ignores its context keeps Do waiting: Do never returns while op
// runs. Late, an error is a timeout; a success is a success.
func TestOpIgnoresContext(t *testing.T) {
	p, clk := newPolicy(t, timeout.Config{Timeout: time.Second})
	for _, result := range []error{errors.New("late failure"), nil} {
		release := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- p.Do(context.Background(), func(context.Context) error { <-release; return result })
		}()
		if err := clk.BlockUntil(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Hour)
		select {
		case err := <-done:
			t.Fatalf("Do returned %v while op was still running", err)
		default:
		}
		close(release)
		err := <-done
		if result == nil {
			if err != nil {
				t.Fatalf("a late success: Do = %v, want nil", err)
			}
			continue
		}
		checkTimeoutError(t, err, "")
		if !errors.Is(err, result) {
			t.Fatalf("Do = %v, want it to wrap op's error", err)
		}
	}
}

// Inside a retry, each attempt has its own deadline; outside, one deadline
// bounds every attempt.
func TestInsideAndOutsideRetry(t *testing.T) {
	p, clk := newPolicy(t, timeout.Config{Timeout: time.Second})
	var deadlines []time.Time
	op := func(ctx context.Context) error {
		dl, _ := ctx.Deadline()
		deadlines = append(deadlines, dl)
		clk.Advance(400 * time.Millisecond)
		return errors.New("unavailable")
	}
	retry := bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		var err error
		for range 3 {
			if err = op(ctx); ctx.Err() != nil {
				return err
			}
		}
		return err
	})
	_ = bulwark.Compose(retry, p).Do(context.Background(), op)
	if want := []time.Time{t0.Add(time.Second), t0.Add(1400 * time.Millisecond), t0.Add(1800 * time.Millisecond)}; !equalTimes(deadlines, want) {
		t.Errorf("inside: deadlines %v, want %v", deadlines, want)
	}
	deadlines = nil
	start := clk.Now()
	_ = bulwark.Compose(p, retry).Do(context.Background(), op)
	if want := []time.Time{start.Add(time.Second), start.Add(time.Second), start.Add(time.Second)}; !equalTimes(deadlines, want) {
		t.Errorf("outside: deadlines %v, want %v", deadlines, want)
	}
}

func equalTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

type recorder struct {
	mu  sync.Mutex
	evs []bulwark.Event
}

func (r *recorder) Observe(e bulwark.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func TestEvents(t *testing.T) {
	rec := &recorder{}
	p, clk := newPolicy(t, timeout.Config{Name: "db", Timeout: time.Second, Observer: rec})
	_ = p.Do(context.Background(), func(context.Context) error { clk.Advance(300 * time.Millisecond); return nil })
	done := make(chan error, 1)
	go func() { done <- p.Do(context.Background(), blockUntilDone) }()
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	<-done
	if len(rec.evs) != 2 {
		t.Fatalf("%d events, want 2", len(rec.evs))
	}
	ok, late := rec.evs[0], rec.evs[1]
	if ok.Kind != bulwark.EventCall || ok.Component != "timeout" || ok.Name != "db" || ok.Outcome != bulwark.Success ||
		ok.Latency != 300*time.Millisecond || ok.Reason != "" {
		t.Errorf("first event = %+v, want a successful call of 300ms", ok)
	}
	if late.Outcome != bulwark.Failure || late.Reason != "timeout" || late.Latency != time.Second || !errors.Is(late.Err, timeout.ErrTimeout) {
		t.Errorf("second event = %+v, want a failed call, Reason timeout, Latency 1s", late)
	}
}

// Many calls at once on one Policy while the clock moves: each ends in time
// or times out, never anything else, and no timer is left behind.
func TestPolicyConcurrentSafe(t *testing.T) {
	p, clk := newPolicy(t, timeout.Config{Timeout: 10 * time.Millisecond})
	const calls = 64
	var quick, wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := range calls {
		g := &wg
		if i%2 == 0 {
			g = &quick
		}
		g.Go(func() {
			errs <- p.Do(context.Background(), func(ctx context.Context) error {
				if i%2 == 0 {
					return nil
				}
				return blockUntilDone(ctx)
			})
		})
	}
	// The quick calls' timers come and go: once they have all returned,
	// the timers left are the waiting calls', and the clock moves only
	// when every one of those has its timer (else a call whose timer
	// came after the move would wait forever).
	quick.Wait()
	if err := clk.BlockUntil(context.Background(), calls/2); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Millisecond)
	wg.Wait()
	close(errs)
	timeouts := 0
	for err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, timeout.ErrTimeout):
			timeouts++
		default:
			t.Errorf("Do = %v", err)
		}
	}
	if timeouts != calls/2 {
		t.Errorf("%d timeouts, want %d", timeouts, calls/2)
	}
	if n := clk.Timers(); n != 0 {
		t.Errorf("%d timers left", n)
	}
}

// A context derived from the call's, on an injected clock, learns of the
// timeout through AfterFunc; when that callback ran before the call's Done
// channel was closed, the derived context read a nil Err and the context
// package panicked ("missing cancel error"), killing the process about once
// in a thousand runs of this package under make stress. Many derived
// contexts, expiring at once on both cores, make that window likely.
func TestDerivedContextsSeeTheTimeoutConcurrentSafe(t *testing.T) {
	p, clk := newPolicy(t, timeout.Config{Timeout: time.Second})
	const calls, children = 200, 8
	for range calls {
		err := p.Do(context.Background(), func(ctx context.Context) error {
			var kids [children]context.Context
			for i := range kids {
				var cancel context.CancelFunc
				kids[i], cancel = context.WithCancel(ctx)
				defer cancel()
			}
			clk.Advance(time.Second)
			for _, k := range kids {
				<-k.Done()
				if !errors.Is(k.Err(), context.DeadlineExceeded) || context.Cause(k) != timeout.ErrTimeout {
					t.Errorf("derived context: Err %v, Cause %v; want DeadlineExceeded, ErrTimeout", k.Err(), context.Cause(k))
				}
			}
			return ctx.Err()
		})
		checkTimeoutError(t, err, "")
	}
}
