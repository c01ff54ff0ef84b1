package outlier

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

// TestChurnKeepsMemoryFlat churns 100,000 endpoints through a Detector, 50
// members at a time, 10 replaced per set: it ends with exactly the 50
// members in its maps, and the live heap after the last 90,000 endpoints is what it was after the
// first 10,000.
func TestChurnKeepsMemoryFlat(t *testing.T) {
	const (
		total  = 100_000
		window = 50
		step   = 10
	)
	clk := bulwarktest.NewClock(time.Time{})
	d, err := New(Config{Clock: clk, MaxEjectionPercent: 20})
	if err != nil {
		t.Fatal(err)
	}
	endpoint := func(i int) bulwark.Endpoint {
		return bulwark.Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:80", i>>16, i>>8&0xff, i&0xff)}
	}
	set := make([]bulwark.Endpoint, window)
	// churn moves the window from endpoint first to endpoint last, feeding
	// the detector a failure run on every third member.
	churn := func(first, last int) {
		for lo := first; lo+window <= last; lo += step {
			for k := range set {
				set[k] = endpoint(lo + k)
			}
			if err := d.SetEndpoints(set); err != nil {
				t.Fatal(err)
			}
			for k := window - step; k < window; k++ {
				o := bulwark.Success
				if (lo+k)%3 == 0 {
					o = bulwark.Failure
				}
				for range 5 {
					d.Record(set[k], o, false)
				}
			}
		}
	}
	liveHeap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	check := func(when string) {
		t.Helper()
		d.mu.Lock()
		hosts, ejected := len(*d.hosts.Load()), d.ejected
		d.mu.Unlock()
		if hosts != window || ejected > window/5 {
			t.Errorf("%s: detector has %d hosts, %d ejected; want %d, at most %d", when, hosts, ejected, window, window/5)
		}
	}

	churn(0, total/10)
	check("after 10,000 endpoints")
	before := liveHeap()
	churn(total/10, total)
	check("after 100,000 endpoints")
	after := liveHeap()
	t.Logf("live heap after 10,000 endpoints: %d KiB; after 100,000: %d KiB", before>>10, after>>10)
	// Keeping what it saw would hold about 90,000 hosts, tens of MiB.
	if after > before+1<<20 {
		t.Errorf("live heap grew from %d KiB to %d KiB over 90,000 more endpoints, want flat (within 1 MiB)", before>>10, after>>10)
	}
}
