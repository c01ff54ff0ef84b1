package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

// waitIdle waits until the scheduler waits on its timer, no probe is in
// flight and every notice was delivered: after that, only advancing the
// clock makes anything happen.
func (c *Checker) waitIdle(t *testing.T) {
	t.Helper()
	var timedOut atomic.Bool
	stop := time.AfterFunc(10*time.Second, func() {
		timedOut.Store(true)
		c.mu.Lock()
		c.idle.Broadcast()
		c.mu.Unlock()
	})
	defer stop.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !(c.parked && !c.woken && c.clk.Now().Before(c.armedAt) && c.inflight == 0 &&
		c.notes.Idle()) {
		if timedOut.Load() {
			t.Fatalf("checker not idle after 10s: parked=%v woken=%v inflight=%d", c.parked, c.woken, c.inflight)
		}
		c.idle.Wait()
	}
}

// script is a Probe whose results are set per endpoint; it records the time
// of each probe, and holds the probes of an endpoint while a gate is set.
type script struct {
	clk    bulwark.Clock
	mu     sync.Mutex
	result map[string]error
	times  map[string][]time.Time
	gates  map[string]chan struct{} // closed to let the probes through
}

func newScript(clk bulwark.Clock) *script {
	return &script{clk: clk, result: map[string]error{}, times: map[string][]time.Time{}, gates: map[string]chan struct{}{}}
}

func (s *script) probe(_ context.Context, ep bulwark.Endpoint) error {
	s.mu.Lock()
	gate := s.gates[ep.Addr]
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.times[ep.Addr] = append(s.times[ep.Addr], s.clk.Now())
	return s.result[ep.Addr]
}

// hold holds the probes of addr until the returned function is called, at
// the latest when t ends.
func (s *script) hold(t *testing.T, addr string) (release func()) {
	gate := make(chan struct{})
	s.mu.Lock()
	s.gates[addr] = gate
	s.mu.Unlock()
	release = sync.OnceFunc(func() {
		s.mu.Lock()
		delete(s.gates, addr)
		s.mu.Unlock()
		close(gate)
	})
	t.Cleanup(release) // before the checker's Close, which waits for the probe
	return release
}

func (s *script) set(addr string, err error) {
	s.mu.Lock()
	s.result[addr] = err
	s.mu.Unlock()
}

func (s *script) probes(addr string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.times[addr])
}

var errDown = errors.New("down")

type fixture struct {
	c   *Checker
	clk *bulwarktest.Clock
	s   *script
	rec *recorder
}

