package balancer_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/limit"
)

func endpoints(n int) []bulwark.Endpoint {
	eps := make([]bulwark.Endpoint, n)
	for i := range eps {
		eps[i] = bulwark.Endpoint{Addr: "10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256) + ":80", Zone: "z" + strconv.Itoa(i%3)}
	}
	return eps
}

var benchAlgorithms = []struct {
	name string
	algo balancer.Algorithm
}{
	{"roundRobin", balancer.RoundRobin},
	{"leastRequest", balancer.LeastRequest},
	{"peakEWMA", balancer.PeakEWMA},
	{"consistentHash", balancer.ConsistentHash},
	{"random", balancer.Random},
}

func newBench(b *testing.B, algo balancer.Algorithm) *balancer.Balancer {
	b.Helper()
	lb, err := balancer.New(balancer.Config{Algorithm: algo, Endpoints: endpoints(100)})
	if err != nil {
		b.Fatal(err)
	}
	return lb
}

var benchKeys = func() []string {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("customer-%d", i)
	}
	return keys
}()

// BenchmarkPick measures Pick followed by Done over 100 endpoints.
func BenchmarkPick(b *testing.B) {
	for _, a := range benchAlgorithms {
		b.Run(a.name, func(b *testing.B) {
			lb := newBench(b, a.algo)
			out := balancer.Result{Latency: time.Millisecond}
			b.ReportAllocs()
			cpu := cpuTime()
			i := 0
			for b.Loop() {
				pk, err := lb.Pick(benchKeys[i&1023], nil)
				if err != nil {
					b.Fatal(err)
				}
				pk.Done(out)
				i++
			}
			reportCPU(b, cpu)
		})
	}
}

// BenchmarkPickParallel is BenchmarkPick from every core at once.
func BenchmarkPickParallel(b *testing.B) {
	for _, a := range benchAlgorithms {
		b.Run(a.name, func(b *testing.B) {
			lb := newBench(b, a.algo)
			out := balancer.Result{Latency: time.Millisecond}
			b.ReportAllocs()
			cpu := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					pk, err := lb.Pick(benchKeys[i&1023], nil)
					if err != nil {
						b.Error(err)
						return
					}
					pk.Done(out)
					i++
				}
			})
			reportCPU(b, cpu)
		})
	}
}

// newLimitedBench is newBench with an adaptive *limit.Limiter, as a proxy
// would configure it (no reserve for critical calls), on every endpoint.
func newLimitedBench(b *testing.B, algo balancer.Algorithm) *balancer.Balancer {
	b.Helper()
	lb, err := balancer.New(balancer.Config{Algorithm: algo, Endpoints: endpoints(100),
		Limiter: func(ep bulwark.Endpoint) (balancer.Limiter, error) {
			return limit.New(limit.Config{Name: "bench/" + ep.Addr, Headroom: -1})
		}})
	if err != nil {
		b.Fatal(err)
	}
	return lb
}

// BenchmarkPickLimiter is BenchmarkPick with a concurrency limiter on every
// endpoint: each pick takes a slot of the endpoint's *limit.Limiter, and
// Done gives it back and feeds it the call's outcome.
func BenchmarkPickLimiter(b *testing.B) {
	for _, a := range benchAlgorithms {
		b.Run(a.name, func(b *testing.B) {
			lb := newLimitedBench(b, a.algo)
			out := balancer.Result{Latency: time.Millisecond}
			b.ReportAllocs()
			cpu := cpuTime()
			i := 0
			for b.Loop() {
				pk, err := lb.Pick(benchKeys[i&1023], nil)
				if err != nil {
					b.Fatal(err)
				}
				pk.Done(out)
				i++
			}
			reportCPU(b, cpu)
		})
	}
}

// BenchmarkPickLimiterParallel is BenchmarkPickLimiter from every core at
// once.
func BenchmarkPickLimiterParallel(b *testing.B) {
	for _, a := range benchAlgorithms {
		b.Run(a.name, func(b *testing.B) {
			lb := newLimitedBench(b, a.algo)
			out := balancer.Result{Latency: time.Millisecond}
			b.ReportAllocs()
			cpu := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					pk, err := lb.Pick(benchKeys[i&1023], nil)
					if err != nil {
						b.Error(err)
						return
					}
					pk.Done(out)
					i++
				}
			})
			reportCPU(b, cpu)
		})
	}
}

