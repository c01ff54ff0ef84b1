package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/discovery"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The balancer is the usual Updater.
var _ discovery.Updater = (*balancer.Balancer)(nil)

// answer is what the fake resolver returns.
type answer struct {
	eps []bulwark.Endpoint
	ttl time.Duration
	err error
}

// fakeResolver returns the answer set last; if block is set, Resolve
// signals entered and waits for its ctx to end.
type fakeResolver struct {
	mu      sync.Mutex
	ans     answer
	calls   int
	block   bool
	entered chan struct{}
}

func (r *fakeResolver) set(a answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ans = a
}

func (r *fakeResolver) Resolve(ctx context.Context) ([]bulwark.Endpoint, time.Duration, error) {
	r.mu.Lock()
	r.calls++
	a, block := r.ans, r.block
	r.mu.Unlock()
	if block {
		r.entered <- struct{}{}
		<-ctx.Done()
		return nil, 0, ctx.Err()
	}
	return a.eps, a.ttl, a.err
}

func (r *fakeResolver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// updater records the sets it is given; it fails with err if set.
type updater struct {
	mu   sync.Mutex
	sets []string
	err  error
}

func (u *updater) Update(eps []bulwark.Endpoint) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err != nil {
		return u.err
	}
	u.sets = append(u.sets, addrs(eps))
	return nil
}

func (u *updater) setErr(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.err = err
}

// updates returns the sets given so far, and forgets them.
func (u *updater) updates() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.sets
	u.sets = nil
	return s
}

// events is an Observer that queues events.
type events chan bulwark.Event

func (e events) Observe(ev bulwark.Event) { e <- ev }

// drain returns the events queued, as short strings.
func (e events) drain() []string {
	var out []string
	for {
		select {
		case ev := <-e:
			out = append(out, describe(ev))
		default:
			return out
		}
	}
}

func describe(ev bulwark.Event) string {
	switch ev.Kind {
	case bulwark.EventCall:
		s := fmt.Sprintf("call %s next=%v", ev.Outcome, ev.Delay)
		if ev.Reason != "" {
			s += " reason=" + ev.Reason
		}
		return s
	case bulwark.EventEndpointAdded, bulwark.EventEndpointRemoved:
		s := ev.Kind.String() + " " + ev.Endpoint.String()
		if ev.Reason != "" {
			s += " reason=" + ev.Reason
		}
		return s
	case bulwark.EventStateChange:
		return fmt.Sprintf("state %s->%s %s", ev.From, ev.To, ev.Reason)
	}
	return ev.Kind.String()
}

type harness struct {
	clk *bulwarktest.Clock
	res *fakeResolver
	upd *updater
	obs events
	w   *discovery.Watcher
}

func newHarness(t *testing.T, cfg discovery.Config) *harness {
	t.Helper()
	h := &harness{clk: bulwarktest.NewClock(time.Time{}), res: &fakeResolver{}, upd: &updater{}, obs: make(events, 1024)}
	if cfg.Resolver == nil {
		cfg.Resolver = h.res
	}
	cfg.Updater, cfg.Observer, cfg.Clock, cfg.Name = h.upd, h.obs, h.clk, "api"
	w, err := discovery.New(cfg)
	require.NoError(t, err)
	h.w = w
	t.Cleanup(func() { w.Close() })
	return h
}