func newChecker(t *testing.T, cfg Config, eps ...bulwark.Endpoint) *fixture {
	t.Helper()
	clk := bulwarktest.NewClock(time.Time{})
	s := newScript(clk)
	rec := newRecorder()
	if cfg.Probe == nil {
		cfg.Probe = s.probe
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	cfg.Clock, cfg.Listener, cfg.Observer = clk, rec, rec
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	add(t, c, eps...)
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("Start = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.waitIdle(t)
	return &fixture{c: c, clk: clk, s: s, rec: rec}
}

// step advances the clock by d and waits for the checker to settle.
func (f *fixture) step(t *testing.T, d time.Duration) {
	t.Helper()
	f.clk.Advance(d)
	f.c.waitIdle(t)
}

// add adds eps to c's set, as a standalone caller of SetEndpoints does.
func add(t testing.TB, c *Checker, eps ...bulwark.Endpoint) {
	t.Helper()
	if err := c.SetEndpoints(append(members(c), eps...)); err != nil {
		t.Fatalf("SetEndpoints(+%v) = %v", eps, err)
	}
}

// remove takes eps out of c's set.
func remove(t testing.TB, c *Checker, eps ...bulwark.Endpoint) {
	t.Helper()
	var keep []bulwark.Endpoint
	for _, m := range members(c) {
		if !slices.ContainsFunc(eps, func(e bulwark.Endpoint) bool { return e.Addr == m.Addr }) {
			keep = append(keep, m)
		}
	}
	if err := c.SetEndpoints(keep); err != nil {
		t.Fatalf("SetEndpoints(-%v) = %v", eps, err)
	}
}

// members returns c's set, sorted by Addr.
func members(c *Checker) []bulwark.Endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	var eps []bulwark.Endpoint
	for _, t := range c.targets {
		eps = append(eps, t.ep)
	}
	slices.SortFunc(eps, func(a, b bulwark.Endpoint) int { return strings.Compare(a.Addr, b.Addr) })
	return eps
}

func (f *fixture) state(t *testing.T, e bulwark.Endpoint) State {
	t.Helper()
	s, ok := f.c.State(e)
	if !ok {
		t.Fatalf("State(%q): not checked", e.Addr)
	}
	return s
}

func TestCheckerRiseFall(t *testing.T) {
	const ok, ko = true, false
	tests := []struct {
		name    string
		rise    int
		fall    int
		results []bool  // probe results, the first at Start, then one per Interval
		want    []State // the state after each
	}{
		{"a new endpoint is healthy after its first success", 2, 3,
			[]bool{ok, ok, ok}, []State{Healthy, Healthy, Healthy}},
		{"whatever rise", 5, 3,
			[]bool{ok}, []State{Healthy}},
		{"first failure, then rise successes", 2, 3,
			[]bool{ko, ok, ok}, []State{Unhealthy, Unhealthy, Healthy}},
		{"first failure is unhealthy", 2, 3,
			[]bool{ko}, []State{Unhealthy}},
		{"fall after three failures", 2, 3,
			[]bool{ok, ko, ko, ko}, []State{Healthy, Healthy, Healthy, Unhealthy}},
		{"a success resets the fall count", 1, 3,
			[]bool{ok, ko, ko, ok, ko, ko, ko}, []State{Healthy, Healthy, Healthy, Healthy, Healthy, Healthy, Unhealthy}},
		{"rise after unhealthy", 3, 1,
			[]bool{ko, ok, ok, ko, ok, ok, ok}, []State{Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy}},
		{"rise and fall of one", 1, 1,
			[]bool{ok, ko, ok}, []State{Healthy, Unhealthy, Healthy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newChecker(t, Config{Rise: tt.rise, Fall: tt.fall, Interval: time.Second,
				Probe: func(context.Context, bulwark.Endpoint) error { return nil }})
			var i atomic.Int32
			f.c.cfg.Probe = func(context.Context, bulwark.Endpoint) error {
				if tt.results[i.Add(1)-1] {
					return nil
				}
				return errDown
			}
			add(t, f.c, ep(1))
			f.c.waitIdle(t)
			for n := range tt.results {
				if n > 0 {
					f.step(t, time.Second)
				}
				if got := f.state(t, ep(1)); got != tt.want[n] {
					t.Fatalf("after results %v: State = %v, want %v", tt.results[:n+1], got, tt.want[n])
				}
			}
		})
	}
}

func TestCheckerListenerAndEvents(t *testing.T) {
	f := newChecker(t, Config{Name: "api", Rise: 1, Fall: 2}, ep(1))
	f.s.set(ep(1).Addr, errDown)
	f.step(t, time.Second) // still healthy
	f.step(t, time.Second) // unhealthy
	f.s.set(ep(1).Addr, nil)
	f.step(t, time.Second) // healthy again
	if got, want := f.rec.lines(), []string{"health 10.0.0.1:80 true", "health 10.0.0.1:80 false", "health 10.0.0.1:80 true"}; !slices.Equal(got, want) {
		t.Errorf("Listener got %q, want %q", got, want)
	}
	var changes []string
	for _, e := range f.rec.eventsOf(bulwark.EventStateChange) {
		if e.Component != bulwark.ComponentHealthCheck || e.Name != "api" || e.Endpoint != ep(1) {
			t.Errorf("event %+v: want component healthcheck, name api, endpoint %v", e, ep(1))
		}
		changes = append(changes, e.From+">"+e.To)
	}
	if want := []string{"unknown>healthy", "healthy>unhealthy", "unhealthy>healthy"}; !slices.Equal(changes, want) {
		t.Errorf("state changes = %q, want %q", changes, want)
	}
	probes := f.rec.eventsOf(bulwark.EventProbe)
	if len(probes) != 4 {
		t.Fatalf("got %d probe events, want 4", len(probes))
	}
	if p := probes[1]; p.Outcome != bulwark.Failure || !errors.Is(p.Err, errDown) {
		t.Errorf("second probe event = %+v, want a failure with errDown", p)
	}
	if got := len(f.rec.eventsOf(bulwark.EventEndpointAdded)); got != 1 {
		t.Errorf("got %d EventEndpointAdded, want 1", got)
	}
}

func TestCheckerJitterBounds(t *testing.T) {
	const (
		n        = 40
		interval = 2 * time.Second
		initial  = time.Second
		jitter   = 500 * time.Millisecond
		step     = 5 * time.Millisecond
	)
	eps := make([]bulwark.Endpoint, n)
	for i := range eps {
		eps[i] = ep(i)
	}
	f := newChecker(t, Config{Interval: interval, InitialJitter: initial, IntervalJitter: jitter, Rise: 1}, eps...)
	start := f.clk.Now()
	for f.clk.Since(start) < 8*time.Second {
		f.step(t, step)
	}
	var firsts []time.Duration
	for _, e := range eps {
		times := f.s.probes(e.Addr)
		if len(times) < 3 {
			t.Fatalf("%s probed %d times in 8s, want at least 3", e.Addr, len(times))
		}
		first := times[0].Sub(start)
		if first < 0 || first > initial+step {
			t.Errorf("first probe of %s after %v, want within [0, %v]", e.Addr, first, initial)
		}
		firsts = append(firsts, first)
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < interval || gap > interval+jitter+step {
				t.Errorf("probe %d of %s %v after the previous, want within [%v, %v]", i, e.Addr, gap, interval, interval+jitter)
			}
		}
	}
	// The jitter spreads the endpoints (50 draws all within a quarter of the
	// range has probability below 1e-24).
	if spread := slices.Max(firsts) - slices.Min(firsts); spread < initial/4 {
		t.Errorf("first probes spread over %v, want the initial jitter to spread them over most of %v", spread, initial)
	}
}

