package otelbulwark_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/otelbulwark"
)

// rejected returns the error a Limiter named "api" returns when it refuses
// a call of criticality c for tenant, for reason r.
func rejected(r limit.Reason, c limit.Criticality, tenant string) error {
	return &limit.RejectedError{Name: "api", Reason: r, Criticality: c, Tenant: tenant}
}

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
		brk = "bulwark.component=breaker,bulwark.name=payments"
		ret = "bulwark.component=retry,bulwark.name=payments"
		bal = "bulwark.component=balancer,server.address=10.0.0.1,server.port=80,bulwark.name=orders,cloud.availability_zone=a"
		hc  = "bulwark.component=healthcheck,server.address=10.0.0.1,server.port=80,bulwark.name=orders,cloud.availability_zone=a"
		idm = "bulwark.component=idempotency,bulwark.name=orders"
		lim = "bulwark.component=limiter,bulwark.name=api"
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
				{"bulwark.breaker.calls", brk + ",bulwark.outcome=success", point{value: 2}},
				{"bulwark.breaker.calls", brk + ",bulwark.outcome=failure", point{value: 1}},
				{"bulwark.breaker.call.duration", brk + ",bulwark.outcome=success", point{count: 2, sum: 0.4}},
				{"bulwark.breaker.call.duration", brk + ",bulwark.outcome=failure", point{count: 1, sum: 1}},
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
				{"bulwark.breaker.rejections", brk + ",bulwark.reason=open", point{value: 2}},
				{"bulwark.breaker.transitions", brk + ",bulwark.previous_state=closed,bulwark.reason=failure_rate,bulwark.state=open", point{value: 1}},
				{"bulwark.breaker.transitions", brk + ",bulwark.previous_state=open,bulwark.state=half-open", point{value: 1}},
				{"bulwark.breaker.state", brk + ",bulwark.state=closed", point{value: 0}},
				{"bulwark.breaker.state", brk + ",bulwark.state=open", point{value: 0}},
				{"bulwark.breaker.state", brk + ",bulwark.state=half-open", point{value: 1}},
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
				{"bulwark.retry.retries", ret + ",bulwark.reason=error", point{value: 1}},
				{"bulwark.retry.retries", ret + ",bulwark.reason=retry_after", point{value: 1}},
				{"bulwark.retry.backoff", ret + ",bulwark.reason=error", point{count: 1, sum: 0.1}},
				{"bulwark.retry.giveups", ret + ",bulwark.reason=attempts,error.type=transient", point{value: 1}},
				{"bulwark.retry.budget_exhausted", ret, point{value: 1}},
				{"bulwark.retry.hedges", "bulwark.component=hedge,bulwark.name=payments", point{value: 1}},
				{"bulwark.retry.calls", ret + ",bulwark.outcome=failure", point{value: 1}},
			},
		},
		{
			name: "give-ups by error.type: permanent and canceled apart from transient",
			events: []bulwark.Event{
				{Kind: bulwark.EventGiveUp, Component: "retry", Name: "payments", Attempt: 1, Reason: "not_retryable", Err: bulwark.Permanent(errBoom)},
				{Kind: bulwark.EventGiveUp, Component: "retry", Name: "payments", Attempt: 1, Reason: "not_retryable", Err: bulwark.Permanent(errBoom)},
				{Kind: bulwark.EventGiveUp, Component: "retry", Name: "payments", Attempt: 1, Reason: "permanent", Err: bulwark.Permanent(errBoom)},
				{Kind: bulwark.EventGiveUp, Component: "retry", Name: "payments", Attempt: 2, Reason: "canceled", Err: context.Canceled},
				{Kind: bulwark.EventGiveUp, Component: "retry", Name: "payments", Attempt: 2, Reason: "deadline", Err: context.DeadlineExceeded},
				{Kind: bulwark.EventGiveUp, Component: "hedge", Name: "payments", Attempt: 2, Reason: "budget", Err: errBoom},
			},
			want: []want{
				{"bulwark.retry.giveups", ret + ",bulwark.reason=not_retryable,error.type=permanent", point{value: 2}},
				{"bulwark.retry.giveups", ret + ",bulwark.reason=permanent,error.type=permanent", point{value: 1}},
				{"bulwark.retry.giveups", ret + ",bulwark.reason=canceled,error.type=canceled", point{value: 1}},
				{"bulwark.retry.giveups", ret + ",bulwark.reason=deadline,error.type=transient", point{value: 1}},
				{"bulwark.retry.giveups", "bulwark.component=hedge,bulwark.name=payments,bulwark.reason=budget,error.type=transient", point{value: 1}},
			},
		},
		{
			name: "endpoint addresses split into server.address and server.port",
			events: []bulwark.Event{
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: bulwark.Endpoint{Addr: "[::1]:8080"}},
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: bulwark.Endpoint{Addr: "orders.internal", Zone: "eu-west-1a"}},
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: bulwark.Endpoint{Addr: "orders.internal:http"}},
			},
			want: []want{
				{"bulwark.balancer.picks", "bulwark.component=balancer,bulwark.name=orders,server.address=::1,server.port=8080", point{value: 1}},
				{"bulwark.balancer.picks", "bulwark.component=balancer,bulwark.name=orders,cloud.availability_zone=eu-west-1a,server.address=orders.internal", point{value: 1}},
				{"bulwark.balancer.picks", "bulwark.component=balancer,bulwark.name=orders,server.address=orders.internal:http", point{value: 1}},
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
				{"bulwark.balancer.picks", "bulwark.component=balancer,server.address=10.0.0.2,server.port=80,bulwark.name=orders,cloud.availability_zone=b", point{value: 1}},
				{"bulwark.balancer.inflight", bal, point{value: 1}},
				{"bulwark.balancer.inflight", "bulwark.component=balancer,server.address=10.0.0.2,server.port=80,bulwark.name=orders,cloud.availability_zone=b", point{value: 0}},
				{"bulwark.balancer.call.duration", bal + ",bulwark.outcome=success", point{count: 1, sum: 0.02}},
				{"bulwark.balancer.state", "bulwark.component=balancer,bulwark.name=orders,bulwark.state=panic", point{value: 1}},
				{"bulwark.balancer.state", "bulwark.component=balancer,bulwark.name=orders,bulwark.state=normal", point{value: 0}},
				{"bulwark.balancer.endpoints", "bulwark.component=balancer,bulwark.name=orders", point{value: 1}},
			},
		},
		{
			name: "balancer sampled picks weighted, in flight stopped",
			events: []bulwark.Event{
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: epA, Weight: 1},
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: epB, Weight: 10}, // sampled 1 in 10
				{Kind: bulwark.EventCall, Component: "balancer", Name: "orders", Endpoint: epA},
				{Kind: bulwark.EventPick, Component: "balancer", Name: "orders", Endpoint: epA, Weight: 1},
			},
			want: []want{
				{"bulwark.balancer.picks", bal, point{value: 2}},
				{"bulwark.balancer.picks", "bulwark.component=balancer,server.address=10.0.0.2,server.port=80,bulwark.name=orders,cloud.availability_zone=b", point{value: 10}},
				{"bulwark.balancer.inflight", bal, point{value: 1}}, // as it was when the sampled pick came
			},
		},
		{
			name: "healthcheck probes, endpoint state, ejections",
			events: []bulwark.Event{
				{Kind: bulwark.EventProbe, Component: "healthcheck", Name: "orders", Endpoint: epA, Outcome: bulwark.Success, Latency: 5 * time.Millisecond},
				{Kind: bulwark.EventProbe, Component: "healthcheck", Name: "orders", Endpoint: epA, Outcome: bulwark.Failure, Latency: time.Second, Err: errBoom},
				{Kind: bulwark.EventStateChange, Component: "healthcheck", Name: "orders", Endpoint: epA, From: "healthy", To: "unhealthy"},
				{Kind: bulwark.EventEjected, Component: "outlier", Name: "orders", Endpoint: epA, Delay: 30 * time.Second, Reason: "consecutive_5xx", Count: 1},
				{Kind: bulwark.EventEjected, Component: "outlier", Name: "orders", Endpoint: epB, Delay: 30 * time.Second, Reason: "success_rate", Count: 1},
				{Kind: bulwark.EventUnejected, Component: "outlier", Name: "orders", Endpoint: epB},
			},
			want: []want{
				{"bulwark.healthcheck.probes", hc + ",bulwark.outcome=success", point{value: 1}},
				{"bulwark.healthcheck.probes", hc + ",bulwark.outcome=failure", point{value: 1}},
				{"bulwark.healthcheck.probe.duration", hc + ",bulwark.outcome=failure", point{count: 1, sum: 1}},
				{"bulwark.healthcheck.state", hc + ",bulwark.state=unhealthy", point{value: 1}},
				{"bulwark.healthcheck.state", hc + ",bulwark.state=healthy", point{value: 0}},
				{"bulwark.healthcheck.ejections", "bulwark.component=outlier,server.address=10.0.0.1,server.port=80,bulwark.name=orders,bulwark.reason=consecutive_5xx,cloud.availability_zone=a", point{value: 1}},
				{"bulwark.healthcheck.ejected", "bulwark.component=outlier,server.address=10.0.0.1,server.port=80,bulwark.name=orders,cloud.availability_zone=a", point{value: 1}},
				{"bulwark.healthcheck.ejected", "bulwark.component=outlier,server.address=10.0.0.2,server.port=80,bulwark.name=orders,cloud.availability_zone=b", point{value: 0}},
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
				{"bulwark.idempotency.store_errors", idm + ",bulwark.reason=fail-open", point{value: 1}},
				{"bulwark.idempotency.store.duration", idm + ",bulwark.outcome=failure", point{count: 1, sum: 0.05}},
				{"bulwark.idempotency.store.duration", idm + ",bulwark.outcome=success", point{count: 1, sum: 0.002}},
			},
		},
		{
			name: "limit rejections by reason and criticality, never tenant; adjustments and the limit they set",
			events: []bulwark.Event{
				{Kind: bulwark.EventRejected, Component: "limiter", Name: "api", Reason: "limit", Err: rejected(limit.ReasonLimit, limit.Sheddable, "t1")},
				{Kind: bulwark.EventRejected, Component: "limiter", Name: "api", Reason: "limit", Err: rejected(limit.ReasonLimit, limit.Sheddable, "t2")},
				{Kind: bulwark.EventRejected, Component: "limiter", Name: "api", Reason: "limit", Err: fmt.Errorf("wrapped: %w", rejected(limit.ReasonLimit, limit.Critical, ""))},
				{Kind: bulwark.EventRejected, Component: "limiter", Name: "api", Reason: "tenant", Err: rejected(limit.ReasonTenant, limit.Normal, "t1")},
				{Kind: bulwark.EventRejected, Component: "bulkhead", Name: "db", Reason: "queue_full", Err: rejected(limit.ReasonQueueFull, limit.Criticality(7), "")},
				{Kind: bulwark.EventRejected, Component: "bulkhead", Name: "db", Reason: "queue_full", Err: errBoom},
				{Kind: bulwark.EventLimitChanged, Component: "limiter", Name: "api", Limit: 40, Latency: 20 * time.Millisecond, Reason: "increase"},
				{Kind: bulwark.EventLimitChanged, Component: "limiter", Name: "api", Limit: 30, Latency: 10 * time.Millisecond, Reason: "decrease"},
				{Kind: bulwark.EventLimitChanged, Component: "limiter", Name: "new", Limit: 20, Reason: "increase"},
			},
			want: []want{
				{"bulwark.limit.rejections", lim + ",bulwark.reason=limit,bulwark.criticality=sheddable", point{value: 2}},
				{"bulwark.limit.rejections", lim + ",bulwark.reason=limit,bulwark.criticality=critical", point{value: 1}},
				{"bulwark.limit.rejections", lim + ",bulwark.reason=tenant,bulwark.criticality=normal", point{value: 1}},
				{"bulwark.limit.rejections", "bulwark.component=bulkhead,bulwark.name=db,bulwark.reason=queue_full", point{value: 2}},
				{"bulwark.limit.adjustments", lim + ",bulwark.reason=increase", point{value: 1}},
				{"bulwark.limit.adjustments", lim + ",bulwark.reason=decrease", point{value: 1}},
				{"bulwark.limit.limit", lim, point{value: 30}},
				{"bulwark.limit.baseline", lim, point{sum: 0.01}},
				{"bulwark.limit.limit", "bulwark.component=limiter,bulwark.name=new", point{value: 20}},
			},
		},
		{
			name: "rate limit rejections, store errors by mode",
			events: []bulwark.Event{
				{Kind: bulwark.EventRejected, Component: "ratelimit", Name: "fleet", Key: "t1", Reason: "rate", Delay: time.Second},
				{Kind: bulwark.EventRejected, Component: "ratelimit", Name: "fleet", Key: "t2", Reason: "rate", Delay: time.Second},
				{Kind: bulwark.EventStoreError, Component: "ratelimit", Name: "fleet", Key: "t1", Reason: "fail-open", Err: errBoom, Latency: 100 * time.Millisecond},
				{Kind: bulwark.EventStoreError, Component: "ratelimit", Name: "fleet", Key: "t1", Reason: "fail-closed", Err: errBoom, Latency: 100 * time.Millisecond},
			},
			want: []want{
				{"bulwark.ratelimit.rejections", "bulwark.component=ratelimit,bulwark.name=fleet,bulwark.reason=rate", point{value: 2}},
				{"bulwark.ratelimit.store_errors", "bulwark.component=ratelimit,bulwark.name=fleet,bulwark.reason=fail-open", point{value: 1}},
				{"bulwark.ratelimit.store_errors", "bulwark.component=ratelimit,bulwark.name=fleet,bulwark.reason=fail-closed", point{value: 1}},
				{"bulwark.ratelimit.store.duration", "bulwark.component=ratelimit,bulwark.name=fleet,bulwark.outcome=failure", point{count: 2, sum: 0.2}},
			},
		},
		{
			name: "throttle, timeout, fallback and discovery: calls by outcome and reason",
			events: []bulwark.Event{
				{Kind: bulwark.EventRejected, Component: "throttle", Name: "search", Reason: "throttled", Err: errBoom},
				{Kind: bulwark.EventCall, Component: "timeout", Name: "db", Outcome: bulwark.Failure, Reason: "timeout", Latency: time.Second},
				{Kind: bulwark.EventCall, Component: "timeout", Name: "db", Outcome: bulwark.Success, Latency: 100 * time.Millisecond},
				{Kind: bulwark.EventCall, Component: "fallback", Name: "price", Outcome: bulwark.Success, Reason: "rejected"},
				{Kind: bulwark.EventCall, Component: "fallback", Name: "price", Outcome: bulwark.Failure, Reason: "deadline"},
				{Kind: bulwark.EventCall, Component: "discovery", Name: "orders", Outcome: bulwark.Failure, Reason: "resolve", Latency: time.Millisecond},
				{Kind: bulwark.EventStateChange, Component: "discovery", Name: "orders", From: "ok", To: "failing", Reason: "resolve"},
				{Kind: bulwark.EventEndpointAdded, Component: "discovery", Name: "orders", Endpoint: epA},
				{Kind: bulwark.EventEndpointAdded, Component: "discovery", Name: "orders", Endpoint: epB, Reason: "changed"},
				{Kind: bulwark.EventEndpointRemoved, Component: "discovery", Name: "orders", Endpoint: epB, Reason: "changed"},
			},
			want: []want{
				{"bulwark.throttle.rejections", "bulwark.component=throttle,bulwark.name=search,bulwark.reason=throttled", point{value: 1}},
				{"bulwark.timeout.calls", "bulwark.component=timeout,bulwark.name=db,bulwark.outcome=failure,bulwark.reason=timeout", point{value: 1}},
				{"bulwark.timeout.calls", "bulwark.component=timeout,bulwark.name=db,bulwark.outcome=success", point{value: 1}},
				{"bulwark.timeout.call.duration", "bulwark.component=timeout,bulwark.name=db,bulwark.outcome=failure,bulwark.reason=timeout", point{count: 1, sum: 1}},
				{"bulwark.fallback.calls", "bulwark.component=fallback,bulwark.name=price,bulwark.outcome=success,bulwark.reason=rejected", point{value: 1}},
				{"bulwark.fallback.calls", "bulwark.component=fallback,bulwark.name=price,bulwark.outcome=failure,bulwark.reason=deadline", point{value: 1}},
				{"bulwark.discovery.calls", "bulwark.component=discovery,bulwark.name=orders,bulwark.outcome=failure,bulwark.reason=resolve", point{value: 1}},
				{"bulwark.discovery.state", "bulwark.component=discovery,bulwark.name=orders,bulwark.state=failing", point{value: 1}},
				{"bulwark.discovery.endpoints", "bulwark.component=discovery,bulwark.name=orders", point{value: 1}},
				{"bulwark.discovery.endpoint_changes", "bulwark.component=discovery,bulwark.name=orders,bulwark.event.kind=endpoint_added", point{value: 1}},
				{"bulwark.discovery.endpoint_changes", "bulwark.component=discovery,bulwark.name=orders,bulwark.event.kind=endpoint_added,bulwark.reason=changed", point{value: 1}},
				{"bulwark.discovery.endpoint_changes", "bulwark.component=discovery,bulwark.name=orders,bulwark.event.kind=endpoint_removed,bulwark.reason=changed", point{value: 1}},
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
				{"bulwark.calls", "bulwark.component=mycache,bulwark.outcome=neutral", point{value: 1}},
				{"bulwark.breaker.events", brk + ",bulwark.event.kind=event(200)", point{value: 1}},
				{"bulwark.balancer.misuses", "bulwark.component=balancer,bulwark.name=orders,bulwark.reason=double_done", point{value: 1}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, r := newObserver(t)
			for _, e := range tt.events {
				o.Observe(e)
			}
			checkWants(t, collect(t, r), tt.want)
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
	const b = "bulwark.component=healthcheck,bulwark.name=orders,cloud.availability_zone=b,server.address=10.0.0.2,server.port=80"
	want := map[string]point{
		sortAttrs(b + ",bulwark.state=healthy"): {value: 1},
		sortAttrs(b + ",bulwark.state=unknown"): {value: 0},
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
// allocates nothing for an existing series of a cumulative counter), whether
// counts go to the SDK at once (before any collection) or are held until the
// next one.
func TestObserveSDKAllocs(t *testing.T) {
	t.Run("before a collection", func(t *testing.T) { checkSDKAllocs(t, false) })
	t.Run("after a collection", func(t *testing.T) { checkSDKAllocs(t, true) })
}

func checkSDKAllocs(t *testing.T, collected bool) {
	o, r := newObserver(t)
	if collected {
		collect(t, r) // from now on, counts are held until the next
	}
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

// TestScope checks that the meter carries the module's name and version and
// the schema of the semantic conventions its attributes follow.
func TestScope(t *testing.T) {
	o, r := newObserver(t)
	o.Observe(bulwark.Event{Kind: bulwark.EventCall, Component: "breaker", Name: "payments"})
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	require.Len(t, rm.ScopeMetrics, 1)
	got := rm.ScopeMetrics[0].Scope
	want := instrumentation.Scope{Name: otelbulwark.ScopeName, Version: otelbulwark.Version, SchemaURL: semconv.SchemaURL}
	if got != want {
		t.Errorf("scope = %+v, want %+v", got, want)
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`).MatchString(otelbulwark.Version) {
		t.Errorf("Version = %q, want a semantic version without the leading v", otelbulwark.Version)
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
		{Kind: bulwark.EventEjected, Component: "outlier", Name: "orders", Endpoint: epA, Delay: time.Second, Reason: "consecutive_5xx", Count: 1},
		{Kind: bulwark.EventUnejected, Component: "outlier", Name: "orders", Endpoint: epA},
		{Kind: bulwark.EventProbe, Component: "healthcheck", Name: "orders", Endpoint: epA, Outcome: bulwark.Success, Latency: time.Millisecond},
		{Kind: bulwark.EventClaimed, Component: "idempotency", Name: "orders", Key: "k"},
		{Kind: bulwark.EventReplayed, Component: "idempotency", Name: "orders", Key: "k"},
		{Kind: bulwark.EventConflict, Component: "idempotency", Name: "orders", Key: "k"},
		{Kind: bulwark.EventMismatch, Component: "idempotency", Name: "orders", Key: "k"},
		{Kind: bulwark.EventLeaseTakeover, Component: "idempotency", Name: "orders", Key: "k"},
		{Kind: bulwark.EventStoreError, Component: "idempotency", Name: "orders", Key: "k", Err: errBoom, Latency: time.Millisecond, Reason: "fail-open"},
		{Kind: bulwark.EventMisuse, Component: "balancer", Name: "orders", Reason: "double_done"},
		{Kind: bulwark.EventRejected, Component: "limiter", Name: "api", Reason: "limit", Err: rejected(limit.ReasonLimit, limit.Sheddable, "t1")},
		{Kind: bulwark.EventLimitChanged, Component: "limiter", Name: "api", Limit: 40, Latency: 10 * time.Millisecond, Reason: "increase"},
		{Kind: bulwark.EventRejected, Component: "ratelimit", Name: "tenants", Key: "t1", Reason: "rate", Delay: time.Second},
		{Kind: bulwark.EventStoreError, Component: "ratelimit", Name: "fleet", Key: "t1", Reason: "fail-open", Err: errBoom, Latency: time.Millisecond},
		{Kind: bulwark.EventRejected, Component: "throttle", Name: "search", Reason: "throttled", Err: errBoom},
		{Kind: bulwark.EventCall, Component: "timeout", Name: "db", Outcome: bulwark.Failure, Reason: "timeout", Latency: time.Second},
		{Kind: bulwark.EventCall, Component: "fallback", Name: "price", Outcome: bulwark.Success, Reason: "rejected"},
		{Kind: bulwark.EventCall, Component: "discovery", Name: "orders", Outcome: bulwark.Success, Latency: time.Millisecond},
		{Kind: bulwark.EventEndpointAdded, Component: "discovery", Name: "orders", Endpoint: epA},
	}
}

// TestObserveWithView checks the documented way to drop a growing attribute:
// an SDK View with an attribute filter.
func TestObserveWithView(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	view := sdkmetric.NewView(sdkmetric.Instrument{Name: "bulwark.balancer.call.duration"},
		sdkmetric.Stream{AttributeFilter: attribute.NewDenyKeysFilter("server.address", "server.port", "cloud.availability_zone")})
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithView(view))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	o, err := otelbulwark.New(otelbulwark.WithMeterProvider(mp))
	require.NoError(t, err)
	for _, ep := range []bulwark.Endpoint{epA, epB} {
		o.Observe(bulwark.Event{Kind: bulwark.EventCall, Component: "balancer", Name: "orders", Endpoint: ep, Outcome: bulwark.Success, Latency: time.Second})
	}
	got := collect(t, reader)
	want := map[string]point{"bulwark.component=balancer,bulwark.name=orders,bulwark.outcome=success": {count: 2, sum: 2}}
	require.Equal(t, want, got["bulwark.balancer.call.duration"], "bulwark.balancer.call.duration with endpoint filtered out")
	require.Len(t, got["bulwark.balancer.calls"], 2, "bulwark.balancer.calls keeps its endpoints")
}
