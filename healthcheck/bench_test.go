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

func BenchmarkOutlierRecord(b *testing.B) {
	d, eps := benchDetector(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		e := eps[i%len(eps)]
		if i%16 == 15 {
			d.Record(e, bulwark.Failure, i%32 == 31)
		} else {
			d.Record(e, bulwark.Success, false)
		}
	}
}

func BenchmarkOutlierRecordParallel(b *testing.B) {
	d, eps := benchDetector(b)
	var seed atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(7919))
		for pb.Next() {
			i++
			e := eps[i%len(eps)]
			if i%16 == 15 {
				d.Record(e, bulwark.Failure, i%32 == 31)
			} else {
				d.Record(e, bulwark.Success, false)
			}
		}
	})
}

// benchDetector returns a detector that knows 100 endpoints, with every rule
// on.
func benchDetector(b *testing.B) (*OutlierDetector, []bulwark.Endpoint) {
	d, err := NewOutlierDetector(OutlierConfig{Rules: allRules})
	if err != nil {
		b.Fatal(err)
	}
	eps := make([]bulwark.Endpoint, 100)
	for i := range eps {
		eps[i] = bulwark.Endpoint{Addr: fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250)}
		d.Record(eps[i], bulwark.Success, false)
	}
	return d, eps
}

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
