//go:build !race

package bulwark_test

import (
	"context"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/retry"
)

// The allocation budgets of issue 16: Call over one policy allocates
// nothing, two layers of Compose (Do or Call) allocate at most once.
// (Allocation counts are not meaningful under the race detector.)
func TestCallAndComposeAllocations(t *testing.T) {
	cb, err := breaker.New(breaker.Config{FailureRate: 0.5, WindowCalls: 100})
	if err != nil {
		t.Fatal(err)
	}
	budget, err := retry.NewBudget(retry.BudgetConfig{})
	if err != nil {
		t.Fatal(err)
	}
	rp, err := retry.New(retry.Config{MaxAttempts: 4, Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	h, err := retry.NewHedge(retry.HedgeConfig{Delay: time.Hour, Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	value := func(context.Context) (int, error) { return 1, nil }
	two := bulwark.Compose(rp, cb)
	cases := []struct {
		name string
		run  func()
		max  float64
	}{
		{"Call(breaker)", func() { _, _ = bulwark.Call(ctx, cb, value) }, 0},
		{"Call(retry)", func() { _, _ = bulwark.Call(ctx, rp, value) }, 0},
		{"Compose(retry, breaker).Do", func() { _ = two.Do(ctx, noop) }, 1},
		{"Call(Compose(retry, breaker))", func() { _, _ = bulwark.Call(ctx, two, value) }, 1},
		{"Hedge.Do, no hedge", func() { _ = h.Do(ctx, noop) }, 3},
	}
	for _, tc := range cases {
		if got := testing.AllocsPerRun(1000, tc.run); got > tc.max {
			t.Errorf("%s: %v allocations per call, want at most %v", tc.name, got, tc.max)
		}
	}
}
