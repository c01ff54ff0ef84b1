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

// reportCPU adds cpu-ns/op, the process's CPU time per op: on a machine
// shared with other work, ns/op (wall time) also counts the time spent
// waiting for a core, and cpu-ns/op does not. A parallel benchmark that
// scales has a cpu-ns/op of about GOMAXPROCS × its ns/op.
func reportCPU(b *testing.B, start time.Duration) {
	if start > 0 {
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	}
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
			cpu := cpuTime()
			for b.Loop() {
				if err := br.Do(ctx, noop); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			cpu := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := br.Do(ctx, noop); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportCPU(b, cpu)
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
