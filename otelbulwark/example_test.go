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
	"github.com/bulwark-go/bulwark/limit"
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
	// A retry policy gives up: once on a declined card (not retryable), once
	// after its last attempt failed. error.type tells them apart for alerts.
	obs.Observe(bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry, Name: "payments",
		Attempt: 1, Reason: "not_retryable", Err: bulwark.Permanent(errors.New("card declined"))})
	obs.Observe(bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry, Name: "payments",
		Attempt: 3, Reason: "attempts", Err: errors.New("503 Service Unavailable")})

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
	// bulwark.breaker.call.duration{bulwark.component=breaker,bulwark.name=payments,bulwark.outcome=failure} count=1 sum=2s
	// bulwark.breaker.calls{bulwark.component=breaker,bulwark.name=payments,bulwark.outcome=failure} = 1
	// bulwark.breaker.rejections{bulwark.component=breaker,bulwark.name=payments,bulwark.reason=open} = 1
	// bulwark.breaker.state{bulwark.component=breaker,bulwark.name=payments,bulwark.state=closed} = 0
	// bulwark.breaker.state{bulwark.component=breaker,bulwark.name=payments,bulwark.state=open} = 1
	// bulwark.breaker.transitions{bulwark.component=breaker,bulwark.name=payments,bulwark.previous_state=closed,bulwark.reason=consecutive_failures,bulwark.state=open} = 1
	// bulwark.retry.giveups{bulwark.component=retry,bulwark.name=payments,bulwark.reason=attempts,error.type=transient} = 1
	// bulwark.retry.giveups{bulwark.component=retry,bulwark.name=payments,bulwark.reason=not_retryable,error.type=permanent} = 1
}

// A component that holds the context of the call an event belongs to passes
// it with the event, and the Observer adds the event to that call's span:
// here, what a retry policy does for a request.
func ExampleObserver_ObserveContext() {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	obs, _ := otelbulwark.New() // the global MeterProvider

	ctx, span := tp.Tracer("orders").Start(context.Background(), "POST /orders")
	obs.ObserveContext(ctx, bulwark.Event{Kind: bulwark.EventRetry, Component: bulwark.ComponentRetry, Name: "payments",
		Attempt: 2, Delay: 100 * time.Millisecond, Reason: "error", Err: errors.New("503 Service Unavailable")})
	obs.ObserveContext(ctx, bulwark.Event{Kind: bulwark.EventCall, Component: bulwark.ComponentBreaker, Name: "payments"}) // metrics only
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
	//   exception.message=503 Service Unavailable
}

// Events that come without a context (see bulwark.ContextObserver) can still
// go on a request's span from code that has both: here, an Observer built
// for one request, beside the shared metrics Observer, for a component made
// for that request.
func ExampleAddSpanEvent() {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	metrics, _ := otelbulwark.New() // the global MeterProvider

	ctx, span := tp.Tracer("orders").Start(context.Background(), "POST /orders")
	obs := bulwark.Observers(metrics, bulwark.ObserverFunc(func(e bulwark.Event) {
		otelbulwark.AddSpanEvent(ctx, e)
	}))
	// A component built with obs reports, without a context:
	obs.Observe(bulwark.Event{Kind: bulwark.EventRejected, Component: bulwark.ComponentBreaker, Name: "payments",
		Reason: "open", Err: errors.New("breaker: circuit open")})
	span.End()

	for _, e := range rec.Ended()[0].Events() {
		fmt.Println(e.Name)
		for _, kv := range e.Attributes {
			fmt.Printf("  %s=%s\n", kv.Key, kv.Value.String())
		}
	}
	// Output:
	// bulwark.rejected
	//   bulwark.component=breaker
	//   bulwark.name=payments
	//   bulwark.reason=open
	//   exception.message=breaker: circuit open
}

// A limit's events give its rejections and, for an adaptive limiter, its
// limit; registering it adds what only the limit itself knows: the calls in
// flight and, for a bulkhead, those in its queue.
func ExampleObserver_RegisterLimit() {
	reader := sdkmetric.NewManualReader() // in production: the Prometheus or OTLP exporter
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	obs, _ := otelbulwark.New(otelbulwark.WithMeterProvider(mp))

	db, err := limit.NewBulkhead(limit.BulkheadConfig{Name: "db", Limit: 4, Observer: obs})
	if err != nil {
		fmt.Println(err)
		return
	}
	unregister, err := obs.RegisterLimit(bulwark.ComponentBulkhead, db.Name(), db)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer unregister()

	var held []limit.Permit
	for range 5 { // one more than the limit: refused
		p, err := db.Acquire(limit.WithCriticality(context.Background(), limit.Sheddable))
		if err != nil {
			fmt.Println(err)
			continue
		}
		held = append(held, p)
	}

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
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	for i := range held {
		held[i].Done(nil)
	}
	// Output:
	// limit: rejected (db, limit, sheddable)
	// bulwark.limit.inflight{bulwark.component=bulkhead,bulwark.name=db} = 4
	// bulwark.limit.limit{bulwark.component=bulkhead,bulwark.name=db} = 4
	// bulwark.limit.queued{bulwark.component=bulkhead,bulwark.name=db} = 0
	// bulwark.limit.rejections{bulwark.component=bulkhead,bulwark.criticality=sheddable,bulwark.name=db,bulwark.reason=limit} = 1
}
