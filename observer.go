package bulwark

import (
	"context"
	"log/slog"
	"strconv"
	"time"
)

// Observer receives the events of every bulwark component. Observe runs on the
// goroutine of the component that emits the event, may run concurrently, is
// never called with a component's lock held, and must not block. A nil
// Observer in a Config means no events and no cost. [SlogObserver] logs
// events; otelbulwark records them as OpenTelemetry metrics and span events;
// [Observers] sends them to several; [ObserverFunc] adapts a function.
type Observer interface {
	Observe(Event)
}

// ContextObserver is an Observer that also takes the context of the call an
// event belongs to: otelbulwark adds the event to the call's span, and
// SlogObserver logs with the context, so that a handler can add the call's
// trace id.
//
// The guarantee is one-way. When a component holds the context of the call
// an event belongs to, and passes it, the ctx given to ObserveContext is that
// call's context. But a component passes a context only with the events it
// emits while it holds the call's: an event that comes through Observe, or
// through ObserveContext with a context that carries no call
// (context.Background), may belong to a call all the same, so a
// ContextObserver must handle both. Which events carry the call's context, in
// this version:
//   - retry.Policy and retry.Hedge pass it with every event: retries,
//     give-ups, hedges and exhausted budgets.
//   - The idempotency Engine passes it with the events of claiming a key
//     (claimed, replayed, conflict, mismatch, lease_takeover) and with the
//     loss of a running call's lease; other store errors and the HTTP
//     middleware's refusals come through Observe.
//   - A breaker's Do and Call pass it with what happens while the call is
//     admitted: a rejection, and a state change that time caused (Acquire,
//     which has no context, passes context.Background). The report of the
//     call's outcome (EventCall) and a state change that the outcome causes
//     (a trip) may come without it.
//   - The limit Bulkhead and Limiter, ratelimit, throttle, timeout and
//     fallback pass it with the events of a call they guard: a refusal
//     (EventRejected), and a timeout's or a fallback's EventCall. Calls
//     without a context (ratelimit's Allow and AllowAt) pass
//     context.Background; a Limiter's limit changes and a Permit's misuse
//     come through Observe.
//   - The balancer, health checks, outlier detection and discovery hold no
//     call's context and always call Observe.
type ContextObserver interface {
	Observer
	ObserveContext(ctx context.Context, e Event)
}

// observeContext passes e to o, with ctx when o is a ContextObserver.
func observeContext(ctx context.Context, o Observer, e Event) {
	if co, ok := o.(ContextObserver); ok {
		co.ObserveContext(ctx, e)
		return
	}
	o.Observe(e)
}

// ObserverFunc adapts a function to an Observer.
type ObserverFunc func(Event)

// Observe calls f(e).
func (f ObserverFunc) Observe(e Event) { f(e) }

// Observers returns an Observer that passes each event to every non-nil
// observer in os (typed nils are skipped too), in order, with its context to those that take one (the
// result is a ContextObserver). It returns nil when none is left, so that the
// components skip building events.
func Observers(os ...Observer) Observer {
	var list multi
	for _, o := range os {
		if !isNil(o) {
			list = append(list, o)
		}
	}
	switch len(list) {
	case 0:
		return nil
	case 1:
		return list[0]
	}
	return list
}

type multi []Observer

func (m multi) Observe(e Event) {
	for _, o := range m {
		o.Observe(e)
	}
}

func (m multi) ObserveContext(ctx context.Context, e Event) {
	for _, o := range m {
		observeContext(ctx, o, e)
	}
}

// Names of the components, used in Event.Component.
const (
	ComponentBreaker     = "breaker"
	ComponentRetry       = "retry"
	ComponentHedge       = "hedge"
	ComponentBalancer    = "balancer"
	ComponentHealthCheck = "healthcheck"
	ComponentOutlier     = "outlier"
	ComponentIdempotency = "idempotency"
	ComponentDiscovery   = "discovery"
	ComponentBulkhead    = "bulkhead"
	ComponentLimiter     = "limiter"
	ComponentRateLimit   = "ratelimit"
	ComponentThrottle    = "throttle"
	ComponentTimeout     = "timeout"
	ComponentFallback    = "fallback"
)

// EventKind says what happened.
type EventKind uint8

