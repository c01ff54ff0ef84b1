package balancer

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/bulwark-go/bulwark"
)

func TestStateFillsItsSizeClass(t *testing.T) {
	if got := unsafe.Sizeof(state{}); got != stateSize {
		t.Errorf("unsafe.Sizeof(state{}) = %d, want %d", got, stateSize)
	}
	// Every pick reads gated and the in-flight count: one cache line.
	if got := unsafe.Offsetof(state{}.gated); got >= 64 {
		t.Errorf("unsafe.Offsetof(state{}.gated) = %d, want within the first cache line (< 64)", got)
	}
}

func TestSmoothScheduleMatchesNginx(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		want    string
	}{
		{"nginx 5 1 1", []int{5, 1, 1}, "aabacaa"},
		{"equal", []int{1, 1, 1}, "abc"},
		{"gcd reduced", []int{4, 2}, "aba"},
		{"two to one", []int{2, 1}, "aba"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var eps []bulwark.Endpoint
			for i, w := range tt.weights {
				eps = append(eps, bulwark.Endpoint{Addr: string(rune('a' + i)), Weight: w})
			}
			b, err := New(Config{Endpoints: eps})
			if err != nil {
				t.Fatal(err)
			}
			s := b.snap.Load()
			var got strings.Builder
			for _, i := range s.primary.sched {
				got.WriteString(s.entries[i].ep.Addr)
			}
			if got.String() != tt.want {
				t.Errorf("schedule(%v) = %q, want %q", tt.weights, got.String(), tt.want)
			}
		})
	}
}

func TestAliasSamplingMatchesWeights(t *testing.T) {
	weights := []int{1, 7, 2, 10}
	var eps []bulwark.Endpoint
	total := 0
	for i, w := range weights {
		eps = append(eps, bulwark.Endpoint{Addr: string(rune('a' + i)), Weight: w})
		total += w
	}
	b, err := New(Config{Endpoints: eps, Algorithm: Random})
	if err != nil {
		t.Fatal(err)
	}
	p := b.snap.Load().primary
	// Walk the random bits evenly: every index k with 4096 threshold values.
	counts := make([]int, len(weights))
	const steps = 4096
	for k := range uint64(len(weights)) {
		for s := range uint64(steps) {
			hi := (k<<32 + (1<<32)/2) / uint64(len(weights))
			r := hi<<32 | (s<<32)/steps
			counts[p.sample(r)]++
		}
	}
	for i, w := range weights {
		got := float64(counts[i]) / float64(len(weights)*steps)
		want := float64(w) / float64(total)
		if math.Abs(got-want) > 0.001 {
			t.Errorf("share of weight %d = %.4f, want %.4f", w, got, want)
		}
	}
}

