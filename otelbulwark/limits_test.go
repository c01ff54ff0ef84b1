package otelbulwark_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/discovery"
	"github.com/bulwark-go/bulwark/fallback"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/otelbulwark"
	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/bulwark-go/bulwark/throttle"
	"github.com/bulwark-go/bulwark/timeout"
)

// recorder keeps the events a component emits, beside the Observer under
// test, so that a test can count them and replay them.
type recorder struct {
	mu  sync.Mutex
	evs []bulwark.Event
}

func (r *recorder) Observe(e bulwark.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func (r *recorder) events() []bulwark.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bulwark.Event(nil), r.evs...)
}

// observers returns an Observer for a component that feeds both o and a new
// recorder.
func observers(o *otelbulwark.Observer) (bulwark.Observer, *recorder) {
	rec := &recorder{}
	return bulwark.Observers(o, rec), rec
}

// requireNoAllocs replays every event that real components emitted into a
// fresh Observer on an SDK, and checks that each costs no allocation once its
// attributes have been seen: the components' events, not only hand-made ones.
func requireNoAllocs(t *testing.T, evs []bulwark.Event) {
	t.Helper()
	require.NotEmpty(t, evs, "events to replay")
	o, _ := newObserver(t)
	type kind struct {
		kind                         bulwark.EventKind
		component, name, reason, err string
		outcome                      bulwark.Outcome
		ep                           bulwark.Endpoint
	}
	seen := map[kind]bool{}
	for _, e := range evs {
		if e.Kind == bulwark.EventStateChange || e.Kind == bulwark.EventEndpointRemoved {
			continue // rare events that update the state gauges under a lock
		}
		k := kind{e.Kind, e.Component, e.Name, e.Reason, fmt.Sprint(e.Err), e.Outcome, e.Endpoint}
		if seen[k] {
			continue
		}
		seen[k] = true
		for range 3 {
			o.Observe(e) // warm the cache and the SDK's series
		}
		if n := testing.AllocsPerRun(50, func() { o.Observe(e) }); n != 0 {
			t.Errorf("Observe(%v of %s %q, reason %q) with the SDK: %v allocs, want 0", e.Kind, e.Component, e.Name, e.Reason, n)
		}
	}
}

// rejections counts the refusals in errs by reason and criticality, as the
// rejections counter's attributes render them.
func rejections(errs []error) map[string]int64 {
	n := map[string]int64{}
	for _, err := range errs {
		var re *limit.RejectedError
		if errors.As(err, &re) {
			n["bulwark.criticality="+re.Criticality.String()+",bulwark.reason="+re.Reason.String()]++
		}
	}
	return n
}

// points returns the points of metric whose attributes include every one of
// attrs ("k=v,k=v"), keyed by the attributes that are not in attrs.
func points(got snapshot, metric, attrs string) map[string]point {
	out := map[string]point{}
	for a, p := range got[metric] {
		rest := a
		ok := true
		for _, kv := range splitAttrs(attrs) {
			if !containsAttr(rest, kv) {
				ok = false
				break
			}
			rest = withoutAttr(rest, strings.SplitN(kv, "=", 2)[0])
		}
		if ok {
			out[rest] = p
		}
	}
	return out
}

