package otelbulwark_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/otelbulwark"
)

var (
	epA     = bulwark.Endpoint{Addr: "10.0.0.1:80", Zone: "a"}
	epB     = bulwark.Endpoint{Addr: "10.0.0.2:80", Zone: "b"}
	errBoom = errors.New("boom")
)

// want is one expected data point.
type want struct {
	metric string
	attrs  string
	point  point
}

func TestObserve(t *testing.T) {
	const (
		brk = "component=breaker,name=payments"
		ret = "component=retry,name=payments"
		bal = "component=balancer,endpoint=10.0.0.1:80,name=orders,zone=a"
		hc  = "component=healthcheck,endpoint=10.0.0.1:80,name=orders,zone=a"
		idm = "component=idempotency,name=orders"
	)
	tests := []struct {
		name   string
		events []bulwark.Event
		want   []want
	}{
		{
			name: "breaker calls by outcome with latency",
			events: []bulwark.Event{
				{Kind: bulwark.EventCall, Component: "breaker", Name: "payments", Outcome: bulwark.Success, Latency: 100 * time.Millisecond},
				{Kind: bulwark.EventCall, Component: "breaker", Name: "payments", Outcome: bulwark.Success, Latency: 300 * time.Millisecond},
				{Kind: bulwark.EventCall, Component: "breaker", Name: "payments", Outcome: bulwark.Failure, Latency: time.Second, Err: errBoom},
			},
			want: []want{
				{"bulwark.breaker.calls", brk + ",outcome=success", point{value: 2}},
				{"bulwark.breaker.calls", brk + ",outcome=failure", point{value: 1}},
				{"bulwark.breaker.call.duration", brk + ",outcome=success", point{count: 2, sum: 0.4}},
				{"bulwark.breaker.call.duration", brk + ",outcome=failure", point{count: 1, sum: 1}},
			},
		},
		{
			name: "breaker rejections and transitions",
			events: []bulwark.Event{
				{Kind: bulwark.EventStateChange, Component: "breaker", Name: "payments", From: "closed", To: "open", Reason: "failure_rate"},
				{Kind: bulwark.EventRejected, Component: "breaker", Name: "payments", Reason: "open", Err: errBoom},
				{Kind: bulwark.EventRejected, Component: "breaker", Name: "payments", Reason: "open", Err: errBoom},
				{Kind: bulwark.EventStateChange, Component: "breaker", Name: "payments", From: "open", To: "half-open"},
			},
			want: []want{
				{"bulwark.breaker.rejections", brk + ",reason=open", point{value: 2}},
				{"bulwark.breaker.transitions", brk + ",from=closed,reason=failure_rate,to=open", point{value: 1}},
				{"bulwark.breaker.transitions", brk + ",from=open,to=half-open", point{value: 1}},
				{"bulwark.breaker.state", brk + ",state=closed", point{value: 0}},
				{"bulwark.breaker.state", brk + ",state=open", point{value: 0}},
				{"bulwark.breaker.state", brk + ",state=half-open", point{value: 1}},
			},
		},
		{
			name: "retry retries by reason, backoff, give-ups, hedges, budget",
			events: []bulwark.Event{
				{Kind: bulwark.EventRetry, Component: "retry", Name: "payments", Attempt: 2, Delay: 100 * time.Millisecond, Reason: "error", Err: errBoom},
				{Kind: bulwark.EventRetry, Component: "retry", Name: "payments", Attempt: 3, Delay: 200 * time.Millisecond, Reason: "retry_after"},
				{Kind: bulwark.EventGiveUp, Component: "retry", Name: "payments", Attempt: 3, Reason: "attempts", Err: errBoom},
				{Kind: bulwark.EventBudgetExhausted, Component: "retry", Name: "payments", Attempt: 2},
				{Kind: bulwark.EventHedge, Component: "hedge", Name: "payments", Attempt: 2, Delay: time.Millisecond},
				{Kind: bulwark.EventCall, Component: "retry", Name: "payments", Attempt: 1, Outcome: bulwark.Failure, Latency: time.Millisecond},
			},
			want: []want{
				{"bulwark.retry.retries", ret + ",reason=error", point{value: 1}},
				{"bulwark.retry.retries", ret + ",reason=retry_after", point{value: 1}},
				{"bulwark.retry.backoff", ret + ",reason=error", point{count: 1, sum: 0.1}},
				{"bulwark.retry.giveups", ret + ",reason=attempts", point{value: 1}},
				{"bulwark.retry.budget_exhausted", ret, point{value: 1}},
				{"bulwark.retry.hedges", "component=hedge,name=payments", point{value: 1}},
				{"bulwark.retry.calls", ret + ",outcome=failure", point{value: 1}},
			},
		},
		{
			name: "balancer picks, in-flight, latency, panic mode, endpoints",
			events: []bulwark.Event{
				{Kind: bulwark.EventEndpointAdded, Component: "balancer", Name: "orders", Endpoint: epA},
				{Kind: bulwark.EventEndpointAdded, Component: "balancer", Name: "orders", Endpoint: epB},
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: epA, Reason: "p2c"},
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: epA, Reason: "p2c"},
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: epB, Reason: "p2c"},
				{Kind: bulwark.EventCall, Component: "balancer", Name: "orders", Endpoint: epA, Outcome: bulwark.Success, Latency: 20 * time.Millisecond},
				{Kind: bulwark.EventCall, Component: "balancer", Name: "orders", Endpoint: epB, Outcome: bulwark.Success, Latency: 30 * time.Millisecond},
				{Kind: bulwark.EventStateChange, Component: "balancer", Name: "orders", From: "normal", To: "panic", Reason: "healthy_below_threshold"},
				{Kind: bulwark.EventEndpointRemoved, Component: "balancer", Name: "orders", Endpoint: epB},
			},
			want: []want{
				{"bulwark.balancer.picks", bal, point{value: 2}},
				{"bulwark.balancer.picks", "component=balancer,endpoint=10.0.0.2:80,name=orders,zone=b", point{value: 1}},
				{"bulwark.balancer.inflight", bal, point{value: 1}},
				{"bulwark.balancer.inflight", "component=balancer,endpoint=10.0.0.2:80,name=orders,zone=b", point{value: 0}},
				{"bulwark.balancer.call.duration", bal + ",outcome=success", point{count: 1, sum: 0.02}},
				{"bulwark.balancer.state", "component=balancer,name=orders,state=panic", point{value: 1}},
				{"bulwark.balancer.state", "component=balancer,name=orders,state=normal", point{value: 0}},
				{"bulwark.balancer.endpoints", "component=balancer,name=orders", point{value: 1}},
			},
		},
		{
			name: "balancer sampled picks weighted, in flight stopped",
			events: []bulwark.Event{
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: epA, Attempt: 1},
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: epB, Attempt: 10}, // sampled 1 in 10
				{Kind: bulwark.EventCall, Component: "balancer", Name: "orders", Endpoint: epA},
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: epA, Attempt: 1},
			},
			want: []want{
				{"bulwark.balancer.picks", bal, point{value: 2}},
				{"bulwark.balancer.picks", "component=balancer,endpoint=10.0.0.2:80,name=orders,zone=b", point{value: 10}},
				{"bulwark.balancer.inflight", bal, point{value: 1}}, // as it was when the sampled pick came
			},
		},
		{
			name: "healthcheck probes, endpoint state, ejections",
			events: []bulwark.Event{
				{Kind: bulwark.EventProbe, Component: "healthcheck", Name: "orders", Endpoint: epA, Outcome: bulwark.Success, Latency: 5 * time.Millisecond},
				{Kind: bulwark.EventProbe, Component: "healthcheck", Name: "orders", Endpoint: epA, Outcome: bulwark.Failure, Latency: time.Second, Err: errBoom},
				{Kind: bulwark.EventStateChange, Component: "healthcheck", Name: "orders", Endpoint: epA, From: "healthy", To: "unhealthy"},
				{Kind: bulwark.EventEjected, Component: "outlier", Name: "orders", Endpoint: epA, Delay: 30 * time.Second, Reason: "consecutive_5xx", Attempt: 1},
				{Kind: bulwark.EventEjected, Component: "outlier", Name: "orders", Endpoint: epB, Delay: 30 * time.Second, Reason: "success_rate", Attempt: 1},
				{Kind: bulwark.EventUnejected, Component: "outlier", Name: "orders", Endpoint: epB},
			},
			want: []want{
				{"bulwark.healthcheck.probes", hc + ",outcome=success", point{value: 1}},
				{"bulwark.healthcheck.probes", hc + ",outcome=failure", point{value: 1}},
				{"bulwark.healthcheck.probe.duration", hc + ",outcome=failure", point{count: 1, sum: 1}},
				{"bulwark.healthcheck.state", hc + ",state=unhealthy", point{value: 1}},
				{"bulwark.healthcheck.state", hc + ",state=healthy", point{value: 0}},
				{"bulwark.healthcheck.ejections", "component=outlier,endpoint=10.0.0.1:80,name=orders,reason=consecutive_5xx,zone=a", point{value: 1}},
				{"bulwark.healthcheck.ejected", "component=outlier,endpoint=10.0.0.1:80,name=orders,zone=a", point{value: 1}},
				{"bulwark.healthcheck.ejected", "component=outlier,endpoint=10.0.0.2:80,name=orders,zone=b", point{value: 0}},
			},
		},
		{
			name: "idempotency claims, replays, conflicts, mismatches, takeovers, store errors",
			events: []bulwark.Event{
				{Kind: bulwark.EventClaimed, Component: "idempotency", Name: "orders", Key: "k1"},
				{Kind: bulwark.EventClaimed, Component: "idempotency", Name: "orders", Key: "k2", Latency: 2 * time.Millisecond},
				{Kind: bulwark.EventReplayed, Component: "idempotency", Name: "orders", Key: "k1"},
				{Kind: bulwark.EventConflict, Component: "idempotency", Name: "orders", Key: "k1"},
				{Kind: bulwark.EventMismatch, Component: "idempotency", Name: "orders", Key: "k1"},
				{Kind: bulwark.EventLeaseTakeover, Component: "idempotency", Name: "orders", Key: "k3"},
				{Kind: bulwark.EventStoreError, Component: "idempotency", Name: "orders", Key: "k4", Err: errBoom, Latency: 50 * time.Millisecond, Reason: "fail-open"},
			},
			want: []want{
				{"bulwark.idempotency.claims", idm, point{value: 2}},
				{"bulwark.idempotency.replays", idm, point{value: 1}},
				{"bulwark.idempotency.conflicts", idm, point{value: 1}},
				{"bulwark.idempotency.mismatches", idm, point{value: 1}},
				{"bulwark.idempotency.lease_takeovers", idm, point{value: 1}},
				{"bulwark.idempotency.store_errors", idm + ",reason=fail-open", point{value: 1}},
				{"bulwark.idempotency.store.duration", idm + ",outcome=failure", point{count: 1, sum: 0.05}},
				{"bulwark.idempotency.store.duration", idm + ",outcome=success", point{count: 1, sum: 0.002}},
			},
		},
		{
			name: "unknown component, unknown kind, misuse, empty attributes left out",
			events: []bulwark.Event{
				{Kind: bulwark.EventCall, Component: "mycache", Outcome: bulwark.Neutral},
				{Kind: bulwark.EventKind(200), Component: "breaker", Name: "payments"},
				{Kind: bulwark.EventMisuse, Component: "balancer", Name: "orders", Reason: "double_done"},
			},
			want: []want{
				{"bulwark.calls", "component=mycache,outcome=neutral", point{value: 1}},
				{"bulwark.breaker.events", brk + ",kind=event(200)", point{value: 1}},
				{"bulwark.balancer.misuses", "component=balancer,name=orders,reason=double_done", point{value: 1}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, r := newObserver(t)
			for _, e := range tt.events {
				o.Observe(e)
			}
			got := collect(t, r)
			for _, w := range tt.want {
				p, ok := got[w.metric][sortAttrs(w.attrs)]
				if !ok {
					t.Errorf("%s{%s} missing; recorded: %v", w.metric, w.attrs, got[w.metric])
					continue
				}
				if p.value != w.point.value || p.count != w.point.count || !near(p.sum, w.point.sum) {
					t.Errorf("%s{%s} = %+v, want %+v", w.metric, w.attrs, p, w.point)
				}
			}
		})
	}
}

