package retry

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

func mustBudget(t testing.TB, cfg BudgetConfig) *Budget {
	t.Helper()
	b, err := NewBudget(cfg)
	if err != nil {
		t.Fatalf("NewBudget(%+v) = %v", cfg, err)
	}
	return b
}

func TestNewBudgetRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  BudgetConfig
		want string
	}{
		{"negative ratio", BudgetConfig{Ratio: -0.1}, "Ratio -0.1"},
		{"NaN ratio", BudgetConfig{Ratio: math.NaN()}, "Ratio NaN"},
		{"NaN min", BudgetConfig{MinPerSecond: math.NaN()}, "MinPerSecond NaN"},
		{"infinite min", BudgetConfig{MinPerSecond: math.Inf(1)}, "MinPerSecond +Inf"},
		{"negative window", BudgetConfig{Window: -time.Second}, "negative budget Window"},
		{"too many tokens", BudgetConfig{MaxTokens: 1001}, "MaxTokens 1001"},
		{"negative tokens", BudgetConfig{MaxTokens: -1}, "MaxTokens -1"},
		{"negative token ratio", BudgetConfig{MaxTokens: 10, TokenRatio: -1}, "TokenRatio -1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := NewBudget(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewBudget(%+v) = %v, %v, want an error containing %q", tc.cfg, b, err, tc.want)
			}
		})
	}
}

// withdrawAll withdraws until the budget refuses and returns how many it gave.
func withdrawAll(b *Budget, now time.Time) int {
	n := 0
	for b.withdrawAt(now) {
		n++
		if n > 1e6 {
			break
		}
	}
	return n
}

func TestBudgetWithoutReserve(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	b := mustBudget(t, BudgetConfig{Ratio: 0.2, MinPerSecond: -1, Window: 10 * time.Second, Clock: clk})
	if got := withdrawAll(b, clk.Now()); got != 0 {
		t.Errorf("withdrawals with no requests and no reserve = %d, want 0", got)
	}
	for range 100 {
		b.deposit()
	}
	if got := withdrawAll(b, clk.Now()); got != 20 {
		t.Errorf("withdrawals after 100 requests = %d, want 20 (Ratio × requests only)", got)
	}
}

func TestBudgetExhaustionAndRefill(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	b := mustBudget(t, BudgetConfig{Ratio: 0.2, MinPerSecond: 0.5, Window: 10 * time.Second, Clock: clk})
	// At once: 0.5/s × 10 s = 5 retries with no traffic at all.
	if got := withdrawAll(b, clk.Now()); got != 5 {
		t.Errorf("withdrawals with no requests = %d, want 5 (MinPerSecond × Window)", got)
	}
	// 100 requests at the same instant allow 20 more.
	for range 100 {
		b.deposit()
	}
	if got := withdrawAll(b, clk.Now()); got != 20 {
		t.Errorf("withdrawals after 100 requests = %d, want 20", got)
	}
	if got := b.available(); got != 0 {
		t.Errorf("available() after exhaustion = %d, want 0", got)
	}
	// The spent retries decay with the window: after 3 windows, ~95 % of
	// them are forgotten, and so are the requests.
	clk.Advance(30 * time.Second)
	got := b.available()
	if got < 4 || got > 6 {
		t.Errorf("available() after 3 idle windows = %d, want about 5 (the minimum again)", got)
	}
	// Steady traffic refills it: 100 requests a second for a minute allow
	// about 20 retries a second, a window's worth at once.
	for range 60 {
		for range 100 {
			b.deposit()
		}
		clk.Advance(time.Second)
		b.available() // fold, as a retrying caller would
	}
	got = b.available()
	want := 0.2*100*10 + 0.5*10 // ratio × rate × window + min × window
	if float64(got) < want*0.95 || float64(got) > want*1.05 {
		t.Errorf("available() under 100 req/s = %d, want about %v", got, want)
	}
}