// step waits for the running Watcher's next resolution to end and for the
// loop to wait on the clock again, and returns the resolution's events.
func (h *harness) step(t *testing.T) []string {
	t.Helper()
	var first bulwark.Event
	select {
	case first = <-h.obs:
	case <-time.After(10 * time.Second):
		t.Fatal("no resolution within 10s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.clk.BlockUntil(ctx, 1), "the loop does not wait on the clock")
	return append([]string{describe(first)}, h.obs.drain()...)
}

func eps(addrs ...string) []bulwark.Endpoint {
	var out []bulwark.Endpoint
	for _, a := range addrs {
		out = append(out, bulwark.Endpoint{Addr: a})
	}
	return out
}

func TestWatcherUpdatesOnlyOnChange(t *testing.T) {
	h := newHarness(t, discovery.Config{})
	ctx := context.Background()

	h.res.set(answer{eps: eps("b:80", "a:80"), ttl: 10 * time.Second})
	require.NoError(t, h.w.Refresh(ctx))
	require.Equal(t, []string{"a:80 b:80"}, h.upd.updates(), "the first answer, sorted")
	require.Equal(t, []string{
		"call success next=10s", "endpoint_added a:80", "endpoint_added b:80", "state unknown->ok ",
	}, h.obs.drain())

	h.res.set(answer{eps: eps("a:80", "b:80"), ttl: 10 * time.Second})
	require.NoError(t, h.w.Refresh(ctx))
	if got := h.upd.updates(); len(got) != 0 {
		t.Errorf("the same set in another order: Update(%v), want no call", got)
	}
	require.Equal(t, []string{"call success next=10s"}, h.obs.drain())

	h.res.set(answer{eps: []bulwark.Endpoint{{Addr: "b:80", Weight: 3}, {Addr: "c:80"}}})
	require.NoError(t, h.w.Refresh(ctx))
	require.Equal(t, []string{"b:80*3 c:80"}, h.upd.updates())
	require.Equal(t, []string{
		"call success next=30s",
		"endpoint_removed a:80", "endpoint_removed b:80 reason=changed",
		"endpoint_added b:80 (weight=3) reason=changed", "endpoint_added c:80",
	}, h.obs.drain())
}

func TestWatcherKeepsTheLastGoodAnswer(t *testing.T) {
	good := eps("a:80", "b:80")
	for _, tc := range []struct {
		name       string
		ans        answer
		updaterErr error
		reason     string
		want       error
	}{
		{"resolver error", answer{err: errors.New("dns down")}, nil, "resolve", nil},
		{"empty answer", answer{}, nil, "empty", discovery.ErrEmpty},
		{"duplicate address", answer{eps: eps("a:80", "a:80")}, nil, "invalid", bulwark.ErrInvalidEndpoint},
		{"invalid endpoint", answer{eps: []bulwark.Endpoint{{Addr: "a:80", Weight: -1}}}, nil, "invalid", bulwark.ErrInvalidEndpoint},
		{"updater refuses", answer{eps: eps("c:80")}, errors.New("too many"), "update", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, discovery.Config{})
			ctx := context.Background()
			h.res.set(answer{eps: good})
			require.NoError(t, h.w.Refresh(ctx))
			h.upd.updates()
			h.obs.drain()

			h.res.set(tc.ans)
			h.upd.setErr(tc.updaterErr)
			err := h.w.Refresh(ctx)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Refresh() = %v, want an error wrapping %v", err, tc.want)
			}
			if got := h.upd.updates(); len(got) != 0 {
				t.Errorf("Update(%v) after a failed resolution, want the last good set kept", got)
			}
			want := []string{"call failure next=1s reason=" + tc.reason, "state ok->failing " + tc.reason}
			if got := h.obs.drain(); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("events = %q, want %q", got, want)
			}

			// Recovery: the good answer again is no change for the Updater,
			// unless it refused the last one.
			h.upd.setErr(nil)
			h.res.set(answer{eps: good})
			require.NoError(t, h.w.Refresh(ctx))
			if got := h.upd.updates(); len(got) != 0 {
				t.Errorf("Update(%v) for the set the Updater already has", got)
			}
			require.Contains(t, h.obs.drain(), "state failing->ok ")
		})
	}
}

func TestWatcherRetriesARefusedUpdate(t *testing.T) {
	h := newHarness(t, discovery.Config{})
	ctx := context.Background()
	h.res.set(answer{eps: eps("a:80")})
	h.upd.setErr(errors.New("busy"))
	require.Error(t, h.w.Refresh(ctx))
	h.upd.setErr(nil)
	require.NoError(t, h.w.Refresh(ctx))
	require.Equal(t, []string{"a:80"}, h.upd.updates(), "the same answer again, after the Updater refused it")
}

