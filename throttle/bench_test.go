package throttle_test

import (
	"context"
	"testing"

	"github.com/bulwark-go/bulwark/throttle"
)

// BenchmarkDo is the cost of a call the throttle lets through while the
// backend accepts everything: the price of every first attempt.
func BenchmarkDo(b *testing.B) {
	p, err := throttle.New(throttle.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = p.Do(ctx, ok)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = p.Do(ctx, ok)
			}
		})
	})
}
