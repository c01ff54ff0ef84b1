package benchmarks

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/otelbulwark"
)

// Recording one guarded call (a counter by outcome and a latency histogram,
// attributes component, name, outcome), the event a breaker emits per call:
//
//   - baseline: an Observer that does nothing, the floor of any Observer
//     (an interface call and a copy of the Event);
//   - bulwark/…: otelbulwark's Observer, with no SDK (the global no-op
//     provider) and with the OTel SDK and a ManualReader;
//   - otelDirect/…: the same two instruments called by hand with
//     metric.WithAttributes per call, as instrumentation without a cache does;
//   - clientGolang: prometheus/client_golang CounterVec and HistogramVec with
//     WithLabelValues per call, the usual direct Prometheus instrumentation.

var otCall = bulwark.Event{Kind: bulwark.EventCall, Component: bulwark.ComponentBreaker, Name: "payments",
	Outcome: bulwark.Success, Latency: 3 * time.Millisecond}

func otSDK(b *testing.B) metric.MeterProvider {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return mp
}

// otDirect records otCall on hand-made instruments, building the attributes
// per call.
type otDirect struct {
	calls metric.Int64Counter
	dur   metric.Float64Histogram
}

func newOTDirect(b *testing.B, mp metric.MeterProvider) *otDirect {
	m := mp.Meter("direct")
	c, err := m.Int64Counter("calls")
	if err != nil {
		b.Fatal(err)
	}
	h, err := m.Float64Histogram("call.duration", metric.WithUnit("s"))
	if err != nil {
		b.Fatal(err)
	}
	return &otDirect{calls: c, dur: h}
}

func (d *otDirect) Observe(e bulwark.Event) {
	ctx := context.Background()
	opt := metric.WithAttributes(
		attribute.String("component", e.Component),
		attribute.String("name", e.Name),
		attribute.String("outcome", e.Outcome.String()),
	)
	d.calls.Add(ctx, 1, opt)
	d.dur.Record(ctx, e.Latency.Seconds(), opt)
}

// promDirect records otCall with client_golang.
type promDirect struct {
	calls *prometheus.CounterVec
	dur   *prometheus.HistogramVec
}

func newPromDirect(b *testing.B) *promDirect {
	reg := prometheus.NewRegistry()
	labels := []string{"component", "name", "outcome"}
	d := &promDirect{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "calls_total"}, labels),
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "call_duration_seconds",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}}, labels),
	}
	if err := reg.Register(d.calls); err != nil {
		b.Fatal(err)
	}
	if err := reg.Register(d.dur); err != nil {
		b.Fatal(err)
	}
	return d
}

func (d *promDirect) Observe(e bulwark.Event) {
	o := e.Outcome.String()
	d.calls.WithLabelValues(e.Component, e.Name, o).Inc()
	d.dur.WithLabelValues(e.Component, e.Name, o).Observe(e.Latency.Seconds())
}

func BenchmarkOTelObserver(b *testing.B) {
	bulwarkObs := func(mp metric.MeterProvider) func(*testing.B) bulwark.Observer {
		return func(b *testing.B) bulwark.Observer {
			var opts []otelbulwark.Option
			if mp != nil {
				opts = append(opts, otelbulwark.WithMeterProvider(mp))
			}
			o, err := otelbulwark.New(opts...)
			if err != nil {
				b.Fatal(err)
			}
			return o
		}
	}
	cases := []struct {
		name string
		new  func(*testing.B) bulwark.Observer
	}{
		{"baseline", func(*testing.B) bulwark.Observer { return bulwark.ObserverFunc(func(bulwark.Event) {}) }},
		{"bulwark/noSDK", bulwarkObs(nil)},
		{"otelDirect/noSDK", func(b *testing.B) bulwark.Observer { return newOTDirect(b, noop.NewMeterProvider()) }},
		{"bulwark/sdk", func(b *testing.B) bulwark.Observer { return bulwarkObs(otSDK(b))(b) }},
		{"otelDirect/sdk", func(b *testing.B) bulwark.Observer { return newOTDirect(b, otSDK(b)) }},
		{"clientGolang", func(b *testing.B) bulwark.Observer { return newPromDirect(b) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			o := c.new(b)
			b.ReportAllocs()
			for b.Loop() {
				o.Observe(otCall)
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			o := c.new(b)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					o.Observe(otCall)
				}
			})
		})
	}
}