func TestCheckerIntervals(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		down    bool
		want    []time.Duration // gaps between the first probes
		explain string
	}{
		{"healthy interval", Config{Interval: 10 * time.Second, UnhealthyInterval: time.Second, Rise: 1},
			false, []time.Duration{10 * time.Second, 10 * time.Second}, ""},
		{"unhealthy interval", Config{Interval: 10 * time.Second, UnhealthyInterval: time.Second, Fall: 1},
			true, []time.Duration{time.Second, time.Second, time.Second}, ""},
		{"unhealthy defaults to interval", Config{Interval: 3 * time.Second, Fall: 1},
			true, []time.Duration{3 * time.Second, 3 * time.Second}, ""},
		{"edge interval after a change", Config{Interval: 10 * time.Second, EdgeInterval: time.Second, Rise: 3},
			false, []time.Duration{time.Second, 10 * time.Second}, "unknown>healthy>edge, then interval"},
		{"edge interval while rising", Config{Interval: 10 * time.Second, EdgeInterval: time.Second, Rise: 3},
			true, []time.Duration{time.Second, time.Second, time.Second, time.Second, 10 * time.Second},
			"unknown>unhealthy>edge, rising, rising, unhealthy>healthy>edge, then interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newChecker(t, tt.cfg)
			if tt.down {
				f.s.set(ep(1).Addr, errDown)
			}
			if tt.cfg.EdgeInterval > 0 && tt.down { // down for the first probe only
				var n atomic.Int32
				f.c.cfg.Probe = func(ctx context.Context, e bulwark.Endpoint) error {
					err := f.s.probe(ctx, e)
					if n.Add(1) > 1 {
						return nil
					}
					return err
				}
			}
			add(t, f.c, ep(1))
			f.c.waitIdle(t)
			for f.clk.Since(f.s.probes(ep(1).Addr)[0]) < 40*time.Second {
				f.step(t, 250*time.Millisecond)
			}
			times := f.s.probes(ep(1).Addr)
			var gaps []time.Duration
			for i := 1; i <= len(tt.want); i++ {
				gaps = append(gaps, times[i].Sub(times[i-1]))
			}
			if !slices.Equal(gaps, tt.want) {
				t.Errorf("gaps between probes = %v, want %v", gaps, tt.want)
			}
		})
	}
}

