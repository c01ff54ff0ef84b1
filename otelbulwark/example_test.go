package otelbulwark_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/otelbulwark"
)

// The application installs an SDK; the Observer goes into every component's
// Config. Here events are fed by hand to show what gets recorded.
func Example() {
	reader := sdkmetric.NewManualReader() // in production: the Prometheus or OTLP exporter
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	obs, err := otelbulwark.New(otelbulwark.WithMeterProvider(mp))
	if err != nil {
		fmt.Println(err)
		return
	}
	// A breaker named "payments" with this Observer in its Config emits:
	obs.Observe(bulwark.Event{Kind: bulwark.EventCall, Component: bulwark.ComponentBreaker, Name: "payments",
		Outcome: bulwark.Failure, Latency: 2 * time.Second})
	obs.Observe(bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentBreaker, Name: "payments",
		From: "closed", To: "open", Reason: "consecutive_failures"})
	obs.Observe(bulwark.Event{Kind: bulwark.EventRejected, Component: bulwark.ComponentBreaker, Name: "payments",
		Reason: "open"})

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		fmt.Println(err)
		return
	}
	labels := func(set attribute.Set) string {
		var kv []string
		for _, a := range set.ToSlice() {
			kv = append(kv, string(a.Key)+"="+a.Value.AsString())
		}
		return "{" + strings.Join(kv, ",") + "}"
	}
	var lines []string
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, dp := range d.DataPoints {
				lines = append(lines, fmt.Sprintf("%s%s = %d", m.Name, labels(dp.Attributes), dp.Value))
			}
		case metricdata.Gauge[int64]:
			for _, dp := range d.DataPoints {
				lines = append(lines, fmt.Sprintf("%s%s = %d", m.Name, labels(dp.Attributes), dp.Value))
			}
		case metricdata.Histogram[float64]:
			for _, dp := range d.DataPoints {
				lines = append(lines, fmt.Sprintf("%s%s count=%d sum=%gs", m.Name, labels(dp.Attributes), dp.Count, dp.Sum))
			}
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// bulwark.breaker.call.duration{component=breaker,name=payments,outcome=failure} count=1 sum=2s
	// bulwark.breaker.calls{component=breaker,name=payments,outcome=failure} = 1
	// bulwark.breaker.rejections{component=breaker,name=payments,reason=open} = 1
	// bulwark.breaker.state{component=breaker,name=payments,state=closed} = 0
	// bulwark.breaker.state{component=breaker,name=payments,state=open} = 1
	// bulwark.breaker.transitions{component=breaker,from=closed,name=payments,reason=consecutive_failures,to=open} = 1
}

// An Event carries no context, so span events need the caller's: a component
// built for one request can be given an Observer that adds its events to that
// request's span, beside the shared metrics Observer.
func ExampleAddSpanEvent() {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	metrics, _ := otelbulwark.New() // the global MeterProvider

	ctx, span := tp.Tracer("orders").Start(context.Background(), "POST /orders")
	obs := bulwark.Observers(metrics, bulwark.ObserverFunc(func(e bulwark.Event) {
		otelbulwark.AddSpanEvent(ctx, e)
	}))
	// A retry policy built with obs for this request emits:
	obs.Observe(bulwark.Event{Kind: bulwark.EventRetry, Component: bulwark.ComponentRetry, Name: "payments",
		Attempt: 2, Delay: 100 * time.Millisecond, Reason: "error", Err: errors.New("503 Service Unavailable")})
	obs.Observe(bulwark.Event{Kind: bulwark.EventCall, Component: bulwark.ComponentRetry, Name: "payments"}) // not a span event
	span.End()

	for _, e := range rec.Ended()[0].Events() {
		fmt.Println(e.Name)
		for _, kv := range e.Attributes {
			fmt.Printf("  %s=%s\n", kv.Key, kv.Value.String())
		}
	}
	// Output:
	// bulwark.retry
	//   bulwark.component=retry
	//   bulwark.name=payments
	//   bulwark.attempt=2
	//   bulwark.delay=0.1
	//   bulwark.reason=error
	//   error.message=503 Service Unavailable
}