func near(a, b float64) bool { d := a - b; return d < 1e-9 && d > -1e-9 }

// TestObserveForgetsRemovedEndpoints checks that the gauges stop reporting an
// endpoint once its component removed it, so departed endpoints do not linger.
func TestObserveForgetsRemovedEndpoints(t *testing.T) {
	o, r := newObserver(t)
	o.Observe(bulwark.Event{Kind: bulwark.EventStateChange, Component: "healthcheck", Name: "orders", Endpoint: epA, From: "unknown", To: "healthy"})
	o.Observe(bulwark.Event{Kind: bulwark.EventStateChange, Component: "healthcheck", Name: "orders", Endpoint: epB, From: "unknown", To: "healthy"})
	o.Observe(bulwark.Event{Kind: bulwark.EventEjected, Component: "outlier", Name: "orders", Endpoint: epA})
	o.Observe(bulwark.Event{Kind: bulwark.EventEndpointRemoved, Component: "healthcheck", Name: "orders", Endpoint: epA})
	o.Observe(bulwark.Event{Kind: bulwark.EventEndpointRemoved, Component: "outlier", Name: "orders", Endpoint: epA})

	got := collect(t, r)
	want := map[string]point{
		"component=healthcheck,endpoint=10.0.0.2:80,name=orders,state=healthy,zone=b": {value: 1},
		"component=healthcheck,endpoint=10.0.0.2:80,name=orders,state=unknown,zone=b": {value: 0},
	}
	require.Equal(t, want, got["bulwark.healthcheck.state"], "bulwark.healthcheck.state after removing %s", epA.Addr)
	require.Empty(t, got["bulwark.healthcheck.ejected"], "bulwark.healthcheck.ejected after removing %s", epA.Addr)
}