func TestCheckerProbeTimeout(t *testing.T) {
	started := make(chan struct{}, 1)
	causes := make(chan error, 1)
	f := newChecker(t, Config{Interval: 10 * time.Second, Timeout: 2 * time.Second, Fall: 1,
		Probe: func(ctx context.Context, _ bulwark.Endpoint) error {
			started <- struct{}{}
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return ctx.Err()
		}})
	add(t, f.c, ep(1))
	<-started
	f.clk.Advance(2*time.Second - time.Millisecond)
	select {
	case err := <-causes:
		t.Fatalf("probe ctx ended after 1.999s with %v, want it to last the 2s timeout", err)
	default:
	}
	f.step(t, time.Millisecond)
	if err := <-causes; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("probe ctx cause = %v, want context.DeadlineExceeded", err)
	}
	if got := f.state(t, ep(1)); got != Unhealthy {
		t.Errorf("State after a timed-out probe = %v, want unhealthy", got)
	}
	probes := f.rec.eventsOf(bulwark.EventProbe)
	if len(probes) != 1 || !errors.Is(probes[0].Err, context.DeadlineExceeded) || probes[0].Latency != 2*time.Second {
		t.Errorf("probe events = %+v, want one failure after 2s wrapping DeadlineExceeded", probes)
	}
}

func TestCheckerLateSuccessIsFailure(t *testing.T) {
	// A probe that ignores ctx and returns nil after its timeout failed.
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	f := newChecker(t, Config{Interval: 10 * time.Second, Timeout: time.Second, Fall: 1,
		Probe: func(ctx context.Context, _ bulwark.Endpoint) error {
			started <- struct{}{}
			<-release
			return nil
		}})
	add(t, f.c, ep(1))
	<-started
	f.clk.Advance(time.Second)
	close(release)
	f.c.waitIdle(t)
	if got := f.state(t, ep(1)); got != Unhealthy {
		t.Errorf("State after a success past the timeout = %v, want unhealthy", got)
	}
}

func TestCheckerSlowProbeDoesNotDelayOthers(t *testing.T) {
	slow := ep(0)
	f := newChecker(t, Config{Interval: time.Second, Timeout: time.Hour, Workers: 2, Rise: 1})
	block := make(chan struct{})
	defer close(block)
	probed := make(chan string, 100)
	f.c.cfg.Probe = func(ctx context.Context, e bulwark.Endpoint) error {
		if e == slow {
			select {
			case <-block:
			case <-ctx.Done():
			}
			return nil
		}
		probed <- e.Addr
		return nil
	}
	for _, e := range []bulwark.Endpoint{slow, ep(1), ep(2), ep(3)} {
		add(t, f.c, e)
	}
	// The slow probe keeps one worker all along; the other endpoints still
	// get their probe at every interval, on the other worker.
	for round := range 6 {
		if round > 0 {
			f.clk.Advance(time.Second)
		}
		got := map[string]bool{}
		for range 3 {
			select {
			case a := <-probed:
				got[a] = true
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: probed %v, want the three fast endpoints", round, got)
			}
		}
		if len(got) != 3 {
			t.Fatalf("round %d: probed %v, want each fast endpoint once", round, got)
		}
	}
}