func TestPeakEWMADecays(t *testing.T) {
	b, err := New(Config{Algorithm: PeakEWMA, DecayTime: 10 * time.Second, Endpoints: []bulwark.Endpoint{{Addr: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	e := &b.snap.Load().entries[0]
	t0 := int64(time.Hour)
	b.observeAt(e.st, 100*time.Millisecond, t0)
	if got := b.ewmaLoad(e, t0); math.Abs(got-1e8) > 1e3 {
		t.Fatalf("load after a 100ms call = %v, want 1e8", got)
	}
	tests := []struct {
		name  string
		after time.Duration
		want  float64
	}{
		{"one decay time", 10 * time.Second, 1e8 * math.Exp(-1)},
		{"three decay times", 30 * time.Second, 1e8 * math.Exp(-3)},
		{"a millisecond", time.Millisecond, 1e8 * math.Exp(-0.0001)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := b.ewmaLoad(e, t0+int64(tt.after))
			if math.Abs(got-tt.want)/tt.want > 0.001 {
				t.Errorf("load %v later = %v, want %v", tt.after, got, tt.want)
			}
		})
	}
	// Then each observation, in turn, against the estimate it finds.
	steps := []struct {
		name string
		at   time.Duration // since t0
		rtt  time.Duration
		want float64 // the estimate after it
	}{
		{"a peak raises it at most 1.5-fold", time.Second, 300 * time.Millisecond, 1.5e8},
		{"the next peak goes on", time.Second, 300 * time.Millisecond, 2.25e8},
		{"up to the peak", time.Second, 300 * time.Millisecond, 3e8},
		{"a faster call a decay time later moves it by 1 - 1/e",
			11 * time.Second, 100 * time.Millisecond, 3e8*math.Exp(-1) + 1e8*(1-math.Exp(-1))},
		{"a faster call at once moves it by 1/8",
			11 * time.Second, 0, (3e8*math.Exp(-1) + 1e8*(1-math.Exp(-1))) * 7 / 8},
		{"after long idle it is measured afresh, even below its estimate",
			71 * time.Second, 20 * time.Millisecond, 2e7},
	}
	for _, st := range steps {
		now := t0 + int64(st.at)
		b.observeAt(e.st, st.rtt, now)
		if got := b.ewmaLoad(e, now); math.Abs(got-st.want)/st.want > 0.001 {
			t.Errorf("%s: load after %v at %v = %v, want %v", st.name, st.rtt, st.at, got, st.want)
		}
	}
}

func TestDecayApproximation(t *testing.T) {
	for _, x := range []float64{0, 1e-6, 1e-3, 0.01, 1.0 / 64, 0.5, 3} {
		if got, want := decay(x), math.Exp(-x); math.Abs(got-want) > 1e-9 {
			t.Errorf("decay(%v) = %v, want %v", x, got, want)
		}
	}
}

// downOnFailure is a Judge and a Recorder, as an outlier detector is: it
// finds an endpoint down on the call that fails, from Pick.Done.
type downOnFailure struct {
	report func(bulwark.Endpoint, bool)
}

func (d *downOnFailure) Attach(report func(bulwark.Endpoint, bool)) (bool, error) {
	d.report = report
	return false, nil
}
func (d *downOnFailure) SetEndpoints([]bulwark.Endpoint) error { return nil }
func (d *downOnFailure) Record(ep bulwark.Endpoint, o bulwark.Outcome, _ bool) {
	if o == bulwark.Failure {
		d.report(ep, false)
	}
}

// TestDoneNeverRebuilds: a Done whose outcome makes a judge find its
// endpoint down returns without the balancer's lock, which the test holds
// as a long rebuild would; picks skip the endpoint at once, and the
// background publisher rebuilds the snapshot once the lock is free.
func TestDoneNeverRebuilds(t *testing.T) {
	eps := []bulwark.Endpoint{{Addr: "a"}, {Addr: "b"}, {Addr: "c"}, {Addr: "d"}}
	b, err := New(Config{Endpoints: eps, Followers: []Follower{&downOnFailure{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var victim Pick
	for {
		pk, err := b.Pick("", nil)
		if err != nil {
			t.Fatal(err)
		}
		if pk.Endpoint().Addr == "a" {
			victim = pk
			break
		}
		pk.Done(Result{})
	}

	b.mu.Lock()
	returned := make(chan struct{})
	go func() {
		victim.Done(Result{Err: errors.New("reset")})
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second): // only a Done that waits for the lock gets here
		b.mu.Unlock()
		t.Fatal("Done blocked on the balancer's lock while an ejection was published")
	}
	pickedA := 0
	for range 100 {
		pk, err := b.Pick("", nil)
		if err == nil && pk.Endpoint().Addr == "a" {
			pickedA++
		}
		pk.Done(Result{})
	}
	rebuilt := len(b.snap.Load().primary.idx) != 4
	b.mu.Unlock()
	if pickedA > 0 || rebuilt {
		t.Fatalf("before the snapshot was rebuilt: a, found down, picked %d times of 100; snapshot rebuilt under the test's lock: %v", pickedA, rebuilt)
	}
	Settle(b)
	s := b.snap.Load()
	if len(s.primary.idx) != 3 || s.gen != b.gen.Load() {
		t.Errorf("snapshot after the publisher ran: %d in the pool, gen %d of %d; want 3, current", len(s.primary.idx), s.gen, b.gen.Load())
	}
}

// TestSmoothScheduleWindows checks the bound that RoundRobin's doc states:
// in any run of consecutive positions of a smooth weighted schedule (taken
// around its end too), each endpoint's count is within 2 of its weighted
// share.
func TestSmoothScheduleWindows(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	worst := 0.0
	for range 300 {
		var eps []bulwark.Endpoint
		for i := range 2 + rng.IntN(7) {
			eps = append(eps, bulwark.Endpoint{Addr: fmt.Sprint(i), Weight: 1 + rng.IntN(1+rng.IntN(30))})
		}
		b, err := New(Config{Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		s := b.snap.Load()
		p := s.primary
		period := len(p.sched)
		for k, i := range p.idx {
			share := float64(s.entries[i].w) / float64(p.total)
			for start := range period {
				n := 0
				for length := 1; length <= 2*period; length++ {
					if p.sched[(start+length-1)%period] == i {
						n++
					}
					d := math.Abs(float64(n) - share*float64(length))
					worst = max(worst, d)
					if d > 2 {
						t.Fatalf("weights %v: endpoint %d got %d of %d positions from %d, want %.2f ± 2", eps, k, n, length, start, share*float64(length))
					}
				}
			}
		}
	}
	t.Logf("worst deviation in a window: %.3f", worst)
}

// TestStripesWalkTheSchedule: each stripe walks the schedule in order, one
// position per pick, from its own offset; positions are exact for counters
// far beyond what a process reaches (the fast modulo is exact below 2^48 for
// schedules of up to 2^16 positions).
func TestStripesWalkTheSchedule(t *testing.T) {
	b, err := New(Config{Endpoints: []bulwark.Endpoint{{Addr: "a", Weight: 5}, {Addr: "b", Weight: 1}, {Addr: "c", Weight: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	p := b.snap.Load().primary
	L := uint64(len(p.sched))
	for sn := range uint64(numStripes) {
		for _, base := range []uint64{0, 1 << 32, 1<<48 - 4*L} {
			for n := base; n < base+3*L; n++ {
				if got, want := p.next(n, sn), p.sched[(n+p.off[sn])%L]; got != want {
					t.Fatalf("stripe %d, pick %d: entry %d, want %d (schedule position %d)", sn, n, got, want, (n+p.off[sn])%L)
				}
			}
		}
	}
	rng := rand.New(rand.NewPCG(7, 9))
	for range 200000 {
		d := 1 + rng.Uint64N(maxSchedule)
		n := rng.Uint64N(1 << 48)
		magic := math.MaxUint64/d + 1
		if hi, _ := bits.Mul64(magic*n, d); hi != n%d {
			t.Fatalf("fast %d mod %d = %d, want %d", n, d, hi, n%d)
		}
	}
}
