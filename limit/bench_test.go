package limit_test

import (
	"context"
	"testing"

	"github.com/bulwark-go/bulwark/limit"
)

// BenchmarkAcquire measures Acquire and Done of a call that is admitted, far
// from the limit: the hot path of every guarded call.
func BenchmarkAcquire(b *testing.B) {
	ctx := context.Background()
	bh, err := limit.NewBulkhead(limit.BulkheadConfig{Limit: 1000})
	if err != nil {
		b.Fatal(err)
	}
	l, err := limit.New(limit.Config{InitialLimit: 1000, MinLimit: 1000, MaxLimit: 1000})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		a    limit.Acquirer
	}{{"bulkhead", bh}, {"adaptive", l}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := c.a.Acquire(ctx)
				if err != nil {
					b.Fatal(err)
				}
				p.Done(nil)
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					p, err := c.a.Acquire(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					p.Done(nil)
				}
			})
		})
	}
}