// TestCheckerProbePanic: a panic in the probe is not turned into a failed
// probe; it goes on up, with its value. (On a worker, it crashes the
// program, so the test calls the worker's run directly.)
func TestCheckerProbePanic(t *testing.T) {
	c, err := New(Config{Interval: time.Second, Probe: func(context.Context, bulwark.Endpoint) error { panic("boom") }})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r != "boom" {
			t.Errorf("recovered %v, want the probe's panic \"boom\"", r)
		}
	}()
	err = c.run(context.Background(), ep(1))
	t.Errorf("run returned %v after a panicking probe, want the panic to go on", err)
}

func TestCheckerSetEndpointsWhileRunning(t *testing.T) {
	f := newChecker(t, Config{Rise: 1, InitialJitter: 0}, ep(1))
	add(t, f.c, ep(2))
	for _, tt := range []struct {
		name string
		eps  []bulwark.Endpoint
	}{
		{"duplicate", []bulwark.Endpoint{ep(1), ep(2), {Addr: ep(2).Addr, Zone: "b"}}},
		{"empty address", []bulwark.Endpoint{ep(1), {}}},
	} {
		if err := f.c.SetEndpoints(tt.eps); !errors.Is(err, bulwark.ErrInvalidEndpoint) {
			t.Errorf("SetEndpoints(%s) = %v, want ErrInvalidEndpoint", tt.name, err)
		}
	}
	if got := members(f.c); len(got) != 2 {
		t.Errorf("members after refused sets = %v, want the two set before", got)
	}
	f.c.waitIdle(t)
	if got := f.state(t, ep(2)); got != Healthy {
		t.Errorf("State(%q) after it joined while running = %v, want healthy", ep(2).Addr, got)
	}
	// A member that stays takes its new zone and weight, and keeps its state.
	moved := bulwark.Endpoint{Addr: ep(2).Addr, Zone: "b", Weight: 3}
	if err := f.c.SetEndpoints([]bulwark.Endpoint{ep(1), moved}); err != nil {
		t.Fatal(err)
	}
	if got := members(f.c); got[1] != moved || f.state(t, moved) != Healthy {
		t.Errorf("member after a new zone and weight = %v (%v), want %v, healthy", got[1], f.state(t, moved), moved)
	}
	remove(t, f.c, ep(1))
	if _, ok := f.c.State(ep(1)); ok {
		t.Errorf("State(%q) after it left: still checked", ep(1).Addr)
	}
	before := len(f.s.probes(ep(1).Addr))
	for range 3 {
		f.step(t, time.Second)
	}
	if got := len(f.s.probes(ep(1).Addr)); got != before {
		t.Errorf("%q probed %d times after it left, want 0", ep(1).Addr, got-before)
	}
	if got := len(f.s.probes(ep(2).Addr)); got != 4 {
		t.Errorf("%q probed %d times, want 4", ep(2).Addr, got)
	}
	lines := f.rec.lines()
	if !slices.Contains(lines, "health 10.0.0.1:80 false") {
		t.Errorf("Listener got %q, want HealthChanged(%q, false) when it left", lines, ep(1).Addr)
	}
	// Coming back starts afresh. Its first probe starts at once: it is held
	// until the state before it is read.
	f.s.set(ep(1).Addr, errDown)
	release := f.s.hold(t, ep(1).Addr)
	add(t, f.c, ep(1))
	if got := f.state(t, ep(1)); got != Unknown {
		t.Errorf("State(%q) back in the set = %v, want unknown", ep(1).Addr, got)
	}
	release()
	f.c.waitIdle(t)
	if got := f.state(t, ep(1)); got != Unhealthy {
		t.Errorf("State(%q) after its first probe back failed = %v, want unhealthy", ep(1).Addr, got)
	}
}

