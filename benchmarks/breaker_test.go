//go:build unix

package benchmarks

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go"
	fscb "github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/sony/gobreaker/v2"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
)

// The breakers guard a no-op call that succeeds, in the closed state: the
// cost every call pays. Each rule is configured as closely as each library
// allows: "consecutive" trips on 5 failures in a row; "countWindow" on a 50 %
// failure rate over the last 100 calls; "timeWindow" on a 50 % failure rate
// over 10 s, in 1 s buckets where the library buckets. gobreaker has no count
// window, so its countWindow row uses its cumulative counts.

func bkNoop(context.Context) error { return nil }

func bkRatio(c gobreaker.Counts) bool {
	return c.Requests >= 10 && c.TotalFailures*2 >= c.Requests
}

type bkCase struct {
	name string
	call func() error
}

func bkCases(b *testing.B, rule string) []bkCase {
	ctx := context.Background()
	var (
		cfg breaker.Config
		gs  gobreaker.Settings
		fs  fscb.Builder[any]
	)
	switch rule {
	case "consecutive":
		cfg = breaker.Config{ConsecutiveFailures: 5}
		gs = gobreaker.Settings{ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 5 }}
		fs = fscb.NewBuilder[any]().WithFailureThreshold(5)
	case "countWindow":
		cfg = breaker.Config{FailureRate: 0.5, WindowCalls: 100}
		gs = gobreaker.Settings{ReadyToTrip: bkRatio}
		fs = fscb.NewBuilder[any]().WithFailureThresholdRatio(50, 100)
	case "timeWindow":
		cfg = breaker.Config{FailureRate: 0.5, WindowDuration: 10 * time.Second}
		gs = gobreaker.Settings{ReadyToTrip: bkRatio, Interval: 10 * time.Second, BucketPeriod: time.Second}
		fs = fscb.NewBuilder[any]().WithFailureRateThreshold(0.5, 10, 10*time.Second)
	}
	bw, err := breaker.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	gb := gobreaker.NewCircuitBreaker[any](gs)
	g2 := gobreaker.NewTwoStepCircuitBreaker[any](gs)
	fb := fs.Build()
	fx := failsafe.With[any](fb)
	fnoop := func() error { return nil }
	return []bkCase{
		{"bulwark/Do", func() error { return bw.Do(ctx, bkNoop) }},
		{"bulwark/Acquire", func() error {
			tok, err := bw.Acquire()
			if err == nil {
				bw.Release(tok, bulwark.Success, 0)
			}
			return err
		}},
		{"gobreaker/Execute", func() error {
			_, err := gb.Execute(func() (any, error) { return nil, nil })
			return err
		}},
		{"gobreaker/TwoStep", func() error {
			done, err := g2.Allow()
			if err == nil {
				done(nil)
			}
			return err
		}},
		{"failsafe/Run", func() error { return fx.Run(fnoop) }},
		{"failsafe/Permit", func() error {
			if !fb.TryAcquirePermit() {
				return breaker.ErrOpen
			}
			fb.RecordSuccess()
			return nil
		}},
	}
}

// cpuTime returns the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds cpu-ns/op: the process's CPU time per op. On a machine
// shared with other work, ns/op (wall time) grows with the time spent waiting
// for a core; cpu-ns/op does not. A parallel benchmark that scales has a
// cpu-ns/op of about GOMAXPROCS × its ns/op.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkBreaker runs bulwark's breaker and its peers side by side:
// BenchmarkBreaker/<rule>/<library>/<API>[/parallel].
func BenchmarkBreaker(b *testing.B) {
	for _, rule := range []string{"consecutive", "countWindow", "timeWindow"} {
		for _, c := range bkCases(b, rule) {
			b.Run(rule+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				cpu := cpuTime()
				for b.Loop() {
					if err := c.call(); err != nil {
						b.Fatal(err)
					}
				}
				reportCPU(b, cpu)
			})
			b.Run(rule+"/"+c.name+"/parallel", func(b *testing.B) {
				b.ReportAllocs()
				cpu := cpuTime()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := c.call(); err != nil {
							b.Error(err)
							return
						}
					}
				})
				reportCPU(b, cpu)
			})
		}
	}
}
