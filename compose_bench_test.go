package bulwark_test

import (
	"context"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/retry"
)

// The benchmarks of Call and Compose run real components, configured as in
// the README's quick start: a count-window breaker, a retry policy with a
// budget, and a hedge whose delay (100 ms) is never reached, so that every
// call takes the path of a healthy dependency.

func okValue(context.Context) (int, error) { return 1, nil }

func benchBreaker(b *testing.B) *breaker.Breaker {
	cb, err := breaker.New(breaker.Config{FailureRate: 0.5, WindowCalls: 100})
	if err != nil {
		b.Fatal(err)
	}
	return cb
}

func benchRetry(b *testing.B) *retry.Policy {
	budget, err := retry.NewBudget(retry.BudgetConfig{})
	if err != nil {
		b.Fatal(err)
	}
	rp, err := retry.New(retry.Config{MaxAttempts: 4, Budget: budget})
	if err != nil {
		b.Fatal(err)
	}
	return rp
}

func benchHedge(b *testing.B) *retry.Hedge {
	h, err := retry.NewHedge(retry.HedgeConfig{Delay: 100 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// benchPolicies are the policies that BenchmarkCall and BenchmarkCompose run:
// one, two and three layers of real components.
func benchPolicies(b *testing.B) []struct {
	name string
	p    bulwark.Policy
} {
	return []struct {
		name string
		p    bulwark.Policy
	}{
		{"breaker", benchBreaker(b)},
		{"retry", benchRetry(b)},
		{"hedge", benchHedge(b)},
		{"retry+breaker", bulwark.Compose(benchRetry(b), benchBreaker(b))},
		{"retry+hedge+breaker", bulwark.Compose(benchRetry(b), benchHedge(b), benchBreaker(b))},
	}
}

// BenchmarkCall compares Call over a policy with the policy's own Do: "Do"
// runs p.Do(ctx, op), "Call" runs bulwark.Call(ctx, p, op) with an op that
// returns a value.
func BenchmarkCall(b *testing.B) {
	ctx := context.Background()
	for _, bp := range benchPolicies(b) {
		p := bp.p
		b.Run(bp.name+"/Do", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Do(ctx, noop); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bp.name+"/Call", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bulwark.Call(ctx, p, okValue); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bp.name+"/Call/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := bulwark.Call(ctx, p, okValue); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkCompose runs Compose of one, two and three real components.
func BenchmarkCompose(b *testing.B) {
	ctx := context.Background()
	layers := []struct {
		name string
		ps   func() []bulwark.Policy
	}{
		{"layers=1", func() []bulwark.Policy { return []bulwark.Policy{benchBreaker(b)} }},
		{"layers=2", func() []bulwark.Policy { return []bulwark.Policy{benchRetry(b), benchBreaker(b)} }},
		{"layers=3", func() []bulwark.Policy { return []bulwark.Policy{benchRetry(b), benchHedge(b), benchBreaker(b)} }},
	}
	for _, l := range layers {
		p := bulwark.Compose(l.ps()...)
		b.Run(l.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Do(ctx, noop); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(l.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := p.Do(ctx, noop); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