// TestLimiterEndToEnd drives a real adaptive Limiter on the fake clock past
// its capacity, with calls of every criticality and a tenant over its share,
// and checks the limit family: the limit, in flight and baseline of the
// registered Limiter, its adjustments by reason, and its rejections by reason
// and criticality, never by tenant.
func TestLimiterEndToEnd(t *testing.T) {
	o, r := newObserver(t)
	obs, rec := observers(o)
	clk := bulwarktest.NewClock(time.Time{})
	lim, err := limit.New(limit.Config{Name: "api", Clock: clk, Observer: obs})
	require.NoError(t, err)
	unregister, err := o.RegisterLimit(bulwark.ComponentLimiter, lim.Name(), lim)
	require.NoError(t, err)

	// Rounds of 200 calls against a callee whose knee is 40 calls: the limit
	// finds the knee and the excess is refused.
	var errs []error
	crits := []limit.Criticality{limit.Sheddable, limit.Normal, limit.Critical}
	round := func(demand int) []limit.Permit {
		var ps []limit.Permit
		for i := range demand {
			ctx := limit.WithCriticality(context.Background(), crits[i%3])
			if i%2 == 0 {
				ctx = limit.WithTenant(ctx, "tenant-7") // over its share of the limit: refused with ReasonTenant
			}
			p, err := lim.Acquire(ctx)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			ps = append(ps, p)
		}
		return ps
	}
	for range 300 {
		ps := round(200)
		lat := 10 * time.Millisecond
		if len(ps) > 40 {
			lat = lat * time.Duration(len(ps)) / 40
		}
		clk.Advance(lat)
		for i := range ps {
			ps[i].Done(nil)
		}
	}
	held := round(200) // in flight while the SDK collects
	defer func() {
		for i := range held {
			held[i].Done(nil)
		}
	}()

	got := collect(t, r)
	const base = "bulwark.component=limiter,bulwark.name=api"
	wantRej := rejections(errs)
	require.Contains(t, wantRej, "bulwark.criticality=sheddable,bulwark.reason=limit", "the rounds refused no sheddable call")
	require.Contains(t, wantRej, "bulwark.criticality=critical,bulwark.reason=limit", "the rounds refused no critical call")
	require.Contains(t, wantRej, "bulwark.criticality=normal,bulwark.reason=tenant", "the rounds refused no call for its tenant")
	gotRej := map[string]int64{}
	for attrs, p := range points(got, "bulwark.limit.rejections", base) {
		gotRej[attrs] = p.value
	}
	require.Equal(t, wantRej, gotRej, "bulwark.limit.rejections{%s} by criticality and reason", base)
	for metric, pts := range got {
		for attrs := range pts {
			if strings.Contains(attrs, "tenant-7") {
				t.Errorf("%s{%s} carries the tenant", metric, attrs)
			}
		}
	}

	wantAdj := map[string]int64{}
	last := 0
	for _, e := range rec.events() {
		if e.Kind == bulwark.EventLimitChanged {
			wantAdj["bulwark.reason="+e.Reason]++
			last = e.Limit
		}
	}
	require.Contains(t, wantAdj, "bulwark.reason=increase", "the limit never grew")
	gotAdj := map[string]int64{}
	for attrs, p := range points(got, "bulwark.limit.adjustments", base) {
		gotAdj[attrs] = p.value
	}
	require.Equal(t, wantAdj, gotAdj, "bulwark.limit.adjustments{%s} by reason", base)
	require.Equal(t, last, lim.Limit(), "the last EventLimitChanged and Limit()")
	checkWants(t, got, []want{
		{"bulwark.limit.limit", base, point{value: int64(lim.Limit())}},
		{"bulwark.limit.inflight", base, point{value: int64(len(held))}},
		{"bulwark.limit.baseline", base, point{sum: lim.Baseline().Seconds()}},
	})
	require.Equal(t, 10*time.Millisecond, lim.Baseline(), "the Limiter's baseline")
	require.Empty(t, got["bulwark.limit.queued"], "a Limiter has no queue")

	// Unregistered, the Limiter's gauges go until its next EventLimitChanged,
	// which sets the limit and the baseline again; in flight is not known
	// from events.
	unregister()
	unregister() // a second call does nothing
	got = collect(t, r)
	require.Empty(t, got["bulwark.limit.limit"], "bulwark.limit.limit after unregister")
	require.Empty(t, got["bulwark.limit.inflight"], "bulwark.limit.inflight after unregister")
	for i := range held {
		held[i].Done(nil)
	}
	held = nil
	var lastEv bulwark.Event
	for range 100 {
		ps := round(200)
		clk.Advance(100 * time.Millisecond) // ten times slower: the limit moves
		for i := range ps {
			ps[i].Done(nil)
		}
		if lastEv = lastLimitChanged(rec.events()); lastEv.Limit != last {
			break
		}
	}
	require.NotEqual(t, last, lastEv.Limit, "the limit did not move after the callee got slower")
	got = collect(t, r)
	checkWants(t, got, []want{
		{"bulwark.limit.limit", base, point{value: int64(lastEv.Limit)}},
		{"bulwark.limit.baseline", base, point{sum: lastEv.Latency.Seconds()}},
	})
	require.Empty(t, got["bulwark.limit.inflight"], "bulwark.limit.inflight of an unregistered Limiter")

	requireNoAllocs(t, rec.events())
}

