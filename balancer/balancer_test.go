package balancer_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

func mustNew(t testing.TB, cfg balancer.Config) *balancer.Balancer {
	t.Helper()
	lb, err := balancer.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { lb.Close() })
	return lb
}

// count picks n times, calling Done at once, and returns the picks per Addr.
func count(t testing.TB, lb *balancer.Balancer, key string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		pk, err := lb.Pick(key, nil)
		if err != nil {
			t.Fatalf("Pick(%q): %v", key, err)
		}
		got[pk.Endpoint().Addr]++
		pk.Done(balancer.Outcome{})
	}
	return got
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  balancer.Config
	}{
		{"unknown algorithm", balancer.Config{Algorithm: 99}},
		{"MinLocalShare above 1", balancer.Config{MinLocalShare: 1.5}},
		{"negative MinLocalShare", balancer.Config{MinLocalShare: -0.1}},
		{"PanicThreshold above 1", balancer.Config{PanicThreshold: 2}},
		{"PanicThreshold NaN", balancer.Config{PanicThreshold: math.NaN()}},
		{"negative SlowStart", balancer.Config{SlowStart: -time.Second}},
		{"negative ActiveRequestBias", balancer.Config{ActiveRequestBias: -1}},
		{"negative DecayTime", balancer.Config{DecayTime: -time.Second}},
		{"LoadFactor below 1", balancer.Config{LoadFactor: 0.5}},
		{"negative VirtualNodes", balancer.Config{VirtualNodes: -1}},
		{"negative PickSample", balancer.Config{PickSample: -1}},
		{"empty address", balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: ""}}}},
		{"negative weight", balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: "a", Weight: -1}}}},
		{"duplicate", balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: "a"}, {Addr: "a", Zone: "z"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lb, err := balancer.New(tt.cfg)
			if err == nil {
				t.Errorf("New(%+v) = %v, nil, want an error", tt.cfg, lb)
			}
		})
	}
}