func TestBudgetTokenThrottle(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	// A large ratio window so that only the tokens limit.
	b := mustBudget(t, BudgetConfig{Ratio: 1000, MinPerSecond: 1000, MaxTokens: 10, TokenRatio: 0.5, Clock: clk})
	steps := []struct {
		name  string
		do    func()
		allow bool
	}{
		{"full", func() {}, true},
		{"4 failures: 6 tokens", func() {
			for range 4 {
				b.failed()
			}
		}, true},
		{"5th failure: 5 tokens, not above half", b.failed, false},
		{"1 success: 5.5", b.succeeded, true},
		{"many failures floor at 0", func() {
			for range 100 {
				b.failed()
			}
		}, false},
		{"10 successes: 5", func() {
			for range 10 {
				b.succeeded()
			}
		}, false},
		{"1 more: 5.5", b.succeeded, true},
		{"100 successes cap at 10, 5 failures leave 5", func() {
			for range 100 {
				b.succeeded()
			}
			for range 5 {
				b.failed()
			}
		}, false},
	}
	for _, s := range steps {
		s.do()
		if got := b.withdrawAt(clk.Now()); got != s.allow {
			t.Errorf("after %s: withdraw() = %v, want %v (tokens %d/1000)", s.name, got, s.allow, b.tokens.Load())
		}
	}
}

// A dependency that fails every call sees at most (1 + Ratio) × the calls,
// plus the minimum rate, whatever MaxAttempts says.
func TestBudgetBoundsLoadOfFailingDependency(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	budget := mustBudget(t, BudgetConfig{Ratio: 0.2, MinPerSecond: 1, Window: 10 * time.Second, Clock: clk})
	rec := &recorder{retries: make(chan bulwark.Event, 1<<20)}
	noWait := func(int, time.Duration, error) time.Duration { return 0 }
	policies := []*Policy{
		mustNew(t, Config{MaxAttempts: 10, Budget: budget, Clock: clk, Delay: noWait, Observer: rec}),
		mustNew(t, Config{MaxAttempts: 5, Budget: budget, Clock: clk, Delay: noWait}),
	}
	const rate, seconds = 200, 120 // calls per second, duration
	calls, attempts, budgetRefusals := 0, 0, 0
	for i := range rate * seconds {
		clk.Advance(time.Second / rate)
		calls++
		err := policies[i%2].Do(context.Background(), func(context.Context) error {
			attempts++
			return errFlaky
		})
		if errors.Is(err, ErrBudget) {
			budgetRefusals++
		}
	}
	t.Logf("%d calls, %d attempts (%.3f×), %d refused by the budget", calls, attempts, float64(attempts)/float64(calls), budgetRefusals)
	limit := float64(calls)*1.2 + 1*seconds + 0.2*rate*10 + 10 // + one window's burst
	if float64(attempts) > limit {
		t.Errorf("attempts = %d for %d calls, want at most %.0f ((1 + ratio) × calls + min × time + a window's burst)", attempts, calls, limit)
	}
	if float64(attempts) < float64(calls)*1.15 {
		t.Errorf("attempts = %d for %d calls, want about 1.2 × calls: the budget should be used", attempts, calls)
	}
	if budgetRefusals == 0 || len(rec.kinds(bulwark.EventBudgetExhausted)) == 0 {
		t.Errorf("budget refusals = %d, exhausted events = %d, want both above 0", budgetRefusals, len(rec.kinds(bulwark.EventBudgetExhausted)))
	}
}

func TestBudgetConcurrentSafe(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	b := mustBudget(t, BudgetConfig{Ratio: 0.5, MinPerSecond: 1, Window: time.Second, MaxTokens: 100, Clock: clk})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := range 1000 {
				b.deposit()
				if i%2 == 0 {
					b.succeeded()
				} else if g%2 == 0 {
					b.failed()
				}
				if b.withdrawAt(clk.Now()) {
					n++
				}
				if g == 0 && i%100 == 0 {
					clk.Advance(time.Millisecond)
				}
			}
			mu.Lock()
			allowed += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	// 8000 requests at ratio 0.5 allow at most 4000 retries plus the minimum.
	if allowed == 0 || allowed > 4000+2 {
		t.Errorf("withdrawals = %d, want within [1, 4002]", allowed)
	}
}
