package otelbulwark

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulwark-go/bulwark"
)

// AddSpanEvent adds e as an event named "bulwark.<kind>" ("bulwark.retry",
// "bulwark.rejected", "bulwark.replayed", …) to the span in ctx, if that span
// is recording. Only the kinds that explain what happened to one request are
// added: retries, rejections, give-ups, hedges, exhausted budgets, replays,
// conflicts, mismatches, lease takeovers, store errors and misuse. Calls,
// picks, probes, state changes and endpoint changes are ignored: they are
// spans of their own, or not about one request. The event's attributes are
// bulwark.component, bulwark.name and, where set, server.address,
// server.port and cloud.availability_zone (the endpoint, split as the
// metrics split it), bulwark.attempt, bulwark.delay (seconds),
// bulwark.reason, bulwark.criticality (rejections, as in the metrics),
// bulwark.key, error.type (give-ups, as in the metrics) and
// exception.message (the error's text).
//
// [Observer.ObserveContext] calls AddSpanEvent with the context that a
// component passes along with an event (see [bulwark.ContextObserver]), so
// code needs to call it only for events that come without one, from a place
// that has both the event and the request's context. AddSpanEvent is safe for
// concurrent use; it allocates only when the span is recording.
func AddSpanEvent(ctx context.Context, e bulwark.Event) {
	if !spanWorthy(e.Kind) {
		return
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 12)
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	add("bulwark.component", e.Component)
	add("bulwark.name", e.Name)
	if e.Endpoint.Addr != "" {
		host, port, ok := splitAddr(e.Endpoint.Addr)
		attrs = append(attrs, keyAddress.String(host))
		if ok {
			attrs = append(attrs, keyPort.Int(port))
		}
	}
	add(string(keyZone), e.Endpoint.Zone)
	if e.Attempt != 0 {
		attrs = append(attrs, attribute.Int("bulwark.attempt", e.Attempt))
	}
	if e.Delay != 0 {
		attrs = append(attrs, attribute.Float64("bulwark.delay", e.Delay.Seconds()))
	}
	add("bulwark.reason", e.Reason)
	if e.Kind == bulwark.EventRejected {
		add(string(keyCrit), criticality(&e))
	}
	add("bulwark.key", e.Key)
	if e.Kind == bulwark.EventGiveUp {
		attrs = append(attrs, keyErrorType.String(giveUpErrorType(e.Reason)))
	}
	if e.Err != nil {
		add(string(semconv.ExceptionMessageKey), e.Err.Error())
	}
	span.AddEvent("bulwark."+e.Kind.String(), trace.WithAttributes(attrs...))
}

func spanWorthy(k bulwark.EventKind) bool {
	switch k {
	case bulwark.EventRetry, bulwark.EventRejected, bulwark.EventGiveUp, bulwark.EventHedge,
		bulwark.EventBudgetExhausted, bulwark.EventReplayed, bulwark.EventConflict,
		bulwark.EventMismatch, bulwark.EventLeaseTakeover, bulwark.EventStoreError, bulwark.EventMisuse:
		return true
	}
	return false
}
