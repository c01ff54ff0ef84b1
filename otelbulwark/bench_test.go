package otelbulwark_test

import (
	"testing"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/otelbulwark"
)

// BenchmarkObserver measures one Observe per op, cycling through one event of
// every kind. baseline is an Observer that does nothing, the floor of any
// Observer; noSDK uses the global provider with no SDK installed, the cost a
// library user pays for wiring the adapter in without exporting (what it adds
// is noSDK minus baseline); sdk records into an SDK MeterProvider with a
// ManualReader that has collected once, as in a service that is scraped or
// exports periodically (counts add up in the Observer until the next
// collection); sdkUncollected into one that has not collected yet (counts go
// to the SDK at once).
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
		o, r := newObserver(b)
		collect(b, r)
		return o
	}
	sdkUncollected := func(b *testing.B) *otelbulwark.Observer {
		o, _ := newObserver(b)
		return o
	}
	// baseline is an Observer that does nothing: the cost of the interface
	// call and of copying the Event, which any Observer pays.
	baseline := func(*testing.B) bulwark.Observer { return bulwark.ObserverFunc(func(bulwark.Event) {}) }
	for _, bc := range []struct {
		name string
		new  func(*testing.B) bulwark.Observer
	}{
		{"baseline", baseline},
		{"noSDK", func(b *testing.B) bulwark.Observer { return noSDK(b) }},
		{"sdk", func(b *testing.B) bulwark.Observer { return sdk(b) }},
		{"sdkUncollected", func(b *testing.B) bulwark.Observer { return sdkUncollected(b) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			obs := bc.new(b)
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
			obs := bc.new(b)
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
