package otelbulwark

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
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
// bulwark.component, bulwark.name and, where set, bulwark.endpoint,
// bulwark.zone, bulwark.attempt, bulwark.delay (seconds), bulwark.reason,
// bulwark.key and error.message.
//
// An Event carries no context, but the components that hold the call's
// context (retry, hedging, idempotency, a breaker's Do and Call) pass it to a
// bulwark.ContextObserver, and *Observer is one: its ObserveContext records the
// metrics and calls AddSpanEvent, so retries, give-ups, hedges, rejections and
// replays appear on the span of the request they happened to without any
// wiring. Call AddSpanEvent yourself for events that come without a context
// (a rejection by Breaker.Acquire), from the code that has both. AddSpanEvent is safe for concurrent use; it allocates
// only when the span is recording.
func AddSpanEvent(ctx context.Context, e bulwark.Event) {
	if !spanWorthy(e.Kind) {
		return
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 9)
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	add("bulwark.component", e.Component)
	add("bulwark.name", e.Name)
	add("bulwark.endpoint", e.Endpoint.Addr)
	add("bulwark.zone", e.Endpoint.Zone)
	if e.Attempt != 0 {
		attrs = append(attrs, attribute.Int("bulwark.attempt", e.Attempt))
	}
	if e.Delay != 0 {
		attrs = append(attrs, attribute.Float64("bulwark.delay", e.Delay.Seconds()))
	}
	add("bulwark.reason", e.Reason)
	add("bulwark.key", e.Key)
	if e.Err != nil {
		add("error.message", e.Err.Error())
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
