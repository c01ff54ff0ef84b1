package balancer_test

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

// A discrete-event simulation on the fake clock: requests arrive at a steady
// rate, each endpoint serves them with its own latency (jittered ±50 %, no
// queueing), and the balancer picks for each. The figures are printed with
// -v and recorded in BENCHMARKS.md.

type completion struct {
	at  time.Time
	pk  balancer.Pick
	lat time.Duration
}

type completions []completion

func (c completions) Len() int           { return len(c) }
func (c completions) Less(i, j int) bool { return c[i].at.Before(c[j].at) }
func (c completions) Swap(i, j int)      { c[i], c[j] = c[j], c[i] }
func (c *completions) Push(x any)        { *c = append(*c, x.(completion)) }
func (c *completions) Pop() any {
	old := *c
	x := old[len(old)-1]
	*c = old[:len(old)-1]
	return x
}

type simConfig struct {
	algo     balancer.Algorithm
	n        int           // endpoints
	slow     int           // index of the slow endpoint, or -1
	slowness time.Duration // its latency multiplier
	requests int
	every    time.Duration // between arrivals
	latency  time.Duration // of the fast endpoints
	key      func(rng *rand.Rand) string
	load     float64 // LoadFactor
}

type simResult struct {
	share []float64 // of picks per endpoint
	// over picks: the picked endpoint's calls in flight, this one included,
	// against ⌈1.25 × the mean⌉; the worst ratio and how often it was above.
	worst float64
	above float64
}

func simulate(t *testing.T, sc simConfig) simResult {
	t.Helper()
	clk := bulwarktest.NewClock(time.Time{})
	eps := endpoints(sc.n)
	index := map[string]int{}
	for i, ep := range eps {
		index[ep.Addr] = i
	}
	lb := mustNew(t, balancer.Config{Algorithm: sc.algo, Endpoints: eps, Clock: clk, LoadFactor: sc.load})
	rng := rand.New(rand.NewPCG(7, 11))
	var pending completions
	picks := make([]int, sc.n)
	inflight := make([]int, sc.n)
	total := 0
	res := simResult{}
	counted := 0
	now := clk.Now()
	for r := range sc.requests {
		now = now.Add(sc.every)
		for len(pending) > 0 && !pending[0].at.After(now) {
			c := heap.Pop(&pending).(completion)
			clk.Set(c.at)
			inflight[index[c.pk.Endpoint().Addr]]--
			total--
			c.pk.Done(balancer.Outcome{Latency: c.lat})
		}
		clk.Set(now)
		key := ""
		if sc.key != nil {
			key = sc.key(rng)
		}
		pk, err := lb.Pick(key, nil)
		if err != nil {
			t.Fatal(err)
		}
		i := index[pk.Endpoint().Addr]
		inflight[i]++
		total++
		if r > sc.requests/10 { // past the warm-up
			picks[i]++
			bound := math.Ceil(1.25 * float64(total) / float64(sc.n))
			res.worst = max(res.worst, float64(inflight[i])/bound)
			if float64(inflight[i]) > bound {
				res.above++
			}
			counted++
		}
		lat := sc.latency
		if i == sc.slow {
			lat *= sc.slowness
		}
		lat = time.Duration(float64(lat) * (0.5 + rng.Float64()))
		heap.Push(&pending, completion{at: now.Add(lat), pk: pk, lat: lat})
	}
	res.above /= float64(counted)
	sum := 0
	for _, p := range picks {
		sum += p
	}
	for _, p := range picks {
		res.share = append(res.share, float64(p)/float64(sum))
	}
	return res
}

func TestSimulationSlowEndpoint(t *testing.T) {
	tests := []struct {
		algo             balancer.Algorithm
		minShare, maxShr float64
	}{
		{balancer.RoundRobin, 0.09, 0.11}, // 1/N
		{balancer.Random, 0.09, 0.11},
		{balancer.LeastRequest, 0, 0.05},
		{balancer.PeakEWMA, 0, 0.05},
	}
	for _, tt := range tests {
		t.Run(tt.algo.String(), func(t *testing.T) {
			t.Parallel()
			// 10 endpoints, one 10× slower; about 4 calls in flight per
			// fast endpoint.
			res := simulate(t, simConfig{algo: tt.algo, n: 10, slow: 0, slowness: 10, requests: 40000,
				every: 25 * time.Microsecond, latency: time.Millisecond})
			share := res.share[0]
			t.Logf("simulation: 10 endpoints, one 10× slower: %s sends it %.2f %% of traffic", tt.algo, 100*share)
			if share < tt.minShare || share > tt.maxShr {
				t.Errorf("share of the slow endpoint under %s = %.4f, want in [%v, %v]", tt.algo, share, tt.minShare, tt.maxShr)
			}
		})
	}
}

func TestSimulationBoundedHash(t *testing.T) {
	// Keys from a Zipf distribution: a few customers make most calls.
	zipf := func() func(*rand.Rand) string {
		z := newZipf(1.1, 10000)
		return func(r *rand.Rand) string { return fmt.Sprint("customer-", z.draw(r)) }
	}
	tests := []struct {
		name    string
		load    float64
		bounded bool
	}{
		{"bounded c=1.25", 1.25, true},
		{"unbounded", 1e9, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := simulate(t, simConfig{algo: balancer.ConsistentHash, n: 10, slow: -1, requests: 40000,
				every: 25 * time.Microsecond, latency: time.Millisecond, key: zipf(), load: tt.load})
			t.Logf("simulation: 10 endpoints, Zipf(1.1) keys, %s: picked endpoint's in flight / ⌈1.25 × mean⌉ at worst %.2f, above it in %.2f %% of picks; busiest endpoint's share %.1f %%",
				tt.name, res.worst, 100*res.above, 100*maxOf(res.share))
			if tt.bounded && res.worst > 1 {
				t.Errorf("picked endpoint's in flight / ⌈1.25 × mean⌉ = %.3f at worst, want <= 1", res.worst)
			}
			if !tt.bounded && res.above == 0 {
				t.Errorf("unbounded hashing never exceeded the bound: the load is not skewed enough to test it")
			}
		})
	}
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// zipf draws ranks 0..n-1 with probability ∝ 1/(rank+1)^s.
type zipf struct{ cdf []float64 }

