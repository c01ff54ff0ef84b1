package redisrate

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// BenchmarkTake is one decision against the real server at
// BULWARK_REDIS_ADDR: one round trip on loopback, serially and from many
// goroutines sharing one client.
func BenchmarkTake(b *testing.B) {
	rdb := serverClient(b)
	l := newLimiter(b, rdb, Config{Rate: 1e6, Burst: 1e6, Timeout: 5 * time.Second})
	ctx := context.Background()
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = "tenant-" + strconv.Itoa(i)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := l.Take(ctx, keys[i%len(keys)], 1); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := l.Take(ctx, keys[i%len(keys)], 1); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}