func TestWatcherAllowEmpty(t *testing.T) {
	h := newHarness(t, discovery.Config{AllowEmpty: true})
	ctx := context.Background()
	h.res.set(answer{eps: eps("a:80")})
	require.NoError(t, h.w.Refresh(ctx))
	h.res.set(answer{})
	require.NoError(t, h.w.Refresh(ctx))
	require.Equal(t, []string{"a:80", ""}, h.upd.updates(), "with AllowEmpty, an empty answer empties the Updater")
}

func TestWatcherSchedulesByTTL(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{
		{"ttl", 7 * time.Second, 7 * time.Second},
		{"no ttl: Interval", 0, 20 * time.Second},
		{"negative ttl: Interval", -time.Second, 20 * time.Second},
		{"ttl under a second: a second", time.Millisecond, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, discovery.Config{Interval: 20 * time.Second})
			h.res.set(answer{eps: eps("a:80"), ttl: tc.ttl})
			require.NoError(t, h.w.Start(context.Background()))
			require.Equal(t, fmt.Sprintf("call success next=%v", tc.want), h.step(t)[0])
			require.Equal(t, 1, h.res.count())

			h.clk.Advance(tc.want - time.Nanosecond)
			if n := h.res.count(); n != 1 || h.clk.Timers() != 1 {
				t.Fatalf("%v after the first resolution: %d resolutions, %d timers; want 1 and the loop still waiting", tc.want-time.Nanosecond, n, h.clk.Timers())
			}
			h.clk.Advance(time.Nanosecond)
			h.step(t)
			require.Equal(t, 2, h.res.count(), "resolutions after %v", tc.want)
		})
	}
}

func TestWatcherBacksOffAfterFailures(t *testing.T) {
	h := newHarness(t, discovery.Config{Interval: 20 * time.Second, RetryInterval: 3 * time.Second})
	h.res.set(answer{err: errors.New("dns down")})
	require.NoError(t, h.w.Start(context.Background()))
	var waits []string
	var wait time.Duration
	for i := range 5 {
		if i > 0 {
			h.clk.Advance(wait)
		}
		next := strings.Fields(h.step(t)[0])[2]
		waits = append(waits, strings.TrimPrefix(next, "next="))
		var err error
		wait, err = time.ParseDuration(strings.TrimPrefix(next, "next="))
		require.NoError(t, err)
	}
	if got, want := strings.Join(waits, " "), "3s 6s 12s 20s 20s"; got != want {
		t.Errorf("waits after failures in a row = %s, want %s", got, want)
	}
	h.res.set(answer{eps: eps("a:80"), ttl: 9 * time.Second})
	h.clk.Advance(wait)
	h.step(t)
	h.res.set(answer{err: errors.New("dns down")})
	h.clk.Advance(9 * time.Second)
	if got := h.step(t)[0]; got != "call failure next=3s reason=resolve" {
		t.Errorf("after a success, the next failure: %s, want the backoff reset to 3s", got)
	}
}