// reportCPU reports the process's CPU time per op since start, as
// cpu-ns/op: on a machine shared with other work it shows the cost that
// wall-clock ns/op mixes with waiting for a core. For a parallel benchmark
// that scales on 2 cores, ns/op is about half of cpu-ns/op.
func reportCPU(b *testing.B, start time.Duration) {
	if start == 0 || b.N == 0 {
		return
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkPickJittered is BenchmarkPick/peakEWMA with latencies that vary
// from call to call (1 to 1.6 ms), so that more observations change the
// estimate and write it.
func BenchmarkPickJittered(b *testing.B) {
	lb := newBench(b, balancer.PeakEWMA)
	b.ReportAllocs()
	cpu := cpuTime()
	i := 0
	for b.Loop() {
		pk, err := lb.Pick("", nil)
		if err != nil {
			b.Fatal(err)
		}
		pk.Done(balancer.Result{Latency: time.Millisecond + time.Duration(i%7)*100*time.Microsecond})
		i++
	}
	reportCPU(b, cpu)
}

// BenchmarkPickTried measures a retry's pick: Pick with a Tried that holds
// the 0, 1 or 3 endpoints that the call's first picks chose, followed by
// Done, over the 100 endpoints of BenchmarkPick; "none" is Pick with a nil
// Tried, the plain pick, measured alike. For consistent hashing, the tried
// endpoints are the key's first owners, so the pick goes to the next owner
// on the ring; for the others, they are endpoints picked amid other calls'
// picks, as under load. Each iteration copies the call's Tried from a
// template, as a call holds one Tried for all its attempts; keys cycle
// through 64, so that the templates stay in cache.
func BenchmarkPickTried(b *testing.B) {
	const keys = 64
	for _, a := range benchAlgorithms {
		for _, excluded := range []int{-1, 0, 1, 3} {
			name := fmt.Sprintf("%s/tried=%d", a.name, excluded)
			if excluded < 0 {
				name = a.name + "/tried=none"
			}
			b.Run(name, func(b *testing.B) {
				lb := newBench(b, a.algo)
				out := balancer.Result{Latency: time.Millisecond}
				tried := make([]balancer.Tried, keys)
				rng := rand.New(rand.NewPCG(1, 2))
				for k := range tried {
					for range excluded {
						for range rng.IntN(100) { // other calls' picks
							pk, _ := lb.Pick("", nil)
							pk.Done(out)
						}
						pk, err := lb.Pick(benchKeys[k], &tried[k])
						if err != nil {
							b.Fatal(err)
						}
						pk.Done(out)
					}
				}
				b.ReportAllocs()
				cpu := cpuTime()
				i := 0
				for b.Loop() {
					t := tried[i%keys]
					tp := &t
					if excluded < 0 {
						tp = nil
					}
					pk, err := lb.Pick(benchKeys[i%keys], tp)
					if err != nil {
						b.Fatal(err)
					}
					pk.Done(out)
					i++
				}
				reportCPU(b, cpu)
			})
		}
	}
}

// flapper is a Judge and a Recorder that ejects an endpoint when a call to
// it fails, and brings back the endpoint it ejected four ejections earlier:
// at most four are out at a time. As a Recorder it is fed from Pick.Done,
// and the balancer publishes its verdicts in the background.
type flapper struct {
	report func(bulwark.Endpoint, bool)
	out    []bulwark.Endpoint
}

func (f *flapper) Attach(report func(bulwark.Endpoint, bool)) (bool, error) {
	f.report = report
	return false, nil
}
func (f *flapper) SetEndpoints([]bulwark.Endpoint) error { return nil }
func (f *flapper) Record(ep bulwark.Endpoint, o bulwark.Outcome, _ bool) {
	if o != bulwark.Failure {
		return
	}
	f.report(ep, false)
	f.out = append(f.out, ep)
	if len(f.out) > 4 {
		f.report(f.out[0], true)
		f.out = f.out[1:]
	}
}

// syncFlapper is a flapper that is not a Recorder: the benchmark feeds it,
// and its verdicts are published on the reporting goroutine.
type syncFlapper struct{ f flapper }

func (s *syncFlapper) Attach(report func(bulwark.Endpoint, bool)) (bool, error) {
	return s.f.Attach(report)
}
func (s *syncFlapper) SetEndpoints([]bulwark.Endpoint) error { return nil }

// BenchmarkDoneEjecting measures round-robin Pick and Done over 100
// endpoints while every 8th call fails, and its Done ejects the endpoint and
// brings back the one ejected four failures earlier: two verdict changes
// every 8 calls, at most four endpoints out. "background" has the verdicts
// come from a judge fed from Done, as the outlier detector's are: Done marks
// the endpoints and leaves the rebuild of the snapshot to the balancer's
// goroutine. "inline" shows what Done would cost if it rebuilt the snapshot
// itself, as before: the same verdicts are reported by the benchmark's
// goroutine through a judge that is not fed from Done, which the balancer
// publishes on the reporting goroutine. "none" changes no verdict.
//
// Besides cpu-ns/op (the whole process, the background rebuilds included),
// it reports caller-cpu-ns/op, the CPU time of the benchmark's own thread,
// to which its goroutine is locked: the cost on the Done path.
func BenchmarkDoneEjecting(b *testing.B) {
	for _, mode := range []string{"none", "background", "inline"} {
		b.Run(mode, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cfg := balancer.Config{Endpoints: endpoints(100)}
			fed, inline := &flapper{}, &syncFlapper{}
			switch mode {
			case "background":
				cfg.Followers = []balancer.Follower{fed}
			case "inline":
				cfg.Followers = []balancer.Follower{inline}
			}
			lb, err := balancer.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer lb.Close()
			fail := balancer.Result{Err: errors.New("reset"), Latency: time.Millisecond}
			ok := balancer.Result{Latency: time.Millisecond}
			b.ReportAllocs()
			cpu, own := cpuTime(), threadCPUTime()
			i := 0
			for b.Loop() {
				pk, err := lb.Pick("", nil)
				if err != nil {
					b.Fatal(err)
				}
				o := ok
				if mode != "none" && i&7 == 0 {
					o = fail
				}
				pk.Done(o)
				if mode == "inline" && o.Err != nil {
					inline.f.Record(pk.Endpoint(), bulwark.Failure, false)
				}
				i++
			}
			reportCPU(b, cpu)
			if own != 0 {
				b.ReportMetric(float64(threadCPUTime()-own)/float64(b.N), "caller-cpu-ns/op")
			}
		})
	}
}
