package healthcheck

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
)

// BenchmarkChecker10kEndpoints runs a Checker over 10,000 endpoints probed
// every second (no-op probes, the wall clock, the default 64 workers) until
// b.N probes have started, and reports the scheduling lag — how late each
// probe started after its due time — and the goroutines the Checker added.
// Run it with a count of probes: -benchtime 50000x is 5 s of schedule.
func BenchmarkChecker10kEndpoints(b *testing.B) {
	const n = 10000
	lags := make([]time.Duration, b.N)
	var next atomic.Int64
	done := make(chan struct{})
	c, err := New(Config{
		Interval:       time.Second,
		InitialJitter:  time.Second,
		IntervalJitter: 10 * time.Millisecond,
		Probe:          func(context.Context, bulwark.Endpoint) error { return nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	c.lagHook = func(lag time.Duration) {
		i := next.Add(1) - 1
		if i < int64(len(lags)) {
			lags[i] = lag
			if i == int64(len(lags))-1 {
				close(done)
			}
		}
	}
	eps := make([]bulwark.Endpoint, n)
	for i := range eps {
		eps[i] = bulwark.Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:80", i/65536, i/256%256, i%256)}
	}
	if err := c.SetEndpoints(eps); err != nil {
		b.Fatal(err)
	}
	before := runtime.NumGoroutine()
	b.ReportAllocs()
	b.ResetTimer()
	if err := c.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	<-done
	b.StopTimer()
	during := runtime.NumGoroutine()
	c.Close()
	slices.Sort(lags)
	pct := func(p float64) float64 {
		return float64(lags[int(p*float64(len(lags)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-lag-ms")
	b.ReportMetric(pct(0.99), "p99-lag-ms")
	b.ReportMetric(pct(1), "max-lag-ms")
	b.ReportMetric(float64(during-before), "goroutines")
}