func lastLimitChanged(evs []bulwark.Event) bulwark.Event {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Kind == bulwark.EventLimitChanged {
			return evs[i]
		}
	}
	return bulwark.Event{}
}

// TestBulkheadEndToEnd fills a real Bulkhead and its queue and checks the
// limit, in flight and queued gauges, and rejections for each way a bulkhead
// refuses: a full queue, a waiter shed by a more critical call, a wait that
// timed out.
func TestBulkheadEndToEnd(t *testing.T) {
	o, r := newObserver(t)
	obs, rec := observers(o)
	clk := bulwarktest.NewClock(time.Time{})
	b, err := limit.NewBulkhead(limit.BulkheadConfig{Name: "db", Limit: 2, MaxQueue: 1, MaxWait: time.Minute, Clock: clk, Observer: obs})
	require.NoError(t, err)
	_, err = o.RegisterLimit(bulwark.ComponentBulkhead, b.Name(), b)
	require.NoError(t, err)
	crit := func(c limit.Criticality) context.Context { return limit.WithCriticality(context.Background(), c) }
	wait := func(n int) { // until n timers are pending: a waiter in the queue
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a deadlock guard, not a timing assumption
		defer cancel()
		require.NoError(t, clk.BlockUntil(ctx, n))
	}

	hold1, err := b.Acquire(context.Background())
	require.NoError(t, err)
	hold2, err := b.Acquire(context.Background())
	require.NoError(t, err)
	normal := make(chan error, 1)
	go func() {
		p, err := b.Acquire(crit(limit.Normal))
		if err == nil {
			p.Done(nil)
		}
		normal <- err
	}()
	wait(1)
	const base = "bulwark.component=bulkhead,bulwark.name=db"
	checkWants(t, collect(t, r), []want{
		{"bulwark.limit.limit", base, point{value: 2}},
		{"bulwark.limit.inflight", base, point{value: 2}},
		{"bulwark.limit.queued", base, point{value: 1}},
	})

	_, err = b.Acquire(crit(limit.Sheddable)) // the queue is full of a more critical call
	require.ErrorIs(t, err, limit.ErrRejected)
	critical := make(chan error, 1)
	go func() { // takes the queued normal call's place
		p, err := b.Acquire(crit(limit.Critical))
		if err == nil {
			p.Done(nil)
		}
		critical <- err
	}()
	require.ErrorIs(t, <-normal, limit.ErrRejected, "the normal waiter, shed")
	hold1.Done(nil)
	require.NoError(t, <-critical)

	// Both slots taken again; a critical call waits MaxWait in vain.
	hold1, err = b.Acquire(context.Background())
	require.NoError(t, err)
	timers := clk.Timers()
	late := make(chan error, 1)
	go func() { _, err := b.Acquire(crit(limit.Critical)); late <- err }()
	wait(timers + 1)
	clk.Advance(time.Minute)
	require.ErrorIs(t, <-late, limit.ErrRejected, "the critical waiter after MaxWait")
	hold1.Done(nil)
	hold2.Done(nil)

	got := collect(t, r)
	checkWants(t, got, []want{
		{"bulwark.limit.rejections", base + ",bulwark.criticality=sheddable,bulwark.reason=queue_full", point{value: 1}},
		{"bulwark.limit.rejections", base + ",bulwark.criticality=normal,bulwark.reason=shed", point{value: 1}},
		{"bulwark.limit.rejections", base + ",bulwark.criticality=critical,bulwark.reason=wait_timeout", point{value: 1}},
		{"bulwark.limit.inflight", base, point{value: 0}},
		{"bulwark.limit.queued", base, point{value: 0}},
	})
	require.Len(t, got["bulwark.limit.rejections"], 3, "bulwark.limit.rejections series")
	require.Empty(t, got["bulwark.limit.baseline"], "a Bulkhead has no baseline")
	requireNoAllocs(t, rec.events())
}

