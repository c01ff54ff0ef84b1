package breaker

import (
	"math/bits"
	"sync"
	"testing"
)

func TestCountRing(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		outcomes  string // f failure, s success, S slow success
		wantCalls int64
		wantFails int64
		wantSlows int64
	}{
		{"empty", 10, "", 0, 0, 0},
		{"filling", 10, "sfS", 3, 1, 1},
		{"full", 4, "ffffssss", 4, 0, 0},
		{"slides", 4, "ffffsf", 4, 3, 0},
		{"chunked window, filling", 128, "fffffffffs", 10, 9, 0},
		{"chunked window, slides", 64, "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff" +
			"ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssSSSf", 64, 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newCountRing(tt.n, 8, true)
			for _, c := range tt.outcomes {
				r.record(c == 'f', c == 'S')
			}
			calls, fails, slows := r.totals()
			if calls != tt.wantCalls || fails != tt.wantFails || slows != tt.wantSlows {
				t.Errorf("window %d after %q: totals() = %d, %d, %d; want %d, %d, %d",
					tt.n, tt.outcomes, calls, fails, slows, tt.wantCalls, tt.wantFails, tt.wantSlows)
			}
		})
	}
}

func TestCountRingConcurrentSafe(t *testing.T) {
	const n = 1000
	r := newCountRing(n, 8, false)
	if r.chunk < 2 {
		t.Fatalf("window %d has chunk %d, want chunks", n, r.chunk)
	}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 3000; i++ {
				r.record((i+w)%3 == 0, false)
			}
		}()
	}
	wg.Wait()
	calls, fails, _ := r.totals()
	set := int64(0)
	for i := range r.fail {
		set += int64(bits.OnesCount64(r.fail[i].Load()))
	}
	if fails != set {
		t.Errorf("failure count %d, but %d bits set", fails, set)
	}
	if calls != n {
		t.Errorf("totals() calls = %d after 24000 calls, want %d", calls, n)
	}
	if fails < n/4 || fails > n/2 {
		t.Errorf("totals() fails = %d of %d with a third failing, want about a third", fails, n)
	}
}