// The kinds of events. Each names the Event fields it sets beyond Component,
// Name and Kind.
const (
	_ EventKind = iota
	// EventCall: a guarded call finished. Outcome, Latency, Err; Endpoint and
	// Attempt where known.
	EventCall
	// EventRejected: a call was refused without running (an open breaker, an
	// exhausted budget). Err is the refusal, Reason says why.
	EventRejected
	// EventStateChange: a component or an endpoint changed state. From, To,
	// Reason; Endpoint for per-endpoint states.
	EventStateChange
	// EventRetry: another attempt is scheduled. Attempt (the one about to
	// run), Delay, Err (the cause), Reason (a short cause class).
	EventRetry
	// EventGiveUp: a retrying policy stopped. Attempt (attempts made), Err,
	// Reason ("attempts", "elapsed", "deadline", "budget", "permanent", …).
	EventGiveUp
	// EventHedge: a hedged attempt was started. Attempt, Delay.
	EventHedge
	// EventBudgetExhausted: a retry or hedge was not made because the budget
	// was empty. Attempt.
	EventBudgetExhausted
	// EventPick: a balancer picked Endpoint. Reason names the algorithm;
	// Weight is how many picks a sampled event stands for.
	EventPick
	// EventEndpointAdded and EventEndpointRemoved: the endpoint set changed.
	// Endpoint.
	EventEndpointAdded
	EventEndpointRemoved
	// EventEjected: an outlier detector ejected Endpoint for Delay. Reason
	// names the rule; Count counts the endpoint's ejections.
	EventEjected
	// EventUnejected: Endpoint came back after its ejection time. Count.
	EventUnejected
	// EventProbe: an active health check probed Endpoint. Latency, Err,
	// Outcome.
	EventProbe
	// EventClaimed: an idempotency key was claimed. Key.
	EventClaimed
	// EventReplayed: a stored response was replayed for Key.
	EventReplayed
	// EventConflict: Key is in flight elsewhere.
	EventConflict
	// EventMismatch: Key was reused with a different payload.
	EventMismatch
	// EventLeaseTakeover: an expired in-flight claim on Key was taken over.
	EventLeaseTakeover
	// EventStoreError: the idempotency store failed. Err, Latency; Reason is
	// "fail-open" when the call ran without protection.
	EventStoreError
	// EventMisuse: the API was misused in a way the component tolerates, such
	// as a second Done on one pick. Reason says how.
	EventMisuse
	// EventLimitChanged: an adaptive concurrency limiter moved its limit.
	// Limit is the new limit, Latency the no-load latency it measures
	// against, Reason why ("increase", "decrease", "drop", "probe", …).
	EventLimitChanged
	numEventKinds
)

var eventKindNames = [...]string{
	EventCall:            "call",
	EventRejected:        "rejected",
	EventStateChange:     "state_change",
	EventRetry:           "retry",
	EventGiveUp:          "give_up",
	EventHedge:           "hedge",
	EventBudgetExhausted: "budget_exhausted",
	EventPick:            "pick",
	EventEndpointAdded:   "endpoint_added",
	EventEndpointRemoved: "endpoint_removed",
	EventEjected:         "ejected",
	EventUnejected:       "unejected",
	EventProbe:           "probe",
	EventClaimed:         "claimed",
	EventReplayed:        "replayed",
	EventConflict:        "conflict",
	EventMismatch:        "mismatch",
	EventLeaseTakeover:   "lease_takeover",
	EventStoreError:      "store_error",
	EventMisuse:          "misuse",
	EventLimitChanged:    "limit_changed",
}

