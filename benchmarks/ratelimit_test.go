//go:build unix

package benchmarks

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go"
	fsrl "github.com/failsafe-go/failsafe-go/ratelimiter"
	"golang.org/x/time/rate"

	"github.com/bulwark-go/bulwark/ratelimit"
)

// Rate limiters side by side: BenchmarkRateLimit/<case>/<library>/<API>[/parallel].
//
//   - allowed: a rate far above what the benchmark reaches (1e9/s, burst
//     1e6), so that every call passes: the cost of an admitted request.
//   - refused: one token per hour, spent: every call is refused.
//   - keyed: one of 1,000 existing keys (tenants), each with its own limit;
//     the peers have no keyed limiter, so they get the usual pattern, one
//     limiter per key in a sync.Map.
//   - policy: the limiter guarding a no-op call through each library's
//     Policy, executor or (x/time/rate) Wait.
//
// failsafe-go has two limiters: "smooth" (one permit per interval, no burst)
// and "bursty" (a fixed number of permits per period).

type rlCase struct {
	name string
	call func(i int) bool // i counts the calls of one goroutine: keyed picks key i
}

func noKey(f func() bool) func(int) bool { return func(int) bool { return f() } }

func rlCases(b *testing.B, kase string) []rlCase {
	b.Helper()
	var (
		cfg            ratelimit.Config
		xt             *rate.Limiter
		smooth, bursty fsrl.RateLimiter[any]
	)
	switch kase {
	case "allowed", "keyed", "policy":
		cfg = ratelimit.Config{Rate: 1e9, Burst: 1e6}
		xt = rate.NewLimiter(rate.Limit(1e9), 1e6)
		smooth = fsrl.NewSmooth[any](1e9, time.Second)
		bursty = fsrl.NewBursty[any](1e9, time.Second)
	case "refused":
		cfg = ratelimit.Config{Rate: 1, Period: time.Hour, Burst: 1}
		xt = rate.NewLimiter(rate.Every(time.Hour), 1)
		smooth = fsrl.NewSmooth[any](1, time.Hour)
		bursty = fsrl.NewBursty[any](1, time.Hour)
	}
	switch kase {
	case "allowed", "refused":
		l, err := ratelimit.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		cases := []rlCase{
			{"bulwark/Allow", noKey(l.Allow)},
			{"xtimerate/Allow", noKey(xt.Allow)},
			{"failsafe-smooth/TryAcquirePermit", noKey(smooth.TryAcquirePermit)},
			{"failsafe-bursty/TryAcquirePermit", noKey(bursty.TryAcquirePermit)},
		}
		if kase == "refused" {
			for _, c := range cases {
				c.call(0) // spend the one token
			}
		}
		return cases
	case "keyed":
		g, err := ratelimit.NewGroup(ratelimit.GroupConfig{Limit: cfg})
		if err != nil {
			b.Fatal(err)
		}
		keys := make([]string, 1024)
		for i := range keys {
			keys[i] = "tenant-" + strconv.Itoa(i%1000)
		}
		var xtm, fsm sync.Map
		xtGet := func(k string) *rate.Limiter {
			if v, ok := xtm.Load(k); ok {
				return v.(*rate.Limiter)
			}
			v, _ := xtm.LoadOrStore(k, rate.NewLimiter(rate.Limit(1e9), 1e6))
			return v.(*rate.Limiter)
		}
		fsGet := func(k string) fsrl.RateLimiter[any] {
			if v, ok := fsm.Load(k); ok {
				return v.(fsrl.RateLimiter[any])
			}
			v, _ := fsm.LoadOrStore(k, fsrl.NewBursty[any](1e9, time.Second))
			return v.(fsrl.RateLimiter[any])
		}
		for _, k := range keys {
			g.Allow(k)
			xtGet(k)
			fsGet(k)
		}
		return []rlCase{
			{"bulwark/Group.Allow", func(i int) bool { return g.Allow(keys[i&1023]) }},
			{"xtimerate/syncMap.Allow", func(i int) bool { return xtGet(keys[i&1023]).Allow() }},
			{"failsafe-bursty/syncMap.TryAcquirePermit", func(i int) bool { return fsGet(keys[i&1023]).TryAcquirePermit() }},
		}
	case "policy":
		l, err := ratelimit.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		noop := func(context.Context) error { return nil }
		fx := failsafe.With[any](bursty)
		fnoop := func() error { return nil }
		return []rlCase{
			{"bulwark/Do", func(int) bool { return l.Do(ctx, noop) == nil }},
			{"xtimerate/Wait", func(int) bool { return xt.Wait(ctx) == nil }},
			{"failsafe-bursty/Run", func(int) bool { return fx.Run(fnoop) == nil }},
		}
	}
	return nil
}

func BenchmarkRateLimit(b *testing.B) {
	for _, kase := range []string{"allowed", "refused", "keyed", "policy"} {
		b.Run(kase, func(b *testing.B) { runPeers(b, rlCases(b, kase)) })
	}
}

// runPeers runs each case serially and in parallel, with cpu-ns/op.
func runPeers(b *testing.B, cases []rlCase) {
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := cpuTime()
			i := 0
			for b.Loop() {
				c.call(i)
				i++
			}
			reportCPU(b, cpu)
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			cpu := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					c.call(i)
					i++
				}
			})
			reportCPU(b, cpu)
		})
	}
}