// TestRateLimitEndToEnd checks the ratelimit family from a real Group and
// Limiter: rejections by reason ("rate", "burst", "deadline").
func TestRateLimitEndToEnd(t *testing.T) {
	o, r := newObserver(t)
	obs, rec := observers(o)
	clk := bulwarktest.NewClock(time.Now())
	g, err := ratelimit.NewGroup(ratelimit.GroupConfig{Limit: ratelimit.Config{Name: "tenants", Rate: 1, Period: 2 * time.Hour, Clock: clk, Observer: obs}})
	require.NoError(t, err)
	lim, err := ratelimit.New(ratelimit.Config{Name: "search", Rate: 10, Clock: clk, Observer: obs})
	require.NoError(t, err)

	require.True(t, g.Allow("acme"))
	require.False(t, g.Allow("acme"))
	require.False(t, g.Allow("acme"))
	require.False(t, g.AllowN("acme", clk.Now(), 2).Allowed, "more than Burst")
	ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(time.Hour)) // the next token comes in 2 h
	defer cancel()
	require.ErrorIs(t, g.Wait(ctx, "acme"), ratelimit.ErrLimited)
	for range 12 {
		lim.Allow()
	}

	checkWants(t, collect(t, r), []want{
		{"bulwark.ratelimit.rejections", "bulwark.component=ratelimit,bulwark.name=tenants,bulwark.reason=rate", point{value: 2}},
		{"bulwark.ratelimit.rejections", "bulwark.component=ratelimit,bulwark.name=tenants,bulwark.reason=burst", point{value: 1}},
		{"bulwark.ratelimit.rejections", "bulwark.component=ratelimit,bulwark.name=tenants,bulwark.reason=deadline", point{value: 1}},
		{"bulwark.ratelimit.rejections", "bulwark.component=ratelimit,bulwark.name=search,bulwark.reason=rate", point{value: 2}},
	})
	requireNoAllocs(t, rec.events())
}

// TestThrottleEndToEnd drives a real throttle against a failing backend and
// checks its rejections and the probability gauge it is registered on.
func TestThrottleEndToEnd(t *testing.T) {
	o, r := newObserver(t)
	obs, rec := observers(o)
	clk := bulwarktest.NewClock(time.Time{})
	draws := 0
	th, err := throttle.New(throttle.Config{Name: "search", Clock: clk, Observer: obs,
		Random: func() float64 { draws++; return float64(draws%10) / 10 }})
	require.NoError(t, err)
	_, err = o.RegisterThrottle(bulwark.ComponentThrottle, "search", th)
	require.NoError(t, err)

	refused := 0
	fail := func(context.Context) error { return errBoom }
	for range 50 {
		if errors.Is(th.Do(context.Background(), fail), throttle.ErrThrottled) {
			refused++
		}
	}
	require.Positive(t, refused, "the throttle refused nothing")
	pr := th.Probability()
	require.Positive(t, pr, "Probability()")

	checkWants(t, collect(t, r), []want{
		{"bulwark.throttle.rejections", "bulwark.component=throttle,bulwark.name=search,bulwark.reason=throttled", point{value: int64(refused)}},
		{"bulwark.throttle.probability", "bulwark.component=throttle,bulwark.name=search", point{sum: pr}},
	})
	requireNoAllocs(t, rec.events())
}

// TestTimeoutEndToEnd checks the timeout family from a real Policy: calls by
// outcome, and those that overran with bulwark.reason "timeout".
func TestTimeoutEndToEnd(t *testing.T) {
	o, r := newObserver(t)
	obs, rec := observers(o)
	clk := bulwarktest.NewClock(time.Time{})
	p, err := timeout.New(timeout.Config{Name: "db", Timeout: time.Second, Clock: clk, Observer: obs})
	require.NoError(t, err)
	for range 3 {
		require.NoError(t, p.Do(context.Background(), func(context.Context) error { clk.Advance(100 * time.Millisecond); return nil }))
	}
	for range 2 {
		err := p.Do(context.Background(), func(ctx context.Context) error {
			clk.Advance(2 * time.Second) // past the deadline: the Policy's timer fires
			<-ctx.Done()
			return ctx.Err()
		})
		require.ErrorIs(t, err, timeout.ErrTimeout)
	}
	const base = "bulwark.component=timeout,bulwark.name=db"
	checkWants(t, collect(t, r), []want{
		{"bulwark.timeout.calls", base + ",bulwark.outcome=success", point{value: 3}},
		{"bulwark.timeout.calls", base + ",bulwark.outcome=failure,bulwark.reason=timeout", point{value: 2}},
		{"bulwark.timeout.call.duration", base + ",bulwark.outcome=success", point{count: 3, sum: 0.3}},
		{"bulwark.timeout.call.duration", base + ",bulwark.outcome=failure,bulwark.reason=timeout", point{count: 2, sum: 4}},
	})
	requireNoAllocs(t, rec.events())
}