func TestCheckerRemoveDuringProbe(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	f := newChecker(t, Config{Rise: 1, Probe: func(context.Context, bulwark.Endpoint) error {
		started <- struct{}{}
		<-release
		return nil
	}})
	add(t, f.c, ep(1))
	<-started
	remove(t, f.c, ep(1))
	close(release)
	f.c.waitIdle(t)
	if got := f.rec.lines(); len(got) != 0 {
		t.Errorf("Listener got %q for an endpoint removed during its probe, want nothing", got)
	}
}

func TestCheckerDrain(t *testing.T) {
	f := newChecker(t, Config{Rise: 1}, ep(1))
	if err := f.c.Drain(ep(1)); err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if got := f.state(t, ep(1)); got != Draining {
		t.Errorf("State after Drain = %v, want draining", got)
	}
	before := len(f.s.probes(ep(1).Addr))
	f.step(t, 5*time.Second)
	if got := len(f.s.probes(ep(1).Addr)); got != before {
		t.Errorf("a draining endpoint was probed %d times, want 0", got-before)
	}
	if got, want := f.rec.lines(), []string{"health 10.0.0.1:80 true", "health 10.0.0.1:80 false"}; !slices.Equal(got, want) {
		t.Errorf("Listener got %q, want %q", got, want)
	}
	if err := f.c.Drain(ep(9)); !errors.Is(err, ErrUnknownEndpoint) {
		t.Errorf("Drain(unknown) = %v, want ErrUnknownEndpoint", err)
	}
}

func TestNewErrors(t *testing.T) {
	p := func(context.Context, bulwark.Endpoint) error { return nil }
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no probe", Config{Interval: time.Second}},
		{"zero interval", Config{Probe: p}},
		{"negative interval", Config{Probe: p, Interval: -time.Second}},
		{"negative unhealthy interval", Config{Probe: p, Interval: time.Second, UnhealthyInterval: -1}},
		{"negative edge interval", Config{Probe: p, Interval: time.Second, EdgeInterval: -1}},
		{"negative initial jitter", Config{Probe: p, Interval: time.Second, InitialJitter: -1}},
		{"negative jitter", Config{Probe: p, Interval: time.Second, IntervalJitter: -1}},
		{"negative timeout", Config{Probe: p, Interval: time.Second, Timeout: -1}},
		{"negative rise", Config{Probe: p, Interval: time.Second, Rise: -1}},
		{"negative fall", Config{Probe: p, Interval: time.Second, Fall: -2}},
		{"negative workers", Config{Probe: p, Interval: time.Second, Workers: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New(%s) = %v, %v; want an error wrapping ErrInvalidConfig", tt.name, c, err)
			}
		})
	}
}

func TestCheckerStartClose(t *testing.T) {
	c, err := New(Config{Interval: time.Second, Probe: func(context.Context, bulwark.Endpoint) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("Start = %v", err)
	}
	if err := c.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := c.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	if err := c.SetEndpoints([]bulwark.Endpoint{ep(1)}); !errors.Is(err, ErrClosed) {
		t.Errorf("SetEndpoints after Close = %v, want ErrClosed", err)
	}
}

func TestCheckerCloseCancelsProbes(t *testing.T) {
	started := make(chan struct{}, 1)
	f := newChecker(t, Config{Timeout: time.Hour, Probe: func(ctx context.Context, _ bulwark.Endpoint) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}})
	add(t, f.c, ep(1))
	<-started
	if err := f.c.Close(); err != nil { // returns only once the probe has
		t.Errorf("Close = %v", err)
	}
	if got := f.state(t, ep(1)); got != Unknown {
		t.Errorf("State after Close cut its probe short = %v, want unknown", got)
	}
}

