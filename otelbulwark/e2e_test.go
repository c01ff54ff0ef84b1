package otelbulwark_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

// TestBreakerEndToEnd drives a real breaker through closed → open →
// half-open → closed on the fake clock and checks what the Observer recorded
// from its events.
func TestBreakerEndToEnd(t *testing.T) {
	o, r := newObserver(t)
	clk := bulwarktest.NewClock(time.Time{})
	cb, err := breaker.New(breaker.Config{Name: "payments", Clock: clk, Observer: o,
		ConsecutiveFailures: 3, OpenDuration: 10 * time.Second, HalfOpenProbes: 1})
	require.NoError(t, err)
	ctx := context.Background()
	fail := func(context.Context) error { clk.Advance(200 * time.Millisecond); return errBoom }
	ok := func(context.Context) error { clk.Advance(50 * time.Millisecond); return nil }

	for range 3 {
		require.ErrorIs(t, cb.Do(ctx, fail), errBoom)
	}
	require.ErrorIs(t, cb.Do(ctx, ok), breaker.ErrOpen, "Do on the tripped breaker")
	clk.Advance(10 * time.Second)
	require.NoError(t, cb.Do(ctx, ok), "Do of the half-open probe")

	got := collect(t, r)
	const brk = "bulwark.component=breaker,bulwark.name=payments"
	want := []want{
		{"bulwark.breaker.calls", brk + ",bulwark.outcome=failure", point{value: 3}},
		{"bulwark.breaker.calls", brk + ",bulwark.outcome=success", point{value: 1}},
		{"bulwark.breaker.call.duration", brk + ",bulwark.outcome=failure", point{count: 3, sum: 0.6}},
		{"bulwark.breaker.rejections", brk + ",bulwark.reason=open", point{value: 1}},
		{"bulwark.breaker.state", brk + ",bulwark.state=closed", point{value: 1}},
		{"bulwark.breaker.state", brk + ",bulwark.state=open", point{value: 0}},
		{"bulwark.breaker.state", brk + ",bulwark.state=half-open", point{value: 0}},
	}
	for _, w := range want {
		p, ok := got[w.metric][sortAttrs(w.attrs)]
		if !ok {
			t.Errorf("%s{%s} missing; recorded: %v", w.metric, w.attrs, got[w.metric])
			continue
		}
		if p.value != w.point.value || p.count != w.point.count || !near(p.sum, w.point.sum) {
			t.Errorf("%s{%s} = %+v, want %+v", w.metric, w.attrs, p, w.point)
		}
	}
	var transitions []string
	for attrs, p := range got["bulwark.breaker.transitions"] {
		for range p.value {
			transitions = append(transitions, attrValue(attrs, "bulwark.previous_state")+"→"+attrValue(attrs, "bulwark.state"))
		}
	}
	require.ElementsMatch(t, []string{"closed→open", "open→half-open", "half-open→closed"}, transitions,
		"transitions recorded: %v", got["bulwark.breaker.transitions"])
}

// TestBalancerEndToEnd checks what README.md ("How the values are derived")
// promises about the balancer: it reports its picks and, from Pick.Done, its
// finished calls, so in flight and the per-endpoint latency need no EventCall
// from the caller.
func TestBalancerEndToEnd(t *testing.T) {
	o, r := newObserver(t)
	lb, err := balancer.New(balancer.Config{Name: "orders", Observer: o,
		Endpoints: []bulwark.Endpoint{{Addr: "10.0.0.1:80", Zone: "a"}, {Addr: "10.0.0.2:80", Zone: "b"}}})
	require.NoError(t, err)

	var open []balancer.Pick
	for range 4 {
		pk, err := lb.Pick("", nil)
		require.NoError(t, err)
		open = append(open, pk)
	}
	for _, pk := range open[:3] {
		pk.Done(balancer.Result{Latency: 20 * time.Millisecond})
	}
	got := collect(t, r)
	var picks, calls, inflight int64
	var latencies uint64
	for _, p := range got["bulwark.balancer.picks"] {
		picks += p.value
	}
	for _, p := range got["bulwark.balancer.calls"] {
		calls += p.value
	}
	for attrs, p := range got["bulwark.balancer.inflight"] {
		if p.value < 0 {
			t.Errorf("bulwark.balancer.inflight{%s} = %d, want >= 0", attrs, p.value)
		}
		inflight += p.value
	}
	for attrs, p := range got["bulwark.balancer.call.duration"] {
		if attrValue(attrs, "server.address") == "" || attrValue(attrs, "server.port") != "80" {
			t.Errorf("bulwark.balancer.call.duration{%s} has no endpoint attributes", attrs)
		}
		latencies += p.count
	}
	if picks != 4 || calls != 3 || inflight != 1 || latencies != 3 {
		t.Errorf("after 4 picks and 3 Done: picks = %d, calls = %d, in flight = %d, latencies recorded = %d; want 4, 3, 1, 3",
			picks, calls, inflight, latencies)
	}
}

// A balancer whose endpoints are all at their limits reports the refusal
// (issue 17), which lands in bulwark_balancer_rejections_total as the table
// in README.md says.
func TestBalancerLimitRejections(t *testing.T) {
	o, r := newObserver(t)
	o.Observe(bulwark.Event{Kind: bulwark.EventRejected, Component: bulwark.ComponentBalancer, Name: "edge", Reason: "limit"})
	checkWants(t, collect(t, r), []want{
		{"bulwark.balancer.rejections", "bulwark.component=balancer,bulwark.name=edge,bulwark.reason=limit", point{value: 1}},
	})
}