// TestObserveNoSDKAllocs checks that the global no-op provider costs no
// allocation for any kind of event.
func TestObserveNoSDKAllocs(t *testing.T) {
	o, err := otelbulwark.New()
	require.NoError(t, err)
	for _, e := range everyKind() {
		if n := testing.AllocsPerRun(100, func() { o.Observe(e) }); n != 0 {
			t.Errorf("Observe(%v) with no SDK: %v allocs, want 0", e.Kind, n)
		}
	}
}

// TestObserveSDKAllocs checks that, once its attribute set is cached, an event
// costs the adapter no allocation on the SDK path either (the SDK itself
// allocates nothing for an existing series of a cumulative counter).
func TestObserveSDKAllocs(t *testing.T) {
	o, _ := newObserver(t)
	for _, e := range everyKind() {
		switch e.Kind {
		case bulwark.EventStateChange, bulwark.EventEjected, bulwark.EventUnejected, bulwark.EventEndpointRemoved:
			continue // rare events that update the gauges under a lock
		}
		for range 3 {
			o.Observe(e) // warm the cache and the SDK's series
		}
		if n := testing.AllocsPerRun(100, func() { o.Observe(e) }); n != 0 {
			t.Errorf("Observe(%v) with the SDK: %v allocs, want 0", e.Kind, n)
		}
	}
}