// String returns the kind in snake case, as used in metric attributes:
// "state_change", "give_up", ….
func (k EventKind) String() string {
	if k > 0 && k < numEventKinds {
		return eventKindNames[k]
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is one thing that happened in a component. Which fields are set
// depends on Kind (see the EventKind constants); unset fields are zero.
// Events are passed by value and hold no references into the component.
type Event struct {
	Kind      EventKind
	Component string        // one of the Component constants
	Name      string        // the instance's name from its Config, or a group key
	Endpoint  Endpoint      // the endpoint concerned, if any
	Key       string        // an idempotency key or other request key, if any
	Attempt   int           // attempt number, 1 for the first (retry, hedge, call); attempts made for EventGiveUp
	Weight    int           // EventPick: the picks a sampled event stands for; 0 means 1
	Count     int           // EventEjected, EventUnejected: the endpoint's ejections so far
	Limit     int           // EventLimitChanged: the new limit
	Latency   time.Duration // how long the call or probe took
	Delay     time.Duration // a wait decided by the component: backoff, ejection time
	Outcome   Outcome       // for EventCall and EventProbe
	Err       error         // the error concerned, if any
	From, To  string        // states, for EventStateChange
	Reason    string        // a short, low-cardinality cause
}

// SlogObserver returns an Observer that logs each event to l, as one record
// with the message "bulwark <kind>" and the event's fields as attributes.
// Levels are chosen so that WARN means "look at this": something failed or
// broke on this side or a dependency's, or code misuses an API. What is a
// normal answer (a declined card, a refusal by an open breaker whose opening
// was already logged) or the client's doing (a missing Idempotency-Key) is
// not WARN. By kind and outcome:
//
//	kind                        level  when
//	--------------------------  -----  ----------------------------------------------------------
//	state_change                WARN   To is "open" (a breaker tripped), "panic" (a balancer),
//	                                   "unhealthy" (an endpoint), "fail" (readiness), "failing"
//	                                   (discovery)
//	                            INFO   any other To: recoveries, half-open, draining, forced
//	                                   states set by an operator
//	give_up                     WARN   retries of retryable errors ran out (Reason "attempts",
//	                                   "elapsed", "deadline", "budget", "retry_after", …)
//	                            DEBUG  Reason "permanent" or "not_retryable" (the answer was no:
//	                                   a declined card) or "canceled" (the caller gave up)
//	budget_exhausted            WARN   a retry was not made (Component "retry")
//	                            DEBUG  a hedge was not made (Component "hedge")
//	ejected, store_error,       WARN   always
//	misuse
//	rejected                    INFO   Component "idempotency": the client's request was refused
//	                                   (missing or invalid Idempotency-Key, body too large)
//	                            DEBUG  any other component: one call refused by an open breaker
//	                                   or a full limit, whose state change or metrics tell more
//	mismatch                    INFO   a client reused an Idempotency-Key for another payload
//	endpoint_added,             INFO   always
//	endpoint_removed,
//	unejected, lease_takeover
//	call, retry, hedge, pick,   DEBUG  always: one per call or attempt
//	probe, claimed, replayed,
//	conflict
//	limit_changed               INFO   always
//	kinds added after this one  INFO
//
// A nil l means slog.Default(). Events below l's level cost one Enabled call
// and no allocation. It is a ContextObserver: events that come with a call's
// context are logged with it, so a handler can add the call's trace id.
func SlogObserver(l *slog.Logger) Observer {
	if l == nil {
		l = slog.Default()
	}
	return slogObserver{l: l}
}

type slogObserver struct{ l *slog.Logger }

// slogLevel is the level of e, as SlogObserver's table says.
func slogLevel(e *Event) slog.Level {
	switch e.Kind {
	case EventStateChange:
		switch e.To {
		case "open", "panic", "unhealthy", "fail", "failing":
			return slog.LevelWarn
		}
		return slog.LevelInfo
	case EventGiveUp:
		switch e.Reason {
		case "permanent", "not_retryable", "canceled":
			return slog.LevelDebug
		}
		return slog.LevelWarn
	case EventBudgetExhausted:
		if e.Component == ComponentHedge {
			return slog.LevelDebug
		}
		return slog.LevelWarn
	case EventEjected, EventStoreError, EventMisuse:
		return slog.LevelWarn
	case EventRejected:
		if e.Component == ComponentIdempotency {
			return slog.LevelInfo
		}
		return slog.LevelDebug
	case EventCall, EventRetry, EventHedge, EventPick, EventProbe, EventClaimed, EventReplayed, EventConflict:
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

func (s slogObserver) Observe(e Event) { s.ObserveContext(context.Background(), e) }

func (s slogObserver) ObserveContext(ctx context.Context, e Event) {
	level := slogLevel(&e)
	if !s.l.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs, slog.String("component", e.Component))
	if e.Name != "" {
		attrs = append(attrs, slog.String("name", e.Name))
	}
	if e.Endpoint.Addr != "" {
		attrs = append(attrs, slog.String("endpoint", e.Endpoint.Addr))
		if e.Endpoint.Zone != "" {
			attrs = append(attrs, slog.String("zone", e.Endpoint.Zone))
		}
	}
	if e.Key != "" {
		attrs = append(attrs, slog.String("key", e.Key))
	}
	if e.Attempt != 0 {
		attrs = append(attrs, slog.Int("attempt", e.Attempt))
	}
	if e.Weight != 0 {
		attrs = append(attrs, slog.Int("weight", e.Weight))
	}
	if e.Count != 0 {
		attrs = append(attrs, slog.Int("count", e.Count))
	}
	if e.Kind == EventLimitChanged {
		attrs = append(attrs, slog.Int("limit", e.Limit))
	}
	if e.Latency != 0 {
		attrs = append(attrs, slog.Duration("latency", e.Latency))
	}
	if e.Delay != 0 {
		attrs = append(attrs, slog.Duration("delay", e.Delay))
	}
	if e.Kind == EventCall || e.Kind == EventProbe {
		attrs = append(attrs, slog.String("outcome", e.Outcome.String()))
	}
	if e.From != "" || e.To != "" {
		attrs = append(attrs, slog.String("from", e.From), slog.String("to", e.To))
	}
	if e.Reason != "" {
		attrs = append(attrs, slog.String("reason", e.Reason))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	s.l.LogAttrs(ctx, level, "bulwark "+e.Kind.String(), attrs...)
}
