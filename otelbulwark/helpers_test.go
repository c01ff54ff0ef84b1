package otelbulwark_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/bulwark-go/bulwark/otelbulwark"
)

// newObserver returns an Observer on an SDK MeterProvider read by a
// ManualReader.
func newObserver(t testing.TB) (*otelbulwark.Observer, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	o, err := otelbulwark.New(otelbulwark.WithMeterProvider(mp))
	require.NoError(t, err)
	return o, reader
}

// point is one data point: a counter's or integer gauge's value, a float
// gauge's value (in sum), or a histogram's count and sum.
type point struct {
	value int64
	count uint64
	sum   float64
}

// snapshot maps metric name, then attributes rendered by attrString, to the
// data points of one collection.
type snapshot map[string]map[string]point

func collect(t testing.TB, r *sdkmetric.ManualReader) snapshot {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	s := snapshot{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			pts := map[string]point{}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					pts[attrString(dp.Attributes)] = point{value: dp.Value}
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					pts[attrString(dp.Attributes)] = point{value: dp.Value}
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					pts[attrString(dp.Attributes)] = point{sum: dp.Value}
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					pts[attrString(dp.Attributes)] = point{count: dp.Count, sum: dp.Sum}
				}
			default:
				t.Fatalf("metric %s has unexpected data %T", m.Name, m.Data)
			}
			s[m.Name] = pts
		}
	}
	return s
}

// attrString renders a set as "k=v,k=v" in key order.
func attrString(set attribute.Set) string {
	parts := make([]string, 0, set.Len())
	for _, kv := range set.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.String())
	}
	return strings.Join(parts, ",")
}

// sortAttrs puts "k=v,k=v" in key order, as attrString renders it.
func sortAttrs(s string) string {
	parts := strings.Split(s, ",")
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func splitAttrs(s string) []string { return strings.Split(s, ",") }

// checkWants checks that got has each of the points of wants.
func checkWants(t testing.TB, got snapshot, wants []want) {
	t.Helper()
	for _, w := range wants {
		p, ok := got[w.metric][sortAttrs(w.attrs)]
		if !ok {
			t.Errorf("%s{%s} missing; recorded: %v", w.metric, w.attrs, got[w.metric])
			continue
		}
		if p.value != w.point.value || p.count != w.point.count || !near(p.sum, w.point.sum) {
			t.Errorf("%s{%s} = %+v, want %+v", w.metric, w.attrs, p, w.point)
		}
	}
}
