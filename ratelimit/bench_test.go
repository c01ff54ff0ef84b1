package ratelimit_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/ratelimit"
)

// The rate is far above what a benchmark can reach, so that every call is
// allowed: the cost of a decision that passes. "refused" measures the other
// branch, with an empty bucket.

func BenchmarkAllow(b *testing.B) {
	for _, tc := range []struct {
		name string
		cfg  ratelimit.Config
	}{
		{"allowed", ratelimit.Config{Rate: 1e9, Burst: 1e6}},
		{"refused", ratelimit.Config{Rate: 1, Period: time.Hour}},
	} {
		l, err := ratelimit.New(tc.cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				l.Allow()
			}
		})
		b.Run(tc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l.Allow()
				}
			})
		})
	}
}

// BenchmarkGroupAllow decides for one of 1,000 existing keys.
func BenchmarkGroupAllow(b *testing.B) {
	g, err := ratelimit.NewGroup(ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 1e9, Burst: 1e6}})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "tenant-" + strconv.Itoa(i%1000)
		g.Allow(keys[i])
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			g.Allow(keys[i&1023])
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				g.Allow(keys[i&1023])
				i++
			}
		})
	})
}

func BenchmarkDo(b *testing.B) {
	l, err := ratelimit.New(ratelimit.Config{Rate: 1e9, Burst: 1e6})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	op := func(context.Context) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		_ = l.Do(ctx, op)
	}
}
