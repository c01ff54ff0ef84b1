package otelbulwark_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/otelbulwark"
)

func TestAddSpanEvent(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")

	events := []bulwark.Event{
		{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: epA}, // ignored
		{Kind: bulwark.EventRetry, Component: "retry", Name: "payments", Attempt: 2, Delay: 250 * time.Millisecond, Reason: "error", Err: errBoom},
		{Kind: bulwark.EventCall, Component: "breaker", Name: "payments", Outcome: bulwark.Failure}, // ignored
		{Kind: bulwark.EventRejected, Component: "breaker", Name: "payments", Reason: "open", Err: errBoom},
		{Kind: bulwark.EventReplayed, Component: "idempotency", Name: "orders", Key: "key-1"},
		{Kind: bulwark.EventStateChange, Component: "breaker", Name: "payments", From: "closed", To: "open"}, // ignored
		{Kind: bulwark.EventGiveUp, Component: "retry", Name: "payments", Endpoint: epA, Attempt: 1, Reason: "not_retryable", Err: errBoom},
		{Kind: bulwark.EventRejected, Component: "limiter", Name: "api", Reason: "tenant", Err: rejected(limit.ReasonTenant, limit.Critical, "t1")},
	}
	for _, e := range events {
		otelbulwark.AddSpanEvent(ctx, e)
	}
	span.End()

	spans := rec.Ended()
	require.Len(t, spans, 1)
	got := spans[0].Events()
	tests := []struct {
		name  string
		attrs []attribute.KeyValue
	}{
		{"bulwark.retry", []attribute.KeyValue{
			attribute.String("bulwark.component", "retry"), attribute.String("bulwark.name", "payments"),
			attribute.Int("bulwark.attempt", 2), attribute.Float64("bulwark.delay", 0.25),
			attribute.String("bulwark.reason", "error"), attribute.String("exception.message", "boom"),
		}},
		{"bulwark.rejected", []attribute.KeyValue{
			attribute.String("bulwark.component", "breaker"), attribute.String("bulwark.name", "payments"),
			attribute.String("bulwark.reason", "open"), attribute.String("exception.message", "boom"),
		}},
		{"bulwark.replayed", []attribute.KeyValue{
			attribute.String("bulwark.component", "idempotency"), attribute.String("bulwark.name", "orders"),
			attribute.String("bulwark.key", "key-1"),
		}},
		{"bulwark.give_up", []attribute.KeyValue{
			attribute.String("bulwark.component", "retry"), attribute.String("bulwark.name", "payments"),
			attribute.String("server.address", "10.0.0.1"), attribute.Int("server.port", 80),
			attribute.String("cloud.availability_zone", "a"), attribute.Int("bulwark.attempt", 1),
			attribute.String("bulwark.reason", "not_retryable"), attribute.String("error.type", "permanent"),
			attribute.String("exception.message", "boom"),
		}},
		{"bulwark.rejected", []attribute.KeyValue{
			attribute.String("bulwark.component", "limiter"), attribute.String("bulwark.name", "api"),
			attribute.String("bulwark.reason", "tenant"), attribute.String("bulwark.criticality", "critical"),
			attribute.String("exception.message", `limit: rejected (api, tenant, critical, tenant "t1")`),
		}},
	}
	require.Len(t, got, len(tests), "span events")
	for i, tt := range tests {
		if got[i].Name != tt.name {
			t.Errorf("event %d name = %q, want %q", i, got[i].Name, tt.name)
		}
		require.ElementsMatch(t, tt.attrs, got[i].Attributes, "attributes of %s", tt.name)
	}
}

// TestAddSpanEventNoSpan checks that a context without a recording span costs
// nothing.
func TestAddSpanEventNoSpan(t *testing.T) {
	ctx := context.Background()
	e := bulwark.Event{Kind: bulwark.EventRetry, Component: "retry", Attempt: 2, Err: errBoom}
	if n := testing.AllocsPerRun(100, func() { otelbulwark.AddSpanEvent(ctx, e) }); n != 0 {
		t.Errorf("AddSpanEvent(no span) = %v allocs, want 0", n)
	}
}

// TestObserveContextAddsSpanEvents: a component that holds the call's context
// passes it along, and the Observer puts the event on that call's span
// without any wiring by the caller.
func TestObserveContextAddsSpanEvents(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	o, err := otelbulwark.New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	o.ObserveContext(ctx, bulwark.Event{Kind: bulwark.EventRetry, Component: bulwark.ComponentRetry, Name: "payments", Attempt: 2})
	bulwark.Observers(o, bulwark.ObserverFunc(func(bulwark.Event) {})).(bulwark.ContextObserver).ObserveContext(ctx,
		bulwark.Event{Kind: bulwark.EventReplayed, Component: bulwark.ComponentIdempotency, Name: "orders", Key: "k1"})
	o.Observe(bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry}) // no context: metrics only
	span.End()
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want 1", len(spans))
	}
	var names []string
	for _, ev := range spans[0].Events() {
		names = append(names, ev.Name)
	}
	if got, want := strings.Join(names, ","), "bulwark.retry,bulwark.replayed"; got != want {
		t.Errorf("span events = %q, want %q", got, want)
	}
}
