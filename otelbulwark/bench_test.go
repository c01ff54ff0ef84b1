package otelbulwark_test

import (
	"testing"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/otelbulwark"
)

// BenchmarkObserver measures one Observe per op, cycling through one event of
// every kind. noSDK uses the global provider with no SDK installed, the cost
// a library user pays for wiring the adapter in without exporting; sdk
// records into an SDK MeterProvider with a ManualReader.
func BenchmarkObserver(b *testing.B) {
	events := everyKind()
	noSDK := func(b *testing.B) *otelbulwark.Observer {
		o, err := otelbulwark.New()
		if err != nil {
			b.Fatal(err)
		}
		return o
	}
	sdk := func(b *testing.B) *otelbulwark.Observer {
		o, _ := newObserver(b)
		return o
	}
	for _, bc := range []struct {
		name string
		new  func(*testing.B) *otelbulwark.Observer
	}{
		{"noSDK", noSDK},
		{"sdk", sdk},
	} {
		b.Run(bc.name, func(b *testing.B) {
			o := bc.new(b)
			var obs bulwark.Observer = o
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				obs.Observe(events[i])
				if i++; i == len(events) {
					i = 0
				}
			}
		})
		b.Run(bc.name+"Parallel", func(b *testing.B) {
			o := bc.new(b)
			var obs bulwark.Observer = o
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					obs.Observe(events[i])
					if i++; i == len(events) {
						i = 0
					}
				}
			})
		})
	}
}
