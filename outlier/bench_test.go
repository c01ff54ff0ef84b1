package outlier

import (
	"fmt"
	"sync/atomic"
	"testing"

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
func benchDetector(b *testing.B) (*Detector, []bulwark.Endpoint) {
	d, err := New(Config{Rules: allRules})
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
