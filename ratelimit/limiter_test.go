package ratelimit_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/ratelimit"
)

func TestNewInvalidConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  ratelimit.Config
	}{
		{"no rate", ratelimit.Config{}},
		{"negative rate", ratelimit.Config{Rate: -1}},
		{"negative period", ratelimit.Config{Rate: 1, Period: -time.Second}},
		{"negative burst", ratelimit.Config{Rate: 1, Burst: -1}},
		{"negative max wait", ratelimit.Config{Rate: 1, MaxWait: -1}},
		{"above one per ns", ratelimit.Config{Rate: 2, Period: time.Nanosecond}},
		{"burst too long to refill", ratelimit.Config{Rate: 1, Period: time.Hour, Burst: math.MaxInt32}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ratelimit.New(tt.cfg)
			if !errors.Is(err, ratelimit.ErrInvalidConfig) {
				t.Fatalf("New(%+v) = %v, %v; want an error wrapping ErrInvalidConfig", tt.cfg, l, err)
			}
		})
	}
}

// The bucket starts full, refills one token per Period/Rate and never holds
// more than Burst.
func TestLimiterTokenBucket(t *testing.T) {
	l, clk := newLimiter(t, ratelimit.Config{Rate: 10, Burst: 5})
	count := func() int {
		n := 0
		for l.Allow() {
			n++
		}
		return n
	}
	if n := count(); n != 5 {
		t.Fatalf("a full bucket allowed %d, want Burst 5", n)
	}
	clk.Advance(99 * time.Millisecond)
	if n := count(); n != 0 {
		t.Fatalf("after 99ms, allowed %d, want 0 (a token takes 100ms)", n)
	}
	clk.Advance(time.Millisecond)
	if n := count(); n != 1 {
		t.Fatalf("after 100ms, allowed %d, want 1", n)
	}
	clk.Advance(250 * time.Millisecond)
	if n := count(); n != 2 {
		t.Fatalf("after 250ms more, allowed %d, want 2", n)
	}
	clk.Advance(time.Hour)
	if n := count(); n != 5 {
		t.Fatalf("after an hour, allowed %d, want Burst 5 (the bucket holds no more)", n)
	}
}

func TestLimiterDefaults(t *testing.T) {
	l, clk := newLimiter(t, ratelimit.Config{Rate: 3})
	r := l.AllowN(clk.Now(), 0)
	if !r.Allowed || r.Limit != 3 || r.Remaining != 3 || r.Reset != 0 {
		t.Fatalf("AllowN(now, 0) on a fresh limiter = %+v, want allowed with Limit = Remaining = 3 (Burst defaults to Rate), Reset 0", r)
	}
	r = l.AllowN(clk.Now(), 3)
	if !r.Allowed || r.Remaining != 0 {
		t.Fatalf("AllowN(now, 3) = %+v, want allowed, 0 remaining", r)
	}
	// Period defaults to 1 s, and the interval is rounded up: 333333334 ns.
	clk.Advance(333333333 * time.Nanosecond)
	if l.Allow() {
		t.Fatal("Allow() one ns before the token is due = true")
	}
	clk.Advance(time.Nanosecond)
	if !l.Allow() {
		t.Fatal("Allow() when the token is due = false")
	}
}

func TestAllowNResult(t *testing.T) {
	l, clk := newLimiter(t, ratelimit.Config{Rate: 10, Burst: 4})
	now := clk.Now()
	for _, tt := range []struct {
		name string
		at   time.Duration
		n    int
		want ratelimit.Result
	}{
		{"take 3 of 4", 0, 3, ratelimit.Result{Allowed: true, Limit: 4, Remaining: 1, Reset: 300 * time.Millisecond}},
		{"2 more do not fit", 0, 2, ratelimit.Result{Limit: 4, Remaining: 1, RetryAfter: 100 * time.Millisecond, Reset: 300 * time.Millisecond}},
		{"nothing taken on refusal", 0, 1, ratelimit.Result{Allowed: true, Limit: 4, Reset: 400 * time.Millisecond}},
		{"later, 2 fit", 200 * time.Millisecond, 2, ratelimit.Result{Allowed: true, Limit: 4, Reset: 400 * time.Millisecond}},
		{"more than burst never fits", time.Hour, 5, ratelimit.Result{Limit: 4, Remaining: 4, RetryAfter: time.Duration(math.MaxInt64)}},
		{"negative n takes nothing", time.Hour, -1, ratelimit.Result{Allowed: true, Limit: 4, Remaining: 4}},
	} {
		if got := l.AllowN(now.Add(tt.at), tt.n); got != tt.want {
			t.Errorf("%s: AllowN(+%v, %d) = %+v, want %+v", tt.name, tt.at, tt.n, got, tt.want)
		}
	}
}

