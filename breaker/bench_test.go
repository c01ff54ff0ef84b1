package breaker_test

import (
	"context"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
)

func noop(context.Context) error { return nil }

// benchConfigs are the closed-state configurations of BenchmarkDo.
var benchConfigs = []struct {
	name string
	cfg  breaker.Config
}{
	{"consecutive", breaker.Config{ConsecutiveFailures: 5}},
	{"countWindow", breaker.Config{FailureRate: 0.5, WindowCalls: 100}},
	{"timeWindow", breaker.Config{FailureRate: 0.5, WindowDuration: 10 * time.Second}},
}

func BenchmarkDo(b *testing.B) {
	ctx := context.Background()
	for _, bc := range benchConfigs {
		br, err := breaker.New(bc.cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := br.Do(ctx, noop); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := br.Do(ctx, noop); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	for _, bc := range benchConfigs {
		br, err := breaker.New(bc.cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tok, err := br.Acquire()
				if err != nil {
					b.Fatal(err)
				}
				br.Release(tok, bulwark.Success, time.Millisecond)
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					tok, err := br.Acquire()
					if err != nil {
						b.Error(err)
						return
					}
					br.Release(tok, bulwark.Success, time.Millisecond)
				}
			})
		})
	}
}
