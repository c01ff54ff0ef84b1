package balancer

import (
	"math"
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
	// A peak replaces the estimate at once; a faster call moves it by the
	// weight its time earns.
	b.observeAt(e.st, 300*time.Millisecond, t0+int64(time.Second))
	if got := b.ewmaLoad(e, t0+int64(time.Second)); math.Abs(got-3e8) > 1e3 {
		t.Errorf("load after a 300ms peak = %v, want 3e8", got)
	}
	b.observeAt(e.st, 0, t0+int64(11*time.Second))
	want := 3e8 * math.Exp(-1)
	if got := b.ewmaLoad(e, t0+int64(11*time.Second)); math.Abs(got-want)/want > 0.001 {
		t.Errorf("load after a fast call one decay time later = %v, want %v", got, want)
	}
}

func TestDecayApproximation(t *testing.T) {
	for _, x := range []float64{0, 1e-6, 1e-3, 0.01, 1.0 / 64, 0.5, 3} {
		if got, want := decay(x), math.Exp(-x); math.Abs(got-want) > 1e-9 {
			t.Errorf("decay(%v) = %v, want %v", x, got, want)
		}
	}
}