// A refusal's RetryAfter is exact: at that time the same request passes,
// and a nanosecond earlier it does not.
func TestRetryAfterIsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	l, clk := newLimiter(t, ratelimit.Config{Rate: 7, Period: 3 * time.Second, Burst: 5})
	now := clk.Now()
	checked := 0
	for i := 0; i < 2000; i++ {
		now = now.Add(time.Duration(rng.Int64N(int64(time.Second))))
		n := 1 + rng.IntN(5)
		r := l.AllowN(now, n)
		if r.Allowed {
			continue
		}
		checked++
		if got := l.AllowN(now.Add(r.RetryAfter-1), n); got.Allowed {
			t.Fatalf("AllowN(now+RetryAfter-1ns, %d) allowed; RetryAfter %v is too long", n, r.RetryAfter)
		}
		now = now.Add(r.RetryAfter)
		if got := l.AllowN(now, n); !got.Allowed {
			t.Fatalf("AllowN(now+RetryAfter, %d) = %+v; RetryAfter %v is too short", n, got, r.RetryAfter)
		}
	}
	if checked < 100 {
		t.Fatalf("only %d refusals checked", checked)
	}
}

// However requests come, the tokens taken over any span of time t never
// exceed Burst + t / interval.
func TestLimiterNeverExceedsLimit(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		checkBound(t, seed, 50, 0)
	}
}

// checkBound drives a limiter with random arrivals and checks the bound over
// every prefix of the run that starts at a refusal-free point.
func checkBound(t *testing.T, seed uint64, ops int, _ int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	rate, burst := 1+rng.IntN(20), 1+rng.IntN(10)
	l, clk := newLimiter(t, ratelimit.Config{Rate: rate, Burst: burst})
	interval := (int64(time.Second) + int64(rate) - 1) / int64(rate)
	type take struct {
		at int64
		n  int
	}
	var taken []take
	now := clk.Now()
	for i := 0; i < ops; i++ {
		now = now.Add(time.Duration(rng.Int64N(2 * interval)))
		n := 1 + rng.IntN(burst)
		if l.AllowN(now, n).Allowed {
			taken = append(taken, take{int64(now.Sub(t0)), n})
		}
	}
	for i := range taken {
		sum := 0
		for j := i; j < len(taken); j++ {
			sum += taken[j].n
			span := taken[j].at - taken[i].at
			if limit := int64(burst) + span/interval; int64(sum) > limit {
				t.Fatalf("seed %d: %d tokens taken over %v, limit Burst %d + span/interval = %d", seed, sum, time.Duration(span), burst, limit)
			}
		}
	}
}

func TestWaitTakesWhenDue(t *testing.T) {
	l, clk := newLimiter(t, ratelimit.Config{Rate: 10, Burst: 1})
	if !l.Allow() {
		t.Fatal("first Allow() = false")
	}
	done := make(chan error, 1)
	go func() { done <- l.Wait(context.Background()) }()
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(99 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v before its token was due", err)
	default:
	}
	clk.Advance(time.Millisecond)
	if err := <-done; err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
	if l.Allow() {
		t.Fatal("Allow() right after Wait took the token = true")
	}
}