// TestFallbackEndToEnd checks the fallback family from a real Fallback: the
// values served (outcome success) and the fallbacks that failed too (outcome
// failure), by the reason of the error they stood in for.
func TestFallbackEndToEnd(t *testing.T) {
	o, r := newObserver(t)
	obs, rec := observers(o)
	clk := bulwarktest.NewClock(time.Time{})
	errNoCache := errors.New("no cached price")
	fb, err := fallback.New(fallback.Config[int]{Name: "price", Observer: obs,
		Func: func(_ context.Context, err error) (int, error) {
			if errors.Is(err, context.DeadlineExceeded) {
				return 0, errNoCache
			}
			return 42, nil
		}})
	require.NoError(t, err)
	rl, err := ratelimit.New(ratelimit.Config{Rate: 1, Clock: clk}) // refuses the second call: a rejection
	require.NoError(t, err)
	get := func(err error) func(context.Context) (int, error) {
		return func(context.Context) (int, error) { return 0, err }
	}
	v, err := fb.Call(context.Background(), rl, get(nil))
	require.NoError(t, err)
	require.Equal(t, 0, v)
	v, err = fb.Call(context.Background(), rl, get(nil)) // rate limited
	require.NoError(t, err)
	require.Equal(t, 42, v)
	_, err = fb.Call(context.Background(), nil, get(errBoom))
	require.NoError(t, err)
	_, err = fb.Call(context.Background(), nil, get(context.DeadlineExceeded))
	require.ErrorIs(t, err, errNoCache)

	const base = "bulwark.component=fallback,bulwark.name=price"
	checkWants(t, collect(t, r), []want{
		{"bulwark.fallback.calls", base + ",bulwark.outcome=success,bulwark.reason=rejected", point{value: 1}},
		{"bulwark.fallback.calls", base + ",bulwark.outcome=success,bulwark.reason=error", point{value: 1}},
		{"bulwark.fallback.calls", base + ",bulwark.outcome=failure,bulwark.reason=deadline", point{value: 1}},
	})
	requireNoAllocs(t, rec.events())
}

// updater is a discovery.Updater that keeps the last set.
type updater struct{ eps []bulwark.Endpoint }

func (u *updater) Update(eps []bulwark.Endpoint) error { u.eps = eps; return nil }