func newZipf(s float64, n int) *zipf {
	z := &zipf{cdf: make([]float64, n)}
	sum := 0.0
	for i := range n {
		sum += 1 / math.Pow(float64(i+1), s)
		z.cdf[i] = sum
	}
	for i := range z.cdf {
		z.cdf[i] /= sum
	}
	return z
}

func (z *zipf) draw(r *rand.Rand) int {
	u := r.Float64()
	lo, hi := 0, len(z.cdf)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if z.cdf[mid] < u {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// loopbackLatency draws a latency as the proxy measured them on loopback
// (median 70 µs, p99 about twice that, p99.9 10 to 25 times): a log-normal
// body around median, with spikes 10 to 30 times longer in 0.2 % of calls.
func loopbackLatency(rng *rand.Rand, median time.Duration) time.Duration {
	l := float64(median) * math.Exp(0.25*rng.NormFloat64())
	if rng.Float64() < 0.002 {
		l *= 10 + 20*rng.Float64()
	}
	return time.Duration(l)
}

// peakEWMAShare runs n calls arriving as a Poisson process every `every` on
// average over two endpoints under Peak-EWMA (default DecayTime), the
// first `slowness` times slower than the second, and returns the first's
// share of the picks.
func peakEWMAShare(t *testing.T, every time.Duration, slowness float64, n int, seed uint64) float64 {
	t.Helper()
	clk := bulwarktest.NewClock(time.Time{})
	eps := endpoints(2)
	lb := mustNew(t, balancer.Config{Algorithm: balancer.PeakEWMA, Endpoints: eps, Clock: clk})
	rng := rand.New(rand.NewPCG(seed, 15))
	var pending completions
	first := 0
	now := clk.Now()
	for range n {
		now = now.Add(time.Duration(rng.ExpFloat64() * float64(every)))
		for len(pending) > 0 && !pending[0].at.After(now) {
			c := heap.Pop(&pending).(completion)
			clk.Set(c.at)
			c.pk.Done(balancer.Outcome{Latency: c.lat})
		}
		clk.Set(now)
		pk, err := lb.Pick("", nil)
		if err != nil {
			t.Fatal(err)
		}
		median := 70 * time.Microsecond
		if pk.Endpoint() == eps[0] {
			first++
			median = time.Duration(float64(median) * slowness)
		}
		lat := loopbackLatency(rng, median)
		heap.Push(&pending, completion{at: now.Add(lat), pk: pk, lat: lat})
	}
	for len(pending) > 0 {
		c := heap.Pop(&pending).(completion)
		c.pk.Done(balancer.Outcome{Latency: c.lat})
	}
	return float64(first) / float64(n)
}

// TestSimulationPeakEWMAEqualEndpoints: two equal endpoints under Peak-EWMA
// each get 35 to 65 % of the calls, over runs of 30 s at 500 calls/s (one
// at a time, as in the proxy's 98.4 / 1.6 % measurement), 0.1 s at 50,000
// calls/s (several in flight) and 300 s at 10 calls/s; one 10 times slower
// gets under 5 %. The latencies have the spikes that loopback calls show:
// with an unbounded peak and a 10 s DecayTime, as before, one spike of 25
// times kept an endpoint from every pick for DecayTime × ln 25 = 32 s, and
// the equal endpoints got 33/67 % to 29/71 % of some of these runs.
//
// Each share must clear its bound by 3 standard errors of a fair coin over
// the run's calls, 3·sqrt(0.25/n) (1.2 points for 15,000 calls), so that
// sampling noise alone cannot carry it past the bound. (Over 200 seeds, the
// runs at 500 calls/s gave 42.6 to 57.5 %.)
func TestSimulationPeakEWMAEqualEndpoints(t *testing.T) {
	tests := []struct {
		name  string
		every time.Duration
		n     int
	}{
		{"500 calls/s", 2 * time.Millisecond, 15000},
		{"50000 calls/s", 20 * time.Microsecond, 5000},
		{"10 calls/s", 100 * time.Millisecond, 3000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			margin := 3 * math.Sqrt(0.25/float64(tt.n))
			for seed := uint64(1); seed <= 8; seed++ {
				share := peakEWMAShare(t, tt.every, 1, tt.n, seed)
				if share < 0.35+margin || share > 0.65-margin {
					t.Errorf("seed %d: share of one of two equal endpoints = %.3f, want in [%.3f, %.3f] (35-65 %% less %.3f of sampling margin)",
						seed, share, 0.35+margin, 0.65-margin, margin)
				}
				slow := peakEWMAShare(t, tt.every, 10, tt.n, seed)
				if slow > 0.05-margin/5 {
					t.Errorf("seed %d: share of an endpoint 10× slower = %.4f, want < %.4f (5 %% less %.4f of sampling margin)",
						seed, slow, 0.05-margin/5, margin/5)
				}
				if seed == 1 {
					t.Logf("simulation: two endpoints under Peak-EWMA at %s: equal, the first gets %.1f %%; 10× slower, it gets %.2f %%",
						tt.name, 100*share, 100*slow)
				}
			}
		})
	}
}