func TestWatcherRefreshMovesTheSchedule(t *testing.T) {
	h := newHarness(t, discovery.Config{Interval: time.Minute})
	h.res.set(answer{eps: eps("a:80")})
	require.NoError(t, h.w.Refresh(context.Background()))
	h.obs.drain()
	require.NoError(t, h.w.Start(context.Background()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.clk.BlockUntil(ctx, 1))
	if n := h.res.count(); n != 1 {
		t.Errorf("Start right after Refresh resolved again: %d resolutions, want 1", n)
	}
	h.clk.Advance(time.Minute)
	h.step(t)
	require.Equal(t, 2, h.res.count())
}

func TestWatcherTimeout(t *testing.T) {
	h := newHarness(t, discovery.Config{Timeout: 5 * time.Second})
	h.res.block, h.res.entered = true, make(chan struct{}, 1)
	require.NoError(t, h.w.Start(context.Background()))
	<-h.res.entered
	h.clk.Advance(5 * time.Second)
	var ev bulwark.Event
	select {
	case ev = <-h.obs:
	case <-time.After(10 * time.Second):
		t.Fatal("a resolution blocked past Timeout was not canceled")
	}
	if ev.Kind != bulwark.EventCall || ev.Outcome != bulwark.Failure || !errors.Is(ev.Err, context.DeadlineExceeded) {
		t.Errorf("event = %s (err %v), want a failed call with context.DeadlineExceeded", describe(ev), ev.Err)
	}
}

func TestWatcherCloseCancelsAResolution(t *testing.T) {
	h := newHarness(t, discovery.Config{})
	h.res.block, h.res.entered = true, make(chan struct{}, 1)
	require.NoError(t, h.w.Start(context.Background()))
	<-h.res.entered
	require.NoError(t, h.w.Close())
	ev := <-h.obs
	if ev.Kind != bulwark.EventCall || ev.Outcome != bulwark.Neutral {
		t.Errorf("event of the resolution cut by Close = %s, want a neutral call", describe(ev))
	}
	if got := h.obs.drain(); len(got) != 0 {
		t.Errorf("events after Close: %q, want none (no state change)", got)
	}
}

func TestWatcherLifecycle(t *testing.T) {
	h := newHarness(t, discovery.Config{})
	h.res.set(answer{eps: eps("a:80")})
	ctx := context.Background()
	require.NoError(t, h.w.Start(ctx))
	require.ErrorIs(t, h.w.Start(ctx), discovery.ErrStarted)
	require.NoError(t, h.w.Close())
	require.NoError(t, h.w.Close())
	require.ErrorIs(t, h.w.Start(ctx), discovery.ErrClosed)
	require.ErrorIs(t, h.w.Refresh(ctx), discovery.ErrClosed)

	// The context of Start ends the loop too; Close then returns at once.
	h2 := newHarness(t, discovery.Config{})
	h2.res.set(answer{eps: eps("a:80")})
	ctx2, cancel := context.WithCancel(ctx)
	require.NoError(t, h2.w.Start(ctx2))
	h2.step(t)
	cancel()
	require.NoError(t, h2.w.Close())
}

func TestNewRejectsBadConfig(t *testing.T) {
	r, u := discovery.Static(nil), &updater{}
	for _, tc := range []struct {
		name string
		cfg  discovery.Config
		want string
	}{
		{"no resolver", discovery.Config{Updater: u}, "Resolver"},
		{"no updater", discovery.Config{Resolver: r}, "Updater"},
		{"negative interval", discovery.Config{Resolver: r, Updater: u, Interval: -1}, "Interval"},
		{"negative retry interval", discovery.Config{Resolver: r, Updater: u, RetryInterval: -1}, "RetryInterval"},
		{"negative timeout", discovery.Config{Resolver: r, Updater: u, Timeout: -1}, "Timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := discovery.New(tc.cfg)
			if !errors.Is(err, discovery.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New() error = %v, want ErrInvalidConfig naming %s", err, tc.want)
			}
		})
	}
}

func TestWatcherConcurrentSafe(t *testing.T) {
	h := newHarness(t, discovery.Config{})
	drained := make(chan struct{})
	go func() { // the observer's queue must not fill up
		defer close(drained)
		for range h.obs {
		}
	}()
	ctx := context.Background()
	require.NoError(t, h.w.Start(ctx))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				h.res.set(answer{eps: eps(fmt.Sprintf("%d:%d", g, i%3), "x:1"), ttl: time.Second})
				h.w.Refresh(ctx)
				h.clk.Advance(time.Second)
			}
		}()
	}
	wg.Wait()
	h.res.set(answer{eps: eps("final:1")})
	require.NoError(t, h.w.Refresh(ctx))
	require.NoError(t, h.w.Close())
	close(h.obs)
	<-drained
	sets := h.upd.updates()
	require.Equal(t, "final:1", sets[len(sets)-1])
}

