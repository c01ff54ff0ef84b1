package otelbulwark_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
	const brk = "component=breaker,name=payments"
	want := []want{
		{"bulwark.breaker.calls", brk + ",outcome=failure", point{value: 3}},
		{"bulwark.breaker.calls", brk + ",outcome=success", point{value: 1}},
		{"bulwark.breaker.call.duration", brk + ",outcome=failure", point{count: 3, sum: 0.6}},
		{"bulwark.breaker.rejections", brk + ",reason=open", point{value: 1}},
		{"bulwark.breaker.state", brk + ",state=closed", point{value: 1}},
		{"bulwark.breaker.state", brk + ",state=open", point{value: 0}},
		{"bulwark.breaker.state", brk + ",state=half-open", point{value: 0}},
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
			transitions = append(transitions, attrValue(attrs, "from")+"→"+attrValue(attrs, "to"))
		}
	}
	require.ElementsMatch(t, []string{"closed→open", "open→half-open", "half-open→closed"}, transitions,
		"transitions recorded: %v", got["bulwark.breaker.transitions"])
}