// Wait returns at once when the token would come after ctx's deadline.
func TestWaitNeverPastDeadline(t *testing.T) {
	l, clk := newLimiter(t, ratelimit.Config{Rate: 1, Burst: 1})
	l.Allow()
	ctx := deadlineCtx{context.Background(), clk.Now().Add(999 * time.Millisecond)}
	err := l.Wait(ctx)
	var le *ratelimit.LimitError
	if !errors.As(err, &le) || le.Reason != "deadline" || le.RetryAfter() != time.Second {
		t.Fatalf("Wait with 999ms left for a token due in 1s = %v, want a *LimitError, Reason deadline, RetryAfter 1s", err)
	}
	if !errors.Is(err, ratelimit.ErrLimited) {
		t.Fatalf("errors.Is(%v, ErrLimited) = false", err)
	}
	if n := clk.Timers(); n != 0 {
		t.Fatalf("Wait left %d timers: it waited", n)
	}
	// With just enough time, it waits and takes the token.
	ctx = deadlineCtx{context.Background(), clk.Now().Add(time.Second)}
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx) }()
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatalf("Wait with exactly 1s left = %v, want nil", err)
	}
}

// On the wall clock, a Wait that cannot end before the deadline returns at
// once instead of sleeping until the deadline.
func TestWaitDeadlineWallClock(t *testing.T) {
	l, err := ratelimit.New(ratelimit.Config{Rate: 1, Period: time.Hour, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	l.Allow()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err = l.Wait(ctx)
	if !errors.Is(err, ratelimit.ErrLimited) {
		t.Fatalf("Wait = %v, want ErrLimited", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("Wait took %v, want an immediate return", d)
	}
}

func TestWaitNMoreThanBurst(t *testing.T) {
	l, _ := newLimiter(t, ratelimit.Config{Rate: 10, Burst: 3})
	err := l.WaitN(context.Background(), 4)
	var le *ratelimit.LimitError
	if !errors.As(err, &le) || le.Reason != "burst" || le.Wait != time.Duration(math.MaxInt64) {
		t.Fatalf("WaitN(4) with Burst 3 = %v, want a *LimitError with Reason burst and the longest wait", err)
	}
}

// A Wait whose context ends gives its token back when nobody queued behind.
func TestWaitCanceledGivesTokenBack(t *testing.T) {
	l, clk := newLimiter(t, ratelimit.Config{Rate: 10, Burst: 1})
	l.Allow()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx) }()
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Wait = %v, want context.Canceled", err)
	}
	clk.Advance(100 * time.Millisecond)
	if !l.Allow() {
		t.Fatal("the canceled Wait's token was not given back")
	}
}

// A canceled Wait with a later one queued behind it keeps its tokens spent,
// so the limit is never exceeded.
func TestWaitCanceledBehindQueue(t *testing.T) {
	l, clk := newLimiter(t, ratelimit.Config{Rate: 10, Burst: 1})
	l.Allow()
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { first <- l.Wait(ctx) }()
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- l.Wait(context.Background()) }()
	if err := clk.BlockUntil(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-first
	clk.Advance(200 * time.Millisecond)
	if err := <-second; err != nil {
		t.Fatalf("second Wait = %v", err)
	}
	if l.Allow() {
		t.Fatal("Allow() at 200ms after two reservations = true; the limit was exceeded")
	}
}

func TestDo(t *testing.T) {
	rec := &recorder{}
	l, clk := newLimiter(t, ratelimit.Config{Name: "search", Rate: 2, Burst: 1, Observer: rec})
	ran := 0
	op := func(context.Context) error { ran++; return nil }
	if err := l.Do(context.Background(), op); err != nil || ran != 1 {
		t.Fatalf("first Do = %v (ran %d), want nil, 1", err, ran)
	}
	err := l.Do(context.Background(), op)
	var ra interface{ RetryAfter() time.Duration }
	if !errors.As(err, &ra) || ra.RetryAfter() != 500*time.Millisecond || ran != 1 {
		t.Fatalf("second Do = %v (ran %d), want a refusal with RetryAfter 500ms, op not run", err, ran)
	}
	if want := "ratelimit: rate limit exceeded (search, retry after 500ms)"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	evs := rec.events()
	if len(evs) != 1 || evs[0].Kind != bulwark.EventRejected || evs[0].Component != "ratelimit" || evs[0].Name != "search" ||
		evs[0].Reason != "rate" || evs[0].Delay != 500*time.Millisecond {
		t.Fatalf("events = %+v, want one EventRejected for search, Reason rate, Delay 500ms", evs)
	}
	clk.Advance(500 * time.Millisecond)
	if err := l.Do(context.Background(), op); err != nil || ran != 2 {
		t.Fatalf("Do after the wait = %v (ran %d)", err, ran)
	}
}

