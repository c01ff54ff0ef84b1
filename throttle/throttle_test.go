package throttle_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/throttle"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	errOverloaded = errors.New("503 overloaded")
	ok            = func(context.Context) error { return nil }
	overloaded    = func(context.Context) error { return errOverloaded }
)

// never is a Random that never refuses (probabilities stay below 1).
func never() float64 { return 0.9999 }

func newPolicy(t testing.TB, cfg throttle.Config) (*throttle.Policy, *bulwarktest.Clock) {
	t.Helper()
	clk := bulwarktest.NewClock(time.Time{})
	cfg.Clock = clk
	p, err := throttle.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, clk
}

func sre(k float64, req, acc int) float64 {
	return math.Max(0, (float64(req)-k*float64(acc))/float64(req+1))
}

func TestNewInvalidConfig(t *testing.T) {
	for _, cfg := range []throttle.Config{
		{Multiplier: 0.5},
		{Multiplier: math.NaN()},
		{Multiplier: math.Inf(1)},
		{MaxProbability: -0.1},
		{MaxProbability: 1.5},
		{MaxProbability: math.NaN()},
		{Window: -time.Second},
		{Buckets: -1},
		{Window: time.Second, Buckets: 2000},
	} {
		if _, err := throttle.New(cfg); !errors.Is(err, throttle.ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

// The probability is the SRE book's formula over the window's counts.
func TestProbabilityFormula(t *testing.T) {
	p, _ := newPolicy(t, throttle.Config{Random: never, MaxProbability: 1})
	for range 10 {
		_ = p.Do(context.Background(), ok)
	}
	if got := p.Probability(); got != 0 {
		t.Fatalf("Probability() after 10 accepts = %v, want 0", got)
	}
	for i := 1; i <= 30; i++ {
		_ = p.Do(context.Background(), overloaded)
		if got, want := p.Probability(), sre(2, 10+i, 10); math.Abs(got-want) > 1e-12 {
			t.Fatalf("Probability() after 10 accepts and %d failures = %v, want %v", i, got, want)
		}
	}
}

// A request is refused exactly when the random draw is below the
// probability; a refused request is not sent and counts as a request.
func TestRefusal(t *testing.T) {
	draw := 0.9999
	rec := &recorder{}
	p, _ := newPolicy(t, throttle.Config{Name: "search", Random: func() float64 { return draw }, Observer: rec})
	for range 10 {
		_ = p.Do(context.Background(), overloaded)
	}
	pr := p.Probability() // (10 - 0) / 11
	draw = pr + 1e-9
	if err := p.Do(context.Background(), overloaded); err != errOverloaded {
		t.Fatalf("Do with a draw above the probability %v = %v, want the op's error", pr, err)
	}
	pr = p.Probability()
	draw = pr - 1e-9
	sent := false
	err := p.Do(context.Background(), func(context.Context) error { sent = true; return nil })
	if err != throttle.ErrThrottled || sent {
		t.Fatalf("Do with a draw below the probability %v = %v (sent %v), want ErrThrottled, not sent", pr, err, sent)
	}
	if got, want := p.Probability(), math.Min(0.9, sre(2, 12, 0)); got != want {
		t.Fatalf("Probability() after the refusal = %v, want %v: a refused request counts", got, want)
	}
	if len(rec.evs) != 1 || rec.evs[0].Kind != bulwark.EventRejected || rec.evs[0].Component != "throttle" ||
		rec.evs[0].Name != "search" || rec.evs[0].Reason != "throttled" || rec.evs[0].Err != throttle.ErrThrottled {
		t.Fatalf("events = %+v, want one EventRejected", rec.evs)
	}
}

func TestMaxProbability(t *testing.T) {
	p, _ := newPolicy(t, throttle.Config{Random: never, MaxProbability: 0.5})
	for range 100 {
		_ = p.Do(context.Background(), overloaded)
	}
	if got := p.Probability(); got != 0.5 {
		t.Fatalf("Probability() = %v, want the cap 0.5", got)
	}
}

// A call whose caller gave up counts nowhere; a permanent error counts as
// accepted; a deadline exceeded does not.
func TestClassification(t *testing.T) {
	p, _ := newPolicy(t, throttle.Config{Random: never, MaxProbability: 1})
	for range 5 {
		_ = p.Do(context.Background(), overloaded)
	}
	before := p.Probability()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.Do(ctx, func(ctx context.Context) error { return ctx.Err() })
	if got := p.Probability(); got != before {
		t.Fatalf("Probability() after a call canceled by its caller = %v, want %v unchanged", got, before)
	}
	_ = p.Do(context.Background(), func(context.Context) error { return bulwark.Permanent(errors.New("404")) })
	if got, want := p.Probability(), sre(2, 6, 1); got != want {
		t.Fatalf("Probability() after a permanent error = %v, want %v (an accept)", got, want)
	}
	_ = p.Do(context.Background(), func(context.Context) error { return context.DeadlineExceeded })
	if got, want := p.Probability(), sre(2, 7, 1); got != want {
		t.Fatalf("Probability() after a deadline exceeded = %v, want %v (not an accept)", got, want)
	}
}

// Counts leave the window step by step.
func TestWindowSlides(t *testing.T) {
	p, clk := newPolicy(t, throttle.Config{Random: never, MaxProbability: 1, Window: 10 * time.Second, Buckets: 10})
	for range 10 {
		_ = p.Do(context.Background(), overloaded)
	}
	clk.Advance(5 * time.Second)
	for range 10 {
		_ = p.Do(context.Background(), ok)
	}
	if got, want := p.Probability(), sre(2, 20, 10); got != want {
		t.Fatalf("Probability() at 5s = %v, want %v", got, want)
	}
	clk.Advance(5 * time.Second) // the failures of step 0 leave
	if got := p.Probability(); got != 0 {
		t.Fatalf("Probability() at 10s = %v, want 0: only accepts are left", got)
	}
	clk.Advance(5 * time.Second)
	_ = p.Do(context.Background(), overloaded)
	if got, want := p.Probability(), sre(2, 1, 0); got != want {
		t.Fatalf("Probability() at 15s = %v, want %v: the window is empty but for the last failure", got, want)
	}
}

// Against a backend that accepts at most C requests per second and refuses
// the rest, a client offering 10 × C ends up sending about K × C: it sheds
// the excess itself.
func TestSheddingConvergesToKTimesCapacity(t *testing.T) {
	for _, k := range []float64{1.5, 2, 3} {
		rng := rand.New(rand.NewPCG(1, uint64(k*10)))
		p, clk := newPolicy(t, throttle.Config{Multiplier: k, MaxProbability: 1, Random: rng.Float64, Window: 30 * time.Second, Buckets: 30})
		const capacity, offered = 20, 200
		var sent int
		for sec := 0; sec < 300; sec++ {
			accepted := 0
			if sec == 200 {
				sent = 0
			}
			for range offered {
				_ = p.Do(context.Background(), func(context.Context) error {
					sent++
					if accepted < capacity {
						accepted++
						return nil
					}
					return errOverloaded
				})
				clk.Advance(time.Second / offered)
			}
		}
		perSec := float64(sent) / 100
		if want := k * capacity; math.Abs(perSec-want) > 0.15*want {
			t.Errorf("K=%v: the backend received %.0f requests/s at 10× overload, want about K × capacity = %.0f", k, perSec, want)
		}
	}
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

// Concurrent calls count exactly: with no refusal, the window holds every
// request and every accept.
func TestPolicyConcurrentSafe(t *testing.T) {
	p, clk := newPolicy(t, throttle.Config{Random: never, MaxProbability: 1, Window: time.Second, Buckets: 4})
	const workers, calls = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range calls {
				if (w+i)%4 == 0 {
					_ = p.Do(context.Background(), ok)
				} else {
					_ = p.Do(context.Background(), overloaded)
				}
				if got := p.Probability(); got < 0 || got > 1 {
					t.Errorf("Probability() = %v", got)
				}
			}
		})
	}
	wg.Wait()
	if got, want := p.Probability(), sre(2, workers*calls, workers*calls/4); got != want {
		t.Fatalf("Probability() = %v, want %v: counts were lost", got, want)
	}
	clk.Advance(time.Second)
	if got := p.Probability(); got != 0 {
		t.Fatalf("Probability() a window later = %v, want 0", got)
	}
}
