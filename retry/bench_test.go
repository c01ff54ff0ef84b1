package retry

import (
	"context"
	"testing"
	"time"
)

func okOp(context.Context) error { return nil }

func BenchmarkDo(b *testing.B) {
	b.Run("firstAttemptSucceeds", func(b *testing.B) {
		p := mustNew(b, Config{})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := p.Do(ctx, okOp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("firstAttemptSucceedsParallel", func(b *testing.B) {
		p := mustNew(b, Config{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if err := p.Do(ctx, okOp); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("firstAttemptSucceedsWithBudget", func(b *testing.B) {
		budget := mustBudget(b, BudgetConfig{})
		p := mustNew(b, Config{Budget: budget})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := p.Do(ctx, okOp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("firstAttemptSucceedsWithBudgetParallel", func(b *testing.B) {
		budget := mustBudget(b, BudgetConfig{})
		p := mustNew(b, Config{Budget: budget})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if err := p.Do(ctx, okOp); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("oneRetry", func(b *testing.B) {
		p := mustNew(b, Config{Delay: func(int, time.Duration, error) time.Duration { return 0 }})
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := p.Do(ctx, func(ctx context.Context) error {
				if Attempt(ctx) == 1 {
					return errFlaky
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkBackoff(b *testing.B) {
	for _, j := range []Jitter{FullJitter, EqualJitter, DecorrelatedJitter, NoJitter} {
		name := j.String() + "Jitter"
		bo := Backoff{Jitter: j}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var sink time.Duration
			r := uint64(1)
			n := 0
			for b.Loop() {
				r += golden
				n = n&15 + 1
				sink += bo.Delay(n, sink&(1<<30-1), splitmix64(r))
			}
			_ = sink
		})
		b.Run(name+"Parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var sink time.Duration
				r := uint64(1)
				n := 0
				for pb.Next() {
					r += golden
					n = n&15 + 1
					sink += bo.Delay(n, sink&(1<<30-1), splitmix64(r))
				}
				_ = sink
			})
		})
	}
}

func BenchmarkBudget(b *testing.B) {
	b.Run("withdraw", func(b *testing.B) {
		budget := mustBudget(b, BudgetConfig{Ratio: 1000, MinPerSecond: 1e9})
		b.ReportAllocs()
		for b.Loop() {
			budget.deposit()
			budget.withdraw()
		}
	})
}

// BenchmarkHedge runs a Hedge whose first attempt answers long before the
// hedge delay: the path of nearly every call.
func BenchmarkHedge(b *testing.B) {
	b.Run("noHedge", func(b *testing.B) {
		h, err := NewHedge(HedgeConfig{Delay: 100 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := h.Do(ctx, okOp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("noHedgeParallel", func(b *testing.B) {
		h, err := NewHedge(HedgeConfig{Delay: 100 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if err := h.Do(ctx, okOp); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
