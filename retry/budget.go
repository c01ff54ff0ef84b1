package retry

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
)

// BudgetConfig configures a Budget. The zero BudgetConfig is valid: retries
// up to 20 % of requests plus 10 per second, over a 10 s window, with no
// token throttling.
type BudgetConfig struct {
	// Ratio is the retries allowed per request over the window, as in
	// Finagle's RetryBudget and Envoy's retry_budget (budget_percent). If
	// zero, 0.2. It must not be negative or above 1000.
	Ratio float64
	// MinPerSecond is the retry rate allowed whatever the request rate, so
	// that a service with little traffic can still retry (Finagle's
	// minRetriesPerSec). As in Finagle, it is a reserve of MinPerSecond ×
	// Window retries that refills at that rate, so a burst may spend it at
	// once: a failing dependency sees at most (1 + Ratio) × its load plus
	// this reserve. If zero, 10. A negative value means no reserve: retries
	// are only ever Ratio × requests.
	MinPerSecond float64
	// Window is the time constant of the moving window over which requests
	// and retries are counted: counts decay by e every Window. If zero,
	// 10 s. It must not be negative.
	Window time.Duration

	// MaxTokens turns on gRPC's retry throttling: a token count starts at
	// MaxTokens, each failed attempt takes 1, each success adds TokenRatio
	// (up to MaxTokens), and retries and hedges are allowed only while the
	// count is above MaxTokens/2. If zero, off. It must be within (0, 1000]
	// when set, as in gRPC's service config.
	MaxTokens float64
	// TokenRatio is the tokens a success adds. If zero, 0.1. It must not be
	// negative. Used only with MaxTokens.
	TokenRatio float64

	// Clock is the time source of the window. If nil, the wall clock.
	Clock bulwark.Clock
}

// Budget is a retry budget that many Policy and Hedge values can share, so
// that a failing dependency sees at most about (1 + Ratio) × its normal load
// plus MinPerSecond: every call deposits a request (a bulwark.Compose of
// policies that share the Budget deposits once per call), every retry or hedge
// withdraws one retry, and a retry is allowed while the retries counted over
// the window stay within Ratio × requests + MinPerSecond × Window. With
// MaxTokens set, gRPC's throttling applies as well.
//
// Deposits are one atomic add and read no clock; only a withdrawal, which
// happens on the retry path, reads the clock and takes a lock. The window is
// an exponentially decaying count with time constant Window; deposits made
// since the last withdrawal are taken as spread evenly over that interval.
//
// A Budget is safe for concurrent use by multiple goroutines. Use NewBudget;
// the zero Budget is not usable.
type Budget struct {
	ratio    float64
	minRate  float64 // retries per second
	window   float64 // seconds
	clk      bulwark.Clock
	pending  atomic.Int64 // requests deposited since the last fold
	mu       sync.Mutex
	last     time.Time // guarded by mu; time of the last fold
	requests float64   // guarded by mu; decayed request count
	retries  float64   // guarded by mu; decayed retry count

	// gRPC throttling, in thousandths of a token as gRPC does; off when
	// maxTokens is 0.
	maxTokens  int64
	tokenRatio int64
	tokens     atomic.Int64
}

// NewBudget returns a Budget for cfg, or an error naming the invalid field.
func NewBudget(cfg BudgetConfig) (*Budget, error) {
	switch {
	case !(cfg.Ratio >= 0 && cfg.Ratio <= 1000):
		return nil, fmt.Errorf("retry: budget Ratio %v, want within [0, 1000]", cfg.Ratio)
	case math.IsNaN(cfg.MinPerSecond) || math.IsInf(cfg.MinPerSecond, 0):
		return nil, fmt.Errorf("retry: budget MinPerSecond %v, want a finite value", cfg.MinPerSecond)
	case cfg.Window < 0:
		return nil, fmt.Errorf("retry: negative budget Window %v", cfg.Window)
	case !(cfg.MaxTokens >= 0 && cfg.MaxTokens <= 1000):
		return nil, fmt.Errorf("retry: budget MaxTokens %v, want 0 (off) or within (0, 1000]", cfg.MaxTokens)
	case !(cfg.TokenRatio >= 0) || math.IsInf(cfg.TokenRatio, 0):
		return nil, fmt.Errorf("retry: budget TokenRatio %v, want a finite value >= 0", cfg.TokenRatio)
	}
	b := &Budget{
		ratio:   cfg.Ratio,
		minRate: cfg.MinPerSecond,
		window:  cfg.Window.Seconds(),
		clk:     bulwark.ClockOrWall(cfg.Clock),
	}
	if b.ratio == 0 {
		b.ratio = 0.2
	}
	switch {
	case b.minRate == 0:
		b.minRate = 10
	case b.minRate < 0:
		b.minRate = 0
	}
	if b.window == 0 {
		b.window = 10
	}
	b.last = b.clk.Now()
	if cfg.MaxTokens > 0 {
		tr := cfg.TokenRatio
		if tr == 0 {
			tr = 0.1
		}
		b.maxTokens = int64(math.Round(cfg.MaxTokens * 1000))
		b.tokenRatio = int64(math.Round(tr * 1000))
		b.tokens.Store(b.maxTokens)
	}
	return b, nil
}

// deposit counts one request.
func (b *Budget) deposit() { b.pending.Add(1) }

// succeeded counts a successful attempt for the token throttle.
func (b *Budget) succeeded() {
	if b.maxTokens == 0 {
		return
	}
	for {
		t := b.tokens.Load()
		if t >= b.maxTokens {
			return
		}
		if b.tokens.CompareAndSwap(t, min(t+b.tokenRatio, b.maxTokens)) {
			return
		}
	}
}

// failed counts a failed attempt for the token throttle.
func (b *Budget) failed() {
	if b.maxTokens == 0 {
		return
	}
	for {
		t := b.tokens.Load()
		if t <= 0 {
			return
		}
		if b.tokens.CompareAndSwap(t, max(t-1000, 0)) {
			return
		}
	}
}

// withdraw asks for one retry and counts it if allowed.
func (b *Budget) withdraw() bool { return b.withdrawAt(b.clk.Now()) }

// withdrawAt is withdraw at the time now of the budget's clock.
func (b *Budget) withdrawAt(now time.Time) bool {
	if b.maxTokens > 0 && b.tokens.Load()*2 <= b.maxTokens {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.foldLocked(now)
	if b.retries+1 > b.ratio*b.requests+b.minRate*b.window {
		return false
	}
	b.retries++
	return true
}

// foldLocked decays the counts to now and adds the pending deposits, taken
// as spread evenly since the last fold.
func (b *Budget) foldLocked(now time.Time) {
	dt := now.Sub(b.last).Seconds()
	n := float64(b.pending.Swap(0))
	if dt <= 0 {
		b.requests += n
		return
	}
	b.last = now
	decay := math.Exp(-dt / b.window)
	// ∫ over the interval of (n/dt)·e^{-(dt-s)/w} ds = n·w·(1-decay)/dt
	b.requests = b.requests*decay + n*b.window*(1-decay)/dt
	b.retries *= decay
}

// available returns how many retries the budget would allow at once now, for
// tests; it does not withdraw.
func (b *Budget) available() int {
	if b.maxTokens > 0 && b.tokens.Load()*2 <= b.maxTokens {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.foldLocked(b.clk.Now())
	return max(int(math.Floor(b.ratio*b.requests+b.minRate*b.window-b.retries)), 0)
}