// The whole path against a real DNS server: answers that change, fail and
// come back move the Updater's set within one refresh, and failures keep
// the last good set.
func TestWatcherFollowsDNS(t *testing.T) {
	ns := startDNSServer(t)
	ns.set("api.internal", a("10.0.0.1", 30), a("10.0.0.2", 30))
	d, err := discovery.NewDNS(discovery.DNSConfig{Name: "api.internal", Port: 80, Network: "ip4", Servers: []string{ns.addr}})
	require.NoError(t, err)
	h := newHarness(t, discovery.Config{Resolver: d})
	require.NoError(t, h.w.Start(context.Background()))

	require.Equal(t, "call success next=30s", h.step(t)[0])
	require.Equal(t, []string{"10.0.0.1:80 10.0.0.2:80"}, h.upd.updates())

	ns.set("api.internal", a("10.0.0.2", 10), a("10.0.0.3", 10))
	h.clk.Advance(30 * time.Second)
	require.Equal(t, []string{"call success next=10s", "endpoint_removed 10.0.0.1:80", "endpoint_added 10.0.0.3:80"}, h.step(t))
	require.Equal(t, []string{"10.0.0.2:80 10.0.0.3:80"}, h.upd.updates())

	ns.fail("api.internal", rcServFail)
	h.clk.Advance(10 * time.Second)
	require.Equal(t, []string{"call failure next=1s reason=resolve", "state ok->failing resolve"}, h.step(t))

	ns.fail("api.internal", rcNXDomain)
	h.clk.Advance(time.Second)
	require.Equal(t, []string{"call failure next=2s reason=resolve"}, h.step(t))

	ns.fail("api.internal", 0)
	ns.set("api.internal") // the name exists, without records
	h.clk.Advance(2 * time.Second)
	require.Equal(t, []string{"call failure next=4s reason=empty"}, h.step(t))
	require.Empty(t, h.upd.updates(), "failures and an empty answer keep the last good set")

	ns.set("api.internal", a("10.0.0.4", 60))
	h.clk.Advance(4 * time.Second)
	require.Equal(t, []string{"call success next=1m0s", "endpoint_removed 10.0.0.2:80", "endpoint_removed 10.0.0.3:80",
		"endpoint_added 10.0.0.4:80", "state failing->ok "}, h.step(t))
	require.Equal(t, []string{"10.0.0.4:80"}, h.upd.updates())
}

// A Watcher feeding a real balancer: the balancer's own events show the
// fleet it picks from.
func TestWatcherFeedsABalancer(t *testing.T) {
	ns := startDNSServer(t)
	ns.set("_http._tcp.api", srv(1, 2, 8080, "a.api", 30), srv(1, 1, 8080, "b.api", 30))
	ns.set("a.api", a("10.0.0.1", 30))
	ns.set("b.api", a("10.0.0.2", 30))
	d, err := discovery.NewDNS(discovery.DNSConfig{Name: "_http._tcp.api", SRV: true, Network: "ip4", Servers: []string{ns.addr}})
	require.NoError(t, err)
	lbEvents := make(events, 64)
	lb, err := balancer.New(balancer.Config{Observer: lbEvents})
	require.NoError(t, err)
	w, err := discovery.New(discovery.Config{Resolver: d, Updater: lb})
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.Refresh(context.Background()))
	require.Equal(t, []string{"endpoint_added 10.0.0.1:8080 (weight=2)", "endpoint_added 10.0.0.2:8080 (weight=1)"}, lbEvents.drain())

	ns.set("_http._tcp.api", srv(1, 1, 8080, "b.api", 30))
	require.NoError(t, w.Refresh(context.Background()))
	require.Equal(t, []string{"endpoint_removed 10.0.0.1:8080 (weight=2)"}, lbEvents.drain())
}