func TestCheckerConcurrentSafe(t *testing.T) {
	f := newChecker(t, Config{Rise: 1, Fall: 1, Workers: 4, IntervalJitter: 100 * time.Millisecond,
		Probe: func(_ context.Context, e bulwark.Endpoint) error {
			if len(e.Addr)%2 == 0 {
				return errDown
			}
			return nil
		}})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				f.clk.Advance(50 * time.Millisecond)
			}
		}
	}()
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				e := bulwark.Endpoint{Addr: fmt.Sprintf("10.%d.%d.1:80", g, i%20)}
				switch i % 4 {
				case 0, 1:
					set := []bulwark.Endpoint{e}
					if i%8 == 1 {
						set = append(set, bulwark.Endpoint{Addr: fmt.Sprintf("10.%d.%d.2:80", g, i%20)})
					}
					_ = f.c.SetEndpoints(set)
				case 2:
					f.c.State(e)
					if i%8 == 2 {
						_ = f.c.Drain(e)
					}
				case 3:
					_ = f.c.SetEndpoints(nil)
				}
			}
		}()
	}
	time.AfterFunc(200*time.Millisecond, func() { close(stop) })
	wg.Wait()
	if err := f.c.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

func TestCheckerBoundedWorkers(t *testing.T) {
	// 500 endpoints whose probes block: Workers of them run at once, each
	// on a worker, and the rest wait for a worker to be free; no goroutine
	// is started per endpoint. running is the number of probes in flight;
	// peak, the most at any time.
	const workers = 8
	var mu sync.Mutex
	running, peak, done := 0, 0, 0
	eightIn := make(chan struct{})
	release := make(chan struct{})
	f := newChecker(t, Config{Workers: workers, Timeout: time.Hour, Probe: func(ctx context.Context, _ bulwark.Endpoint) error {
		mu.Lock()
		running++
		peak = max(peak, running)
		if running == workers && done == 0 {
			close(eightIn)
		}
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		done++
		mu.Unlock()
		return nil
	}})
	var eps []bulwark.Endpoint
	for i := range 500 {
		eps = append(eps, bulwark.Endpoint{Addr: fmt.Sprintf("10.1.%d.%d:80", i/250, i%250)})
	}
	if err := f.c.SetEndpoints(eps); err != nil {
		t.Fatal(err)
	}
	<-eightIn // every worker holds a probe
	// Let the probes end one at a time: with a probe per goroutine rather
	// than per worker, hundreds would be blocked at once meanwhile.
	for range len(eps) {
		release <- struct{}{}
	}
	f.c.waitIdle(t)
	mu.Lock()
	defer mu.Unlock()
	if peak != workers {
		t.Errorf("at most %d probes ran at once, want Workers = %d", peak, workers)
	}
	if done != 500 {
		t.Errorf("%d probes after the workers were freed, want 500", done)
	}
}

// reentrant calls back into the Checker from the Listener, which would
// deadlock if the Checker held its lock.
type reentrant struct {
	c   *Checker
	got chan State
}

func (r *reentrant) HealthChanged(ep bulwark.Endpoint, healthy bool) {
	s, _ := r.c.State(ep)
	r.got <- s
}

func TestCheckerListenerOutsideLock(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	r := &reentrant{got: make(chan State, 4)}
	c, err := New(Config{Interval: time.Second, Rise: 1, Clock: clk, Listener: r,
		Probe: func(context.Context, bulwark.Endpoint) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	r.c = c
	defer c.Close()
	if err := c.SetEndpoints([]bulwark.Endpoint{ep(1)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := <-r.got; s != Healthy {
		t.Errorf("State from inside HealthChanged = %v, want healthy", s)
	}
	if err := c.SetEndpoints(nil); err != nil { // HealthChanged(false) on the caller's goroutine
		t.Fatal(err)
	}
	<-r.got
}
