//go:build unix

package benchmarks

import (
	"context"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go"
	fsat "github.com/failsafe-go/failsafe-go/adaptivethrottler"
	fsto "github.com/failsafe-go/failsafe-go/timeout"

	"github.com/bulwark-go/bulwark/throttle"
	"github.com/bulwark-go/bulwark/timeout"
)

// BenchmarkThrottle: client-side adaptive throttling of a no-op call that
// succeeds, the cost every first attempt pays while the backend is healthy.
// failsafe-go's AdaptiveThrottler is the same SRE-book algorithm.
func BenchmarkThrottle(b *testing.B) {
	bw, err := throttle.New(throttle.Config{})
	if err != nil {
		b.Fatal(err)
	}
	fs := fsat.NewWithDefaults[any]()
	fx := failsafe.With[any](fs)
	ctx := context.Background()
	noop := func(context.Context) error { return nil }
	fnoop := func() error { return nil }
	runPeers(b, []rlCase{
		{"bulwark/Do", func(int) bool { return bw.Do(ctx, noop) == nil }},
		{"failsafe/TryAcquirePermit+RecordSuccess", func(int) bool {
			if !fs.TryAcquirePermit() {
				return false
			}
			fs.RecordSuccess()
			return true
		}},
		{"failsafe/Run", func(int) bool { return fx.Run(fnoop) == nil }},
	})
}

// BenchmarkTimeout: a no-op call under a 1 s timeout. The bare
// context.WithTimeout row is the floor every timeout on the wall clock
// pays (a timer context: 3 allocations).
func BenchmarkTimeout(b *testing.B) {
	bw, err := timeout.New(timeout.Config{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	fx := failsafe.With[any](fsto.New[any](time.Second))
	ctx := context.Background()
	noop := func(context.Context) error { return nil }
	runPeers(b, []rlCase{
		{"context.WithTimeout", func(int) bool {
			c, cancel := context.WithTimeout(ctx, time.Second)
			err := noop(c)
			cancel()
			return err == nil
		}},
		{"bulwark/Do", func(int) bool { return bw.Do(ctx, noop) == nil }},
		{"failsafe/Run", func(int) bool { return fx.Run(func() error { return nil }) == nil }},
	})
}
