package bulwark_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/bulwark-go/bulwark"
)

// TestSlogObserverLevels checks the table of SlogObserver's documentation:
// WARN for what needs a look, and not for normal answers or a client's
// mistakes.
func TestSlogObserverLevels(t *testing.T) {
	boom := errors.New("boom")
	ep := bulwark.Endpoint{Addr: "10.0.0.1:80"}
	tests := []struct {
		name  string
		event bulwark.Event
		want  string
	}{
		{"breaker trips", bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentBreaker, From: "closed", To: "open"}, "WARN"},
		{"breaker half-opens", bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentBreaker, From: "open", To: "half-open"}, "INFO"},
		{"breaker closes", bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentBreaker, From: "half-open", To: "closed"}, "INFO"},
		{"breaker forced open", bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentBreaker, From: "closed", To: "forced-open"}, "INFO"},
		{"balancer panics", bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentBalancer, From: "normal", To: "panic"}, "WARN"},
		{"balancer recovers", bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentBalancer, From: "panic", To: "normal"}, "INFO"},
		{"endpoint unhealthy", bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentHealthCheck, Endpoint: ep, From: "healthy", To: "unhealthy"}, "WARN"},
		{"endpoint draining", bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentHealthCheck, Endpoint: ep, From: "healthy", To: "draining"}, "INFO"},
		{"readiness fails", bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentHealthCheck, From: "pass", To: "fail"}, "WARN"},
		{"discovery failing", bulwark.Event{Kind: bulwark.EventStateChange, Component: "discovery", From: "ok", To: "failing"}, "WARN"},
		{"give-up after attempts", bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry, Reason: "attempts", Err: boom}, "WARN"},
		{"give-up at the deadline", bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry, Reason: "deadline", Err: boom}, "WARN"},
		{"give-up on a declined card", bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry, Reason: "not_retryable", Err: bulwark.Permanent(boom)}, "DEBUG"},
		{"give-up, permanent", bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry, Reason: "permanent", Err: bulwark.Permanent(boom)}, "DEBUG"},
		{"give-up, caller canceled", bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentHedge, Reason: "canceled", Err: context.Canceled}, "DEBUG"},
		{"retry budget exhausted", bulwark.Event{Kind: bulwark.EventBudgetExhausted, Component: bulwark.ComponentRetry}, "WARN"},
		{"hedge budget exhausted", bulwark.Event{Kind: bulwark.EventBudgetExhausted, Component: bulwark.ComponentHedge}, "DEBUG"},
		{"rejected by an open breaker", bulwark.Event{Kind: bulwark.EventRejected, Component: bulwark.ComponentBreaker, Reason: "open", Err: boom}, "DEBUG"},
		{"missing Idempotency-Key", bulwark.Event{Kind: bulwark.EventRejected, Component: bulwark.ComponentIdempotency, Reason: "missing_key"}, "INFO"},
		{"key reused with another payload", bulwark.Event{Kind: bulwark.EventMismatch, Component: bulwark.ComponentIdempotency, Key: "k"}, "INFO"},
		{"ejection", bulwark.Event{Kind: bulwark.EventEjected, Component: bulwark.ComponentOutlier, Endpoint: ep}, "WARN"},
		{"store error", bulwark.Event{Kind: bulwark.EventStoreError, Component: bulwark.ComponentIdempotency, Err: boom}, "WARN"},
		{"misuse", bulwark.Event{Kind: bulwark.EventMisuse, Component: bulwark.ComponentBalancer, Reason: "done called twice"}, "WARN"},
		{"endpoint added", bulwark.Event{Kind: bulwark.EventEndpointAdded, Component: bulwark.ComponentBalancer, Endpoint: ep}, "INFO"},
		{"unejected", bulwark.Event{Kind: bulwark.EventUnejected, Component: bulwark.ComponentOutlier, Endpoint: ep}, "INFO"},
		{"lease takeover", bulwark.Event{Kind: bulwark.EventLeaseTakeover, Component: bulwark.ComponentIdempotency, Key: "k"}, "INFO"},
		{"failed call", bulwark.Event{Kind: bulwark.EventCall, Component: bulwark.ComponentBreaker, Outcome: bulwark.Failure, Err: boom}, "DEBUG"},
		{"retry", bulwark.Event{Kind: bulwark.EventRetry, Component: bulwark.ComponentRetry, Attempt: 2}, "DEBUG"},
		{"failed probe", bulwark.Event{Kind: bulwark.EventProbe, Component: bulwark.ComponentHealthCheck, Endpoint: ep, Outcome: bulwark.Failure}, "DEBUG"},
		{"conflict", bulwark.Event{Kind: bulwark.EventConflict, Component: bulwark.ComponentIdempotency, Key: "k"}, "DEBUG"},
		{"a kind added later", bulwark.Event{Kind: bulwark.EventKind(200), Component: "limit"}, "INFO"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf strings.Builder
			l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			bulwark.SlogObserver(l).Observe(tt.event)
			_, rest, _ := strings.Cut(buf.String(), "level=")
			got, _, _ := strings.Cut(rest, " ")
			if got != tt.want {
				t.Errorf("level of %s %+v = %s, want %s (logged %q)", tt.event.Kind, tt.event, got, tt.want, buf.String())
			}
		})
	}
}

// TestSlogObserverBelowLevelAllocs checks that an event below the logger's
// level costs no allocation, so that per-call events at DEBUG are free in a
// service that logs at INFO.
func TestSlogObserverBelowLevelAllocs(t *testing.T) {
	o := bulwark.SlogObserver(slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})))
	co := o.(bulwark.ContextObserver)
	ctx := context.Background()
	for _, e := range []bulwark.Event{
		{Kind: bulwark.EventCall, Component: bulwark.ComponentBreaker, Name: "payments", Outcome: bulwark.Failure, Err: errors.New("boom")},
		{Kind: bulwark.EventRejected, Component: bulwark.ComponentBreaker, Name: "payments", Reason: "open"},
		{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry, Name: "payments", Reason: "not_retryable"},
		{Kind: bulwark.EventPick, Component: bulwark.ComponentBalancer, Name: "orders", Endpoint: bulwark.Endpoint{Addr: "10.0.0.1:80"}},
	} {
		if n := testing.AllocsPerRun(100, func() { o.Observe(e) }); n != 0 {
			t.Errorf("Observe(%s) below the level: %v allocs, want 0", e.Kind, n)
		}
		if n := testing.AllocsPerRun(100, func() { co.ObserveContext(ctx, e) }); n != 0 {
			t.Errorf("ObserveContext(%s) below the level: %v allocs, want 0", e.Kind, n)
		}
	}
}
