package otelbulwark_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/otelbulwark"
)

// TestCountsAcrossCollections checks that counts held between collections
// (once a collection has run, counters add up in the Observer and reach the
// SDK at the next one) come out the same as counts given to the SDK at once:
// an Observer collected before, between and after three rounds of every
// kind of event ends with the same data as one collected only at the end.
func TestCountsAcrossCollections(t *testing.T) {
	direct, directReader := newObserver(t)
	held, heldReader := newObserver(t)
	collect(t, heldReader)
	for range 3 {
		for _, e := range everyKind() {
			direct.Observe(e)
			held.Observe(e)
		}
		collect(t, heldReader)
	}
	got, want := collect(t, heldReader), collect(t, directReader)
	require.NotEmpty(t, want["bulwark.breaker.calls"])
	require.Equal(t, want, got)
}

// TestCountsWithoutGauges checks the counters of an Observer whose gauges a
// View drops, so that the SDK runs none of its callbacks: they are given to
// the SDK at once, not held for a collection that never takes them.
func TestCountsWithoutGauges(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	drop := sdkmetric.NewView(
		sdkmetric.Instrument{Kind: sdkmetric.InstrumentKindObservableGauge},
		sdkmetric.Stream{Aggregation: sdkmetric.AggregationDrop{}})
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithView(drop))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	o, err := otelbulwark.New(otelbulwark.WithMeterProvider(mp))
	require.NoError(t, err)
	call := bulwark.Event{Kind: bulwark.EventCall, Component: "breaker", Name: "payments", Outcome: bulwark.Success}
	for i := range 3 {
		o.Observe(call)
		got := collect(t, reader)
		require.Equal(t, map[string]point{"bulwark.component=breaker,bulwark.name=payments,bulwark.outcome=success": {value: int64(i + 1)}},
			got["bulwark.breaker.calls"], "bulwark.breaker.calls after %d calls", i+1)
	}
}