func TestUpdateRejectsInvalidEndpoints(t *testing.T) {
	lb := mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: "a"}}})
	tests := []struct {
		name string
		eps  []bulwark.Endpoint
		want string
	}{
		{"empty address", []bulwark.Endpoint{{Addr: "b"}, {}}, "balancer: bulwark: invalid endpoint: empty address"},
		{"negative weight", []bulwark.Endpoint{{Addr: "b", Weight: -2}}, `balancer: bulwark: invalid endpoint "b": negative weight -2`},
		{"duplicate", []bulwark.Endpoint{{Addr: "b"}, {Addr: "b"}}, `balancer: bulwark: invalid endpoint "b": duplicate address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := lb.Update(tt.eps)
			if err == nil || err.Error() != tt.want || !errors.Is(err, bulwark.ErrInvalidEndpoint) {
				t.Errorf("Update(%v) = %v, want %q wrapping ErrInvalidEndpoint", tt.eps, err, tt.want)
			}
			if got := count(t, lb, "", 10); got["a"] != 10 {
				t.Errorf("picks after a rejected Update = %v, want all on a", got)
			}
		})
	}
}

func TestPickEmpty(t *testing.T) {
	for _, a := range benchAlgorithms {
		t.Run(a.name, func(t *testing.T) {
			lb := mustNew(t, balancer.Config{Algorithm: a.algo})
			if _, err := lb.Pick("k", nil); !errors.Is(err, balancer.ErrNoEndpoints) {
				t.Errorf("Pick on an empty set = %v, want ErrNoEndpoints", err)
			}
		})
	}
}

func TestWeightedDistribution(t *testing.T) {
	eps := []bulwark.Endpoint{{Addr: "a", Weight: 1}, {Addr: "b", Weight: 2}, {Addr: "c", Weight: 3}, {Addr: "d", Weight: 4}}
	const n = 1_000_000
	for _, a := range benchAlgorithms {
		if a.algo == balancer.ConsistentHash {
			continue // a key has one owner; see TestConsistentHash
		}
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			lb := mustNew(t, balancer.Config{Algorithm: a.algo, Endpoints: eps})
			got := count(t, lb, "", n)
			for _, ep := range eps {
				share := float64(got[ep.Addr]) / n
				want := float64(ep.Weight) / 10
				if math.Abs(share-want) > 0.02*want {
					t.Errorf("share of %s (weight %d) = %.4f, want %.4f ± 2%%", ep.Addr, ep.Weight, share, want)
				}
			}
		})
	}
}

func TestRoundRobinIsSmooth(t *testing.T) {
	eps := []bulwark.Endpoint{{Addr: "a", Weight: 5}, {Addr: "b", Weight: 1}, {Addr: "c", Weight: 1}}
	lb := mustNew(t, balancer.Config{Endpoints: eps})
	// Each stripe walks the nginx sequence a a b a c a a; whatever the
	// interleaving, 70 picks hold every endpoint's share within a few.
	got := count(t, lb, "", 70)
	for _, ep := range eps {
		want := ep.Weight * 10
		if d := got[ep.Addr] - want; d < -16 || d > 16 {
			t.Errorf("picks of %s in 70 = %d, want %d ± 16", ep.Addr, got[ep.Addr], want)
		}
	}
}

// TestRoundRobinShareConcurrentSafe checks RoundRobin's documented bound
// under concurrency: however the picks of 16 goroutines interleave over the
// 8 stripes, each endpoint's count is within 16 of its weighted share. (Picks
// at random would stray by about 3·sqrt(n·p) = 110 for b.)
func TestRoundRobinShareConcurrentSafe(t *testing.T) {
	for _, eps := range [][]bulwark.Endpoint{
		{{Addr: "a", Weight: 5}, {Addr: "b", Weight: 1}, {Addr: "c", Weight: 1}},
		{{Addr: "a"}, {Addr: "b"}},
	} {
		lb := mustNew(t, balancer.Config{Endpoints: eps})
		const goroutines, each = 16, 5000
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				local := map[string]int{}
				deeper(g, func() { // stacks of different depths, at different addresses
					for range each {
						pk, err := lb.Pick("", nil)
						if err != nil {
							t.Error(err)
							return
						}
						local[pk.Endpoint().Addr]++
						pk.Done(balancer.Outcome{})
					}
				})
				mu.Lock()
				for a, n := range local {
					got[a] += n
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		total := 0
		for _, ep := range eps {
			total += ep.EffectiveWeight()
		}
		for _, ep := range eps {
			want := float64(goroutines*each*ep.EffectiveWeight()) / float64(total)
			if d := math.Abs(float64(got[ep.Addr]) - want); d > 16 {
				t.Errorf("weights %v: %s picked %d times of %d, want %.1f ± 16", eps, ep.Addr, got[ep.Addr], goroutines*each, want)
			}
		}
	}
}

// deeper calls f with n more frames on the stack.
func deeper(n int, f func()) {
	if n == 0 {
		f()
		return
	}
	var pad [64]byte
	deeper(n-1, f)
	_ = pad
}

func TestLeastRequestPrefersLessLoaded(t *testing.T) {
	tests := []struct {
		name               string
		algo               balancer.Algorithm
		minShare, maxShare float64
	}{
		// The two samples are distinct, so the stuck endpoint is chosen only
		// while it is no busier than the other sample: almost never.
		{"leastRequest", balancer.LeastRequest, 0, 0.001},
		{"peakEWMA", balancer.PeakEWMA, 0, 0.001},
		{"roundRobin ignores load", balancer.RoundRobin, 0.09, 0.11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lb := mustNew(t, balancer.Config{Algorithm: tt.algo, Endpoints: endpoints(10)})
			stuck := endpoints(10)[3].Addr
			var held []balancer.Pick
			picks := map[string]int{}
			const n = 20000
			for range n {
				pk, err := lb.Pick("", nil)
				if err != nil {
					t.Fatal(err)
				}
				picks[pk.Endpoint().Addr]++
				if pk.Endpoint().Addr == stuck {
					held = append(held, pk) // never finishes
					continue
				}
				pk.Done(balancer.Outcome{Latency: time.Millisecond})
			}
			share := float64(picks[stuck]) / n
			if share > tt.maxShare || share < tt.minShare {
				t.Errorf("share of the endpoint with calls stuck = %.4f, want in [%v, %v]", share, tt.minShare, tt.maxShare)
			}
			for i := range held {
				held[i].Done(balancer.Outcome{})
			}
		})
	}
}

func TestLeastRequestWeighsLoadByWeight(t *testing.T) {
	// b has twice a's weight and twice its calls in flight: they are equally
	// loaded, so b, sampled twice as often, takes two thirds of new calls.
	eps := []bulwark.Endpoint{{Addr: "a", Weight: 1}, {Addr: "b", Weight: 2}}
	lb := mustNew(t, balancer.Config{Algorithm: balancer.LeastRequest, Endpoints: eps})
	var held []balancer.Pick
	inflight := map[string]int{}
	for inflight["a"] < 50 || inflight["b"] < 100 {
		pk, err := lb.Pick("", nil)
		if err != nil {
			t.Fatal(err)
		}
		addr := pk.Endpoint().Addr
		if (addr == "a" && inflight[addr] < 50) || (addr == "b" && inflight[addr] < 100) {
			inflight[addr]++
			held = append(held, pk)
			continue
		}
		pk.Done(balancer.Outcome{})
	}
	// Now hold one more on a: a's load 51/1 beats b's 100/2, so b wins every
	// mixed pair; a is picked only when both samples are a: 1/9.
	got := map[string]int{}
	for range 9000 {
		pk, _ := lb.Pick("", nil)
		got[pk.Endpoint().Addr]++
		pk.Done(balancer.Outcome{})
	}
	if share := float64(got["b"]) / 9000; share < 0.6 || share > 0.72 {
		t.Errorf("share of b at equal load per weight = %.3f, want about 2/3", share)
	}
	for i := range held {
		held[i].Done(balancer.Outcome{})
	}
}

func TestPeakEWMAReactsToLatency(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	eps := endpoints(5)
	lb := mustNew(t, balancer.Config{Algorithm: balancer.PeakEWMA, Endpoints: eps, Clock: clk, DecayTime: 5 * time.Second})
	slow := eps[0].Addr
	rng := rand.New(rand.NewPCG(1, 2))
	// run makes n sequential calls 10ms apart, with latencies of 1 to 3ms
	// (× slowness on the slow endpoint), and returns the slow one's share of
	// the last half.
	run := func(n int, slowness time.Duration) float64 {
		picks := 0
		for i := range n {
			pk, err := lb.Pick("", nil)
			if err != nil {
				t.Fatal(err)
			}
			lat := time.Millisecond + time.Duration(rng.Int64N(int64(2*time.Millisecond)))
			if pk.Endpoint().Addr == slow {
				lat *= slowness
				if i >= n/2 {
					picks++
				}
			}
			clk.Advance(10 * time.Millisecond)
			pk.Done(balancer.Outcome{Latency: lat})
		}
		return float64(picks) / float64(n/2)
	}
	if share := run(4000, 20); share > 0.05 {
		t.Errorf("share of the endpoint 20× slower = %.4f, want < 0.05", share)
	}
	// Once it is fast again, its estimate decays and it wins its share back.
	if share := run(8000, 1); share < 0.12 {
		t.Errorf("share of the endpoint fast again = %.4f, want about 0.2", share)
	}
}

type events struct {
	mu  sync.Mutex
	evs []bulwark.Event
}

func (e *events) Observe(ev bulwark.Event) {
	e.mu.Lock()
	e.evs = append(e.evs, ev)
	e.mu.Unlock()
}

func (e *events) kinds(k bulwark.EventKind) []bulwark.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []bulwark.Event
	for _, ev := range e.evs {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

func TestZonePreference(t *testing.T) {
	eps := []bulwark.Endpoint{
		{Addr: "a1", Zone: "a"}, {Addr: "a2", Zone: "a"}, {Addr: "a3", Zone: "a"}, {Addr: "a4", Zone: "a"},
		{Addr: "b1", Zone: "b"}, {Addr: "b2", Zone: "b"}, {Addr: "c1", Zone: "c"}, {Addr: "c2", Zone: "c"},
	}
	tests := []struct {
		name      string
		minLocal  float64
		unhealthy []string
		wantLocal float64 // share of picks in zone a
	}{
		{"all healthy stays local", 0, nil, 1},
		{"share 3/4 above 0.7 stays local", 0, []string{"a1"}, 1},
		{"share 1/2 spills 2/7", 0, []string{"a1", "a2"}, 0.5 / 0.7},
		{"share 1/4 spills most", 0, []string{"a1", "a2", "a3"}, 0.25 / 0.7},
		{"threshold 1 spills at once", 1, []string{"a1"}, 0.75},
		{"no local endpoint left", 0, []string{"a1", "a2", "a3", "a4"}, 0},
	}
	for _, tt := range tests {
		for _, a := range []balancer.Algorithm{balancer.RoundRobin, balancer.LeastRequest, balancer.Random} {
			t.Run(tt.name+"/"+a.String(), func(t *testing.T) {
				lb, j := judged(t, balancer.Config{Algorithm: a, Zone: "a", MinLocalShare: tt.minLocal, Endpoints: eps, PanicThreshold: -1})
				for _, addr := range tt.unhealthy {
					j.set(bulwark.Endpoint{Addr: addr}, false)
				}
				const n = 40000
				got := count(t, lb, "", n)
				local := 0
				for addr, c := range got {
					if addr[0] == 'a' {
						local += c
					}
				}
				for _, addr := range tt.unhealthy {
					if got[addr] != 0 {
						t.Errorf("unhealthy %s picked %d times", addr, got[addr])
					}
				}
				if share := float64(local) / n; math.Abs(share-tt.wantLocal) > 0.015 {
					t.Errorf("local share = %.4f, want %.4f", share, tt.wantLocal)
				}
				if tt.wantLocal < 1 && got["b1"] == 0 || got["c2"] == 0 && tt.wantLocal < 1 {
					t.Errorf("spill-over reached %v, want every other zone", got)
				}
			})
		}
	}
}

func TestPanicMode(t *testing.T) {
	obs := &events{}
	eps := endpoints(4)
	lb, j := judged(t, balancer.Config{Endpoints: eps, Observer: obs})
	j.set(eps[0], false)
	j.set(eps[1], false)
	if got := count(t, lb, "", 400); len(got) != 2 {
		t.Fatalf("picks at half eligible = %v, want only the two eligible", got)
	}
	j.set(eps[2], false) // 1 of 4 eligible: below 50 %
	if got := count(t, lb, "", 400); len(got) != 4 {
		t.Errorf("picks in panic mode = %v, want all four endpoints", got)
	}
	j.set(eps[2], true)
	if got := count(t, lb, "", 400); len(got) != 2 {
		t.Errorf("picks after panic = %v, want only the two eligible", got)
	}
	changes := obs.kinds(bulwark.EventStateChange)
	if len(changes) != 2 || changes[0].To != "panic" || changes[1].To != "normal" {
		t.Errorf("state changes = %+v, want panic then normal", changes)
	}

	off, oj := judged(t, balancer.Config{Endpoints: eps[:2], PanicThreshold: -1})
	oj.set(eps[0], false)
	oj.set(eps[1], false)
	if _, err := off.Pick("", nil); !errors.Is(err, balancer.ErrUnavailable) {
		t.Errorf("Pick with none eligible and panic off = %v, want ErrUnavailable", err)
	}
}

// fakeBreaker refuses while open, and counts its admissions and releases.
type fakeBreaker struct {
	open     atomic.Bool
	acquired atomic.Int64
	released atomic.Int64
	last     atomic.Int32 // last outcome released
}

var errOpen = retryAfter{errors.New("breaker open"), 3 * time.Second}

type retryAfter struct {
	error
	d time.Duration
}

func (r retryAfter) RetryAfter() time.Duration { return r.d }

func (f *fakeBreaker) Acquire() (uint64, error) {
	if f.open.Load() {
		return 0, errOpen
	}
	return uint64(f.acquired.Add(1)), nil
}

func (f *fakeBreaker) Release(token uint64, o bulwark.Outcome, _ time.Duration) {
	f.released.Add(1)
	f.last.Store(int32(o))
}

func TestIneligibleNeverPicked(t *testing.T) {
	eps := endpoints(4)
	bad := eps[2]
	tests := []struct {
		name string
		make func(j *judge, br *fakeBreaker)
	}{
		{"unhealthy", func(j *judge, _ *fakeBreaker) { j.set(bad, false) }},
		{"breaker open", func(_ *judge, br *fakeBreaker) { br.open.Store(true) }},
	}
	for _, tt := range tests {
		for _, a := range benchAlgorithms {
			t.Run(tt.name+"/"+a.name, func(t *testing.T) {
				br := &fakeBreaker{}
				lb, j := judged(t, balancer.Config{Algorithm: a.algo, Endpoints: eps, Breaker: func(ep bulwark.Endpoint) (balancer.Breaker, error) {
					if ep.Addr == bad.Addr {
						return br, nil
					}
					return nil, nil
				}})
				before := count(t, lb, "", 2000)
				tt.make(j, br)
				for i := range 2000 {
					key := fmt.Sprint(i)
					if got := count(t, lb, key, 1); got[bad.Addr] != 0 {
						t.Fatalf("Pick(%q) = %s, want anything but the %s endpoint", key, bad.Addr, tt.name)
					}
				}
				if a.algo != balancer.ConsistentHash && before[bad.Addr] == 0 {
					t.Errorf("endpoint never picked while eligible: %v", before)
				}
			})
		}
	}
}

func TestBreakerSeesOutcomesAndRefusals(t *testing.T) {
	br := &fakeBreaker{}
	lb := mustNew(t, balancer.Config{Endpoints: endpoints(1), Breaker: func(bulwark.Endpoint) (balancer.Breaker, error) { return br, nil }})
	pk, err := lb.Pick("", nil)
	if err != nil {
		t.Fatal(err)
	}
	pk.Done(balancer.Outcome{Err: errors.New("boom")})
	if br.acquired.Load() != 1 || br.released.Load() != 1 || bulwark.Outcome(br.last.Load()) != bulwark.Failure {
		t.Errorf("breaker acquired %d, released %d, last %v; want 1, 1, failure", br.acquired.Load(), br.released.Load(), bulwark.Outcome(br.last.Load()))
	}
	br.open.Store(true)
	_, err = lb.Pick("", nil)
	var ra interface{ RetryAfter() time.Duration }
	if !errors.Is(err, balancer.ErrUnavailable) || !errors.As(err, &ra) || ra.RetryAfter() != 3*time.Second {
		t.Errorf("Pick with every breaker open = %v, want ErrUnavailable wrapping the breaker's RetryAfter", err)
	}
}

func TestDoneTwiceIsIgnoredAndReported(t *testing.T) {
	obs := &events{}
	rec := &recorder{}
	lb := mustNew(t, balancer.Config{Algorithm: balancer.LeastRequest, Endpoints: endpoints(2), Observer: obs, Followers: []balancer.Follower{rec}})
	pk, _ := lb.Pick("", nil)
	pk.Done(balancer.Outcome{})
	pk.Done(balancer.Outcome{})
	misuse := obs.kinds(bulwark.EventMisuse)
	if len(misuse) != 1 || misuse[0].Endpoint != pk.Endpoint() {
		t.Errorf("misuse events = %+v, want one for %v", misuse, pk.Endpoint())
	}
	if rec.n.Load() != 1 {
		t.Errorf("outcomes recorded = %d, want 1", rec.n.Load())
	}
	var zero balancer.Pick
	zero.Done(balancer.Outcome{}) // does nothing
	if zero.Endpoint() != (bulwark.Endpoint{}) {
		t.Errorf("zero Pick's Endpoint() = %v, want zero", zero.Endpoint())
	}
}

type recorder struct {
	n       atomic.Int64
	mu      sync.Mutex
	gateway []bool
	out     []bulwark.Outcome
}

func (r *recorder) SetEndpoints([]bulwark.Endpoint) error { return nil }

func (r *recorder) Record(_ bulwark.Endpoint, o bulwark.Outcome, gateway bool) {
	r.n.Add(1)
	r.mu.Lock()
	r.out = append(r.out, o)
	r.gateway = append(r.gateway, gateway)
	r.mu.Unlock()
}

func TestOutcomeClassification(t *testing.T) {
	tests := []struct {
		name    string
		out     balancer.Outcome
		want    bulwark.Outcome
		gateway bool
	}{
		{"success", balancer.Outcome{}, bulwark.Success, false},
		{"failure", balancer.Outcome{Err: errors.New("reset")}, bulwark.Failure, false},
		{"gateway", balancer.Outcome{Err: errors.New("refused"), Gateway: true}, bulwark.Failure, true},
		{"canceled by the caller", balancer.Outcome{Err: fmt.Errorf("get: %w", contextCanceled)}, bulwark.Neutral, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			lb := mustNew(t, balancer.Config{Endpoints: endpoints(1), Followers: []balancer.Follower{rec}})
			pk, _ := lb.Pick("", nil)
			pk.Done(tt.out)
			if rec.out[0] != tt.want || rec.gateway[0] != tt.gateway {
				t.Errorf("Done(%+v) recorded %v, %v, want %v, %v", tt.out, rec.out[0], rec.gateway[0], tt.want, tt.gateway)
			}
		})
	}
}

func TestSlowStartRamp(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	for _, a := range []balancer.Algorithm{balancer.RoundRobin, balancer.LeastRequest, balancer.Random} {
		t.Run(a.String(), func(t *testing.T) {
			eps := []bulwark.Endpoint{{Addr: "a"}, {Addr: "b"}}
			lb, j := judged(t, balancer.Config{Algorithm: a, Endpoints: eps, SlowStart: 20 * time.Second, Clock: clk})
			if got := count(t, lb, "", 1000); got["a"] < 450 || got["b"] < 450 {
				t.Errorf("initial set %v, want no slow start", got)
			}
			if err := lb.Update(append(eps, bulwark.Endpoint{Addr: "new"})); err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				at   time.Duration // since the Update
				want float64       // share of "new": f / (2 + f)
			}{
				{0, 0.05 / 2.05},
				{time.Second, 0.10 / 2.10},
				{10 * time.Second, 0.55 / 2.55},
				{19*time.Second + 999*time.Millisecond, 1.0 / 3},
				{20 * time.Second, 1.0 / 3},
				{time.Hour, 1.0 / 3},
			}
			start := clk.Now()
			for _, tt := range tests {
				clk.Set(start.Add(tt.at))
				const n = 60000
				got := count(t, lb, "", n)
				if share := float64(got["new"]) / n; math.Abs(share-tt.want) > 0.01 {
					t.Errorf("share of the new endpoint %v into slow start = %.4f, want %.4f", tt.at, share, tt.want)
				}
			}
			if clk.Timers() != 0 {
				t.Errorf("pending timers after the ramp = %d, want 0", clk.Timers())
			}

			// Back from ejection: the ramp starts again.
			j.set(bulwark.Endpoint{Addr: "new"}, false)
			j.set(bulwark.Endpoint{Addr: "new"}, true)
			got := count(t, lb, "", 60000)
			if share := float64(got["new"]) / 60000; math.Abs(share-0.05/2.05) > 0.01 {
				t.Errorf("share just back from ejection = %.4f, want %.4f", share, 0.05/2.05)
			}
			clk.Advance(20 * time.Second)
		})
	}
}

func TestUpdateKeepsState(t *testing.T) {
	obs := &events{}
	lb, j := judged(t, balancer.Config{Algorithm: balancer.LeastRequest, Endpoints: []bulwark.Endpoint{{Addr: "a"}, {Addr: "b"}}, Observer: obs})
	j.set(bulwark.Endpoint{Addr: "b"}, false)
	var held []balancer.Pick
	for range 10 {
		pk, _ := lb.Pick("", nil)
		held = append(held, pk) // all on a
	}
	if err := lb.Update([]bulwark.Endpoint{{Addr: "a", Weight: 1}, {Addr: "b"}, {Addr: "c"}}); err != nil {
		t.Fatal(err)
	}
	// a keeps its 10 calls in flight, b stays unhealthy: the two distinct
	// samples are a and c, and c, idle, wins every pick.
	got := count(t, lb, "", 1000)
	if got["c"] != 1000 {
		t.Errorf("picks after Update = %v, want all on c (a is loaded, b unhealthy)", got)
	}
	if err := lb.Update([]bulwark.Endpoint{{Addr: "c"}}); err != nil {
		t.Fatal(err)
	}
	for i := range held {
		held[i].Done(balancer.Outcome{}) // on a removed endpoint: harmless
	}
	if got := count(t, lb, "", 10); got["c"] != 10 {
		t.Errorf("picks after removing a and b = %v, want c only", got)
	}
	var added, removed []string
	for _, ev := range obs.kinds(bulwark.EventEndpointAdded) {
		added = append(added, ev.Endpoint.Addr)
	}
	for _, ev := range obs.kinds(bulwark.EventEndpointRemoved) {
		removed = append(removed, ev.Endpoint.Addr)
	}
	if fmt.Sprint(added) != "[a b c]" || fmt.Sprint(removed) != "[a b]" {
		t.Errorf("added %v, removed %v; want [a b c] and [a b]", added, removed)
	}
}

func TestPickEventsSampled(t *testing.T) {
	obs := &events{}
	lb := mustNew(t, balancer.Config{Endpoints: endpoints(2), Observer: obs, PickSample: 10})
	count(t, lb, "", 10000)
	picks := obs.kinds(bulwark.EventPick)
	if len(picks) < 800 || len(picks) > 1200 {
		t.Errorf("EventPick count for 10000 picks sampled 1 in 10 = %d, want about 1000", len(picks))
	}
	if picks[0].Attempt != 10 || picks[0].Reason != "round_robin" || picks[0].Component != bulwark.ComponentBalancer {
		t.Errorf("EventPick = %+v, want Attempt 10, Reason round_robin", picks[0])
	}
}

func TestUpdateConcurrentSafe(t *testing.T) {
	sets := [][]bulwark.Endpoint{endpoints(3), endpoints(7)[2:], endpoints(5)[1:]}
	valid := map[string]bool{}
	for _, s := range sets {
		for _, ep := range s {
			valid[ep.Addr] = true
		}
	}
	for _, a := range benchAlgorithms {
		t.Run(a.name, func(t *testing.T) {
			clk := bulwarktest.NewClock(time.Time{})
			lb, j := judged(t, balancer.Config{Algorithm: a.algo, Endpoints: sets[0], SlowStart: time.Second, Clock: clk,
				Breaker: func(bulwark.Endpoint) (balancer.Breaker, error) { return &fakeBreaker{}, nil }})
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for g := range 4 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						pk, err := lb.Pick(fmt.Sprint(g, i), nil)
						if err != nil {
							t.Errorf("Pick: %v", err)
							return
						}
						if !valid[pk.Endpoint().Addr] {
							t.Errorf("Pick = %v, not in any set", pk.Endpoint())
						}
						pk.Done(balancer.Outcome{Latency: time.Millisecond})
					}
				})
			}
			for i := range 300 {
				if err := lb.Update(sets[i%len(sets)]); err != nil {
					t.Fatal(err)
				}
				ep := sets[i%len(sets)][0]
				j.report(ep, i%2 == 0) // not settled: picks read the verdict
				clk.Advance(100 * time.Millisecond)
			}
			close(stop)
			wg.Wait()
		})
	}
}

var contextCanceled = func() error {
	ctx, cancel := contextWithCancel()
	cancel()
	return ctx.Err()
}()

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

func TestDoneReportsTheCall(t *testing.T) {
	obs := &events{}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	lb := mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: "a", Zone: "z"}}, Observer: obs})
	boom := errors.New("boom")
	outcomes := []struct {
		o    balancer.Outcome
		want bulwark.Outcome
	}{
		{balancer.Outcome{Latency: 5 * time.Millisecond}, bulwark.Success},
		{balancer.Outcome{Err: boom, Latency: time.Second, Gateway: true}, bulwark.Failure},
		{balancer.Outcome{Err: canceled.Err()}, bulwark.Neutral},
	}
	for _, tt := range outcomes {
		pk, err := lb.Pick("", nil)
		if err != nil {
			t.Fatal(err)
		}
		pk.Done(tt.o)
	}
	calls := obs.kinds(bulwark.EventCall)
	if len(calls) != len(outcomes) {
		t.Fatalf("Done emitted %d EventCall, want %d", len(calls), len(outcomes))
	}
	for i, ev := range calls {
		tt := outcomes[i]
		if ev.Outcome != tt.want || ev.Latency != tt.o.Latency || ev.Err != tt.o.Err || ev.Endpoint.Addr != "a" || ev.Component != bulwark.ComponentBalancer {
			t.Errorf("EventCall %d = %+v, want outcome %v, latency %v, err %v on a", i, ev, tt.want, tt.o.Latency, tt.o.Err)
		}
	}
}
