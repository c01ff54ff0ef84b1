package balancer_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
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
			out := balancer.Outcome{Latency: time.Millisecond}
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
			out := balancer.Outcome{Latency: time.Millisecond}
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
		pk.Done(balancer.Outcome{Latency: time.Millisecond + time.Duration(i%7)*100*time.Microsecond})
		i++
	}
	reportCPU(b, cpu)
}
