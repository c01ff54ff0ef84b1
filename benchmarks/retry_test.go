package benchmarks

import (
	"context"
	"testing"
	"time"

	avast "github.com/avast/retry-go/v4"
	"github.com/cenkalti/backoff/v5"
	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	goretry "github.com/sethvargo/go-retry"

	"github.com/bulwark-go/bulwark/retry"
)

// Each library retries up to 3 attempts with jittered exponential backoff from
// 100 ms, capped at 10 s, and the operation succeeds at the first attempt: the
// cost every call pays. The context comes with each call, as it does in a
// server. Where a library's backoff is stateful (cenkalti, sethvargo), it is
// made per call, as the library requires; failsafe-go's policy is built once
// and its executor bound to each call's context.

func rtNoop(context.Context) error { return nil }

type rtCase struct {
	name string
	call func(ctx context.Context) error
}

func rtCases(b *testing.B) []rtCase {
	p, err := retry.New(retry.Config{MaxAttempts: 3, Backoff: retry.Backoff{Base: 100 * time.Millisecond, Cap: 10 * time.Second}})
	if err != nil {
		b.Fatal(err)
	}
	fsp := retrypolicy.NewBuilder[any]().WithMaxRetries(2).WithBackoff(100*time.Millisecond, 10*time.Second).WithJitterFactor(0.5).Build()
	return []rtCase{
		{"bulwark", func(ctx context.Context) error { return p.Do(ctx, rtNoop) }},
		{"cenkalti", func(ctx context.Context) error {
			eb := backoff.NewExponentialBackOff()
			eb.InitialInterval, eb.MaxInterval = 100*time.Millisecond, 10*time.Second
			_, err := backoff.Retry(ctx, func() (struct{}, error) { return struct{}{}, rtNoop(ctx) },
				backoff.WithBackOff(eb), backoff.WithMaxTries(3))
			return err
		}},
		{"avast", func(ctx context.Context) error {
			return avast.Do(func() error { return rtNoop(ctx) }, avast.Context(ctx), avast.Attempts(3),
				avast.Delay(100*time.Millisecond), avast.MaxDelay(10*time.Second))
		}},
		{"sethvargo", func(ctx context.Context) error {
			bo := goretry.WithMaxRetries(2, goretry.WithCappedDuration(10*time.Second,
				goretry.WithJitterPercent(50, goretry.NewExponential(100*time.Millisecond))))
			return goretry.Do(ctx, bo, rtNoop)
		}},
		{"failsafe", func(ctx context.Context) error {
			return failsafe.With[any](fsp).WithContext(ctx).Run(func() error { return rtNoop(ctx) })
		}},
	}
}

func BenchmarkRetrySuccess(b *testing.B) {
	for _, c := range rtCases(b) {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := c.call(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRetrySuccessParallel(b *testing.B) {
	for _, c := range rtCases(b) {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if err := c.call(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