func TestDoMaxWait(t *testing.T) {
	l, clk := newLimiter(t, ratelimit.Config{Rate: 10, Burst: 1, MaxWait: 150 * time.Millisecond})
	l.Allow()
	l.Allow() // refused: the next token is due in 100ms
	done := make(chan error, 1)
	go func() { done <- l.Do(context.Background(), func(context.Context) error { return nil }) }()
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(100 * time.Millisecond)
	if err := <-done; err != nil {
		t.Fatalf("Do within MaxWait = %v, want nil", err)
	}
	// The next token is due in 100ms, the one after in 200ms > MaxWait.
	l.AllowN(clk.Now().Add(100*time.Millisecond), 1)
	err := l.Do(context.Background(), func(context.Context) error { t.Error("op ran"); return nil })
	var le *ratelimit.LimitError
	if !errors.As(err, &le) || le.Reason != "rate" || le.Wait != 200*time.Millisecond {
		t.Fatalf("Do beyond MaxWait = %v, want a *LimitError, Reason rate, Wait 200ms", err)
	}
}

func TestDoContextDone(t *testing.T) {
	l, _ := newLimiter(t, ratelimit.Config{Rate: 10})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Do(ctx, func(context.Context) error { t.Error("op ran"); return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do with a canceled context = %v, want context.Canceled", err)
	}
}

// A refusal's RetryAfter drives a retrying caller: composed outside the
// limiter, a retry waits exactly that long and then passes.
func TestComposeWithRetry(t *testing.T) {
	l, clk := newLimiter(t, ratelimit.Config{Rate: 4, Burst: 1})
	l.Allow()
	var waited []time.Duration
	retry := bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		for {
			err := op(ctx)
			var ra interface{ RetryAfter() time.Duration }
			if !errors.As(err, &ra) {
				return err
			}
			waited = append(waited, ra.RetryAfter())
			clk.Advance(ra.RetryAfter())
		}
	})
	if err := bulwark.Compose(retry, l).Do(context.Background(), func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if len(waited) != 1 || waited[0] != 250*time.Millisecond {
		t.Fatalf("waits = %v, want [250ms]", waited)
	}
}

func TestLimiterConcurrentSafe(t *testing.T) {
	l, clk := newLimiter(t, ratelimit.Config{Rate: 1000, Burst: 10})
	const workers, steps = 8, 200
	allowed := make([]int, workers)
	stop := make(chan struct{})
	progress := make(chan struct{}) // a worker made a round of calls
	done := make(chan struct{})
	for w := 0; w < workers; w++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for range 20 {
					if l.Allow() {
						allowed[w]++
					}
				}
				select {
				case progress <- struct{}{}:
				case <-stop:
				}
			}
		}()
	}
	for i := 0; i < steps; i++ {
		for range workers { // the workers call between steps
			<-progress
		}
		clk.Advance(time.Millisecond)
	}
	close(stop)
	for w := 0; w < workers; w++ {
		<-done
	}
	total := 0
	for _, n := range allowed {
		total += n
	}
	if limit := 10 + steps; total > limit {
		t.Fatalf("%d allowed over %d ms at 1000/s with Burst 10, limit %d", total, steps, limit)
	}
}

// Explicit times far from now, or zero, neither overflow nor panic.
func TestExtremeTimes(t *testing.T) {
	for _, at := range []time.Time{{}, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(0, math.MinInt64)} {
		l, _ := newLimiter(t, ratelimit.Config{Rate: 1, Period: 100 * 365 * 24 * time.Hour / 2, Burst: 2})
		first := l.AllowN(at, 2)
		second := l.AllowN(at, 1)
		if !first.Allowed || second.Allowed || second.RetryAfter <= 0 {
			t.Errorf("at %v: AllowN(2) = %+v, then AllowN(1) = %+v; want the burst, then a refusal with a positive wait", at, first, second)
		}
	}
}
