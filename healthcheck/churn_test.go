package healthcheck

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

// TestChurnKeepsMemoryFlat churns 100,000 endpoints through a running
// Checker, 50 members at a time, 10 replaced per set: it ends with exactly
// the 50 members in its maps, queues and heap, and the live heap after the last 90,000 endpoints is what it was after the
// first 10,000.
func TestChurnKeepsMemoryFlat(t *testing.T) {
	const (
		total  = 100_000
		window = 50
		step   = 10
	)
	clk := bulwarktest.NewClock(time.Time{})
	c, err := New(Config{Interval: time.Second, Clock: clk, Workers: 4,
		Probe: func(context.Context, bulwark.Endpoint) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	endpoint := func(i int) bulwark.Endpoint {
		return bulwark.Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:80", i>>16, i>>8&0xff, i&0xff)}
	}
	set := make([]bulwark.Endpoint, window)
	// churn moves the window from endpoint first to endpoint last.
	churn := func(first, last int) {
		for lo := first; lo+window <= last; lo += step {
			for k := range set {
				set[k] = endpoint(lo + k)
			}
			if err := c.SetEndpoints(set); err != nil {
				t.Fatal(err)
			}
		}
		c.waitIdle(t)
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
		c.mu.Lock()
		targets, queued, notes := len(c.targets), len(c.queue), len(c.notes.Queue)
		c.mu.Unlock()
		if targets != window || queued > window || notes != 0 {
			t.Errorf("%s: checker has %d targets, %d queued, %d notices; want %d, at most %d, 0",
				when, targets, queued, notes, window, window)
		}
	}

	churn(0, total/10)
	check("after 10,000 endpoints")
	before := liveHeap()
	churn(total/10, total)
	check("after 100,000 endpoints")
	after := liveHeap()
	t.Logf("live heap after 10,000 endpoints: %d KiB; after 100,000: %d KiB", before>>10, after>>10)
	// Keeping what it saw would hold about 90,000 targets, tens of MiB.
	if after > before+1<<20 {
		t.Errorf("live heap grew from %d KiB to %d KiB over 90,000 more endpoints, want flat (within 1 MiB)", before>>10, after>>10)
	}
}