func TestNewWithNoopProvider(t *testing.T) {
	o, err := otelbulwark.New(otelbulwark.WithMeterProvider(noop.NewMeterProvider()), nil)
	require.NoError(t, err)
	for _, e := range everyKind() {
		o.Observe(e)
	}
}

// everyKind returns one event of every kind the components emit, each with
// the fields its kind sets.
func everyKind() []bulwark.Event {
	return []bulwark.Event{
		{Kind: bulwark.EventCall, Component: "breaker", Name: "payments", Outcome: bulwark.Failure, Latency: time.Millisecond, Err: errBoom},
		{Kind: bulwark.EventRejected, Component: "breaker", Name: "payments", Reason: "open", Err: errBoom},
		{Kind: bulwark.EventStateChange, Component: "breaker", Name: "payments", From: "closed", To: "open", Reason: "consecutive"},
		{Kind: bulwark.EventRetry, Component: "retry", Name: "payments", Attempt: 2, Delay: time.Millisecond, Reason: "error", Err: errBoom},
		{Kind: bulwark.EventGiveUp, Component: "retry", Name: "payments", Attempt: 3, Reason: "attempts", Err: errBoom},
		{Kind: bulwark.EventHedge, Component: "hedge", Name: "payments", Attempt: 2, Delay: time.Millisecond},
		{Kind: bulwark.EventBudgetExhausted, Component: "retry", Name: "payments", Attempt: 2},
		{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: epA, Reason: "round_robin"},
		{Kind: bulwark.EventCall, Component: "balancer", Name: "orders", Endpoint: epA, Outcome: bulwark.Success, Latency: time.Millisecond},
		{Kind: bulwark.EventEndpointAdded, Component: "balancer", Name: "orders", Endpoint: epA},
		{Kind: bulwark.EventEndpointRemoved, Component: "balancer", Name: "orders", Endpoint: epA},
		{Kind: bulwark.EventEjected, Component: "outlier", Name: "orders", Endpoint: epA, Delay: time.Second, Reason: "consecutive_5xx", Attempt: 1},
		{Kind: bulwark.EventUnejected, Component: "outlier", Name: "orders", Endpoint: epA},
		{Kind: bulwark.EventProbe, Component: "healthcheck", Name: "orders", Endpoint: epA, Outcome: bulwark.Success, Latency: time.Millisecond},
		{Kind: bulwark.EventClaimed, Component: "idempotency", Name: "orders", Key: "k"},
		{Kind: bulwark.EventReplayed, Component: "idempotency", Name: "orders", Key: "k"},
		{Kind: bulwark.EventConflict, Component: "idempotency", Name: "orders", Key: "k"},
		{Kind: bulwark.EventMismatch, Component: "idempotency", Name: "orders", Key: "k"},
		{Kind: bulwark.EventLeaseTakeover, Component: "idempotency", Name: "orders", Key: "k"},
		{Kind: bulwark.EventStoreError, Component: "idempotency", Name: "orders", Key: "k", Err: errBoom, Latency: time.Millisecond, Reason: "fail-open"},
		{Kind: bulwark.EventMisuse, Component: "balancer", Name: "orders", Reason: "double_done"},
	}
}

// TestObserveWithView checks the documented way to drop a growing attribute:
// an SDK View with an attribute filter.
func TestObserveWithView(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	view := sdkmetric.NewView(sdkmetric.Instrument{Name: "bulwark.balancer.call.duration"},
		sdkmetric.Stream{AttributeFilter: attribute.NewDenyKeysFilter("endpoint", "zone")})
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithView(view))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	o, err := otelbulwark.New(otelbulwark.WithMeterProvider(mp))
	require.NoError(t, err)
	for _, ep := range []bulwark.Endpoint{epA, epB} {
		o.Observe(bulwark.Event{Kind: bulwark.EventCall, Component: "balancer", Name: "orders", Endpoint: ep, Latency: time.Second})
	}
	got := collect(t, reader)
	want := map[string]point{"component=balancer,name=orders,outcome=success": {count: 2, sum: 2}}
	require.Equal(t, want, got["bulwark.balancer.call.duration"], "bulwark.balancer.call.duration with endpoint filtered out")
	require.Len(t, got["bulwark.balancer.calls"], 2, "bulwark.balancer.calls keeps its endpoints")
}