// TestDiscoveryEndToEnd checks the discovery family from a real Watcher:
// resolutions by outcome and reason, the failing state, the endpoints and
// their changes.
func TestDiscoveryEndToEnd(t *testing.T) {
	o, r := newObserver(t)
	obs, rec := observers(o)
	clk := bulwarktest.NewClock(time.Time{})
	answers := []struct {
		eps []bulwark.Endpoint
		err error
	}{
		{eps: []bulwark.Endpoint{{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.2:80"}}},
		{err: errBoom},
		{eps: []bulwark.Endpoint{{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.3:80"}, {Addr: "10.0.0.4:80"}}},
		{}, // empty: a failure, the endpoints stay
		{err: errBoom},
	}
	i := 0
	w, err := discovery.New(discovery.Config{Name: "orders", Clock: clk, Observer: obs, Updater: &updater{},
		Resolver: discovery.ResolverFunc(func(context.Context) ([]bulwark.Endpoint, time.Duration, error) {
			a := answers[i]
			i++
			return a.eps, 0, a.err
		})})
	require.NoError(t, err)
	for range answers {
		_ = w.Refresh(context.Background())
	}

	const base = "bulwark.component=discovery,bulwark.name=orders"
	checkWants(t, collect(t, r), []want{
		{"bulwark.discovery.calls", base + ",bulwark.outcome=success", point{value: 2}},
		{"bulwark.discovery.calls", base + ",bulwark.outcome=failure,bulwark.reason=resolve", point{value: 2}},
		{"bulwark.discovery.calls", base + ",bulwark.outcome=failure,bulwark.reason=empty", point{value: 1}},
		{"bulwark.discovery.state", base + ",bulwark.state=failing", point{value: 1}},
		{"bulwark.discovery.state", base + ",bulwark.state=ok", point{value: 0}},
		{"bulwark.discovery.endpoints", base, point{value: 3}},
		{"bulwark.discovery.endpoint_changes", base + ",bulwark.event.kind=endpoint_added", point{value: 4}},
		{"bulwark.discovery.endpoint_changes", base + ",bulwark.event.kind=endpoint_removed", point{value: 1}},
		{"bulwark.discovery.transitions", base + ",bulwark.previous_state=ok,bulwark.state=failing,bulwark.reason=resolve", point{value: 1}},
	})
	requireNoAllocs(t, rec.events())
}

// TestRegisterLimit checks the registration rules: a nil source is refused, a
// second registration of a component and name replaces the first (whose
// unregister then leaves the second alone), and in the balancer family in
// flight is left to the up-down counter of picks.
func TestRegisterLimit(t *testing.T) {
	o, r := newObserver(t)
	for _, src := range []otelbulwark.Limit{nil, (*limit.Limiter)(nil), (*limit.Bulkhead)(nil)} {
		unregister, err := o.RegisterLimit(bulwark.ComponentLimiter, "x", src)
		require.ErrorIs(t, err, otelbulwark.ErrNilSource, "RegisterLimit(%T(nil))", src)
		unregister()
	}
	for _, src := range []otelbulwark.Throttle{nil, (*throttle.Policy)(nil)} {
		unregister, err := o.RegisterThrottle(bulwark.ComponentThrottle, "x", src)
		require.ErrorIs(t, err, otelbulwark.ErrNilSource, "RegisterThrottle(%T(nil))", src)
		unregister()
	}

	small, err := limit.NewBulkhead(limit.BulkheadConfig{Limit: 3})
	require.NoError(t, err)
	big, err := limit.NewBulkhead(limit.BulkheadConfig{Limit: 30})
	require.NoError(t, err)
	first, err := o.RegisterLimit(bulwark.ComponentBulkhead, "db", small)
	require.NoError(t, err)
	second, err := o.RegisterLimit(bulwark.ComponentBulkhead, "db", big)
	require.NoError(t, err)
	first() // replaced already: leaves the second in place
	const base = "bulwark.component=bulkhead,bulwark.name=db"
	checkWants(t, collect(t, r), []want{{"bulwark.limit.limit", base, point{value: 30}}})
	second()
	require.Empty(t, collect(t, r)["bulwark.limit.limit"], "bulwark.limit.limit after both unregistered")

	_, err = o.RegisterLimit(bulwark.ComponentBalancer, "lb", big)
	require.NoError(t, err)
	got := collect(t, r)
	checkWants(t, got, []want{{"bulwark.balancer.limit", "bulwark.component=balancer,bulwark.name=lb", point{value: 30}}})
	require.Empty(t, got["bulwark.balancer.inflight"], "a registered limit's in flight in the balancer family")
}

// TestRegisterConcurrentSafe registers, unregisters and collects at once, and
// records limit changes for many limiters, then checks what is left.
func TestRegisterConcurrentSafe(t *testing.T) {
	o, r := newObserver(t)
	b, err := limit.NewBulkhead(limit.BulkheadConfig{Limit: 5})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				name := fmt.Sprintf("l%d-%d", g, i%10)
				unregister, err := o.RegisterLimit(bulwark.ComponentBulkhead, name, b)
				if err != nil {
					t.Error(err)
					return
				}
				o.Observe(bulwark.Event{Kind: bulwark.EventLimitChanged, Component: bulwark.ComponentLimiter, Name: name, Limit: i, Reason: "increase"})
				if i%2 == 0 {
					unregister()
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			collect(t, r)
		}
	})
	wg.Wait()
	got := collect(t, r)
	// Of each goroutine's ten names, the five last registered in an odd
	// round are left.
	require.Len(t, points(got, "bulwark.limit.limit", "bulwark.component=bulkhead"), 20, "registered bulkheads")
	for attrs, p := range points(got, "bulwark.limit.limit", "bulwark.component=limiter") {
		if p.value < 190 {
			t.Errorf("bulwark.limit.limit{%s} = %d, want the last limit set (>= 190)", attrs, p.value)
		}
	}
}
