package redisstore

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const benchClients = 32

// benchStore returns a Store on the test server with a pool big enough for
// benchClients concurrent callers, on the wall clock.
func benchStore(b *testing.B) *Store {
	rdb := newClient(b, redisAddr(b), func(o *redis.Options) { o.PoolSize = benchClients })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		b.Fatalf("Redis at BULWARK_REDIS_ADDR does not answer: %v", err)
	}
	return newStore(b, rdb, nil)
}

// latencies collects per-operation latencies from many goroutines and
// reports their percentiles.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration // guarded by mu
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d...)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	if len(l.all) == 0 {
		return
	}
	slices.Sort(l.all)
	pct := func(p float64) float64 {
		return float64(l.all[int(p*float64(len(l.all)-1))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(len(l.all))/elapsed.Seconds(), "req/s")
}

// runClients runs op b.N times, from one goroutine when clients is 1 and
// otherwise from clients goroutines through RunParallel, and reports the
// latency percentiles and throughput of op.
func runClients(b *testing.B, clients int, op func(i int64) error) {
	b.ReportAllocs()
	var lat latencies
	var seq atomic.Int64
	b.ResetTimer()
	start := time.Now()
	if clients == 1 {
		d := make([]time.Duration, 0, b.N)
		for b.Loop() {
			t := time.Now()
			if err := op(seq.Add(1)); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(t))
		}
		lat.add(d)
	} else {
		b.SetParallelism((clients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.RunParallel(func(pb *testing.PB) {
			var d []time.Duration
			for pb.Next() {
				t := time.Now()
				if err := op(seq.Add(1)); err != nil {
					b.Error(err)
					return
				}
				d = append(d, time.Since(t))
			}
			lat.add(d)
		})
	}
	lat.report(b, time.Since(start))
}

// BenchmarkClaimComplete measures a first request: Claim of a fresh key,
// then Complete with a 1 KiB result.
func BenchmarkClaimComplete(b *testing.B) {
	value := make([]byte, 1024)
	for _, clients := range []int{1, benchClients} {
		b.Run("clients="+strconv.Itoa(clients), func(b *testing.B) {
			s := benchStore(b)
			ctx := context.Background()
			runClients(b, clients, func(i int64) error {
				key := "k" + strconv.FormatInt(i, 10)
				c, err := s.Claim(ctx, key, fp, time.Minute)
				if err != nil {
					return err
				}
				return s.Complete(ctx, key, c.Token, value, time.Hour)
			})
		})
	}
}

// BenchmarkReplay measures a duplicate request: Claim of a completed key,
// which returns its 1 KiB result.
func BenchmarkReplay(b *testing.B) {
	value := make([]byte, 1024)
	for _, clients := range []int{1, benchClients} {
		b.Run("clients="+strconv.Itoa(clients), func(b *testing.B) {
			s := benchStore(b)
			ctx := context.Background()
			const keys = 1000
			for i := range keys {
				key := "k" + strconv.Itoa(i)
				c, err := s.Claim(ctx, key, fp, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Complete(ctx, key, c.Token, value, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			runClients(b, clients, func(i int64) error {
				_, err := s.Claim(ctx, "k"+strconv.FormatInt(i%keys, 10), fp, time.Minute)
				return err
			})
		})
	}
}
