package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

// newBreaker returns a breaker on a fake clock.
func newBreaker(t testing.TB, cfg breaker.Config) (*breaker.Breaker, *bulwarktest.Clock) {
	t.Helper()
	clk := bulwarktest.NewClock(time.Time{})
	cfg.Clock = clk
	b, err := breaker.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	return b, clk
}

// run plays script on b: s success, f failure, n neutral, S and F slow
// success and failure (latency slow), '.' advances clk by tick. It returns
// the index in script of the call after which b was first open, or -1.
func run(t *testing.T, b *breaker.Breaker, clk *bulwarktest.Clock, script string, slow, tick time.Duration) int {
	t.Helper()
	for i, c := range script {
		if c == '.' {
			clk.Advance(tick)
			continue
		}
		tok, err := b.Acquire()
		if err != nil {
			t.Fatalf("Acquire before call %d of %q = %v, want nil", i, script, err)
		}
		var lat time.Duration
		o := bulwark.Success
		switch c {
		case 'f':
			o = bulwark.Failure
		case 'n':
			o = bulwark.Neutral
		case 'S':
			lat = slow
		case 'F':
			o, lat = bulwark.Failure, slow
		}
		b.Release(tok, o, lat)
		if b.State() == breaker.Open {
			return i
		}
	}
	return -1
}

func TestTripRules(t *testing.T) {
	slow := 2 * time.Second
	tests := []struct {
		name   string
		cfg    breaker.Config
		script string
		want   int // index of the call that trips, -1 for none
	}{
		{"default: 5 consecutive failures", breaker.Config{}, "ffffsffff" + "f", 9},
		{"consecutive: neutral does not break the run", breaker.Config{ConsecutiveFailures: 3}, "ffnf", 3},
		{"consecutive: a success resets the run", breaker.Config{ConsecutiveFailures: 3}, "ffsffsff", -1},
		{"count window: rate reached at min volume", breaker.Config{FailureRate: 0.5, WindowCalls: 10, MinCalls: 4}, "sffs", 3},
		{"count window: below min volume never trips", breaker.Config{FailureRate: 0.5, WindowCalls: 10, MinCalls: 5}, "ffff", -1},
		{"count window: a success that reaches min volume trips", breaker.Config{FailureRate: 0.5, WindowCalls: 10, MinCalls: 5}, "ffffs", 4},
		{"count window: rate below threshold", breaker.Config{FailureRate: 0.5, WindowCalls: 4, MinCalls: 4}, "sssfsssfsssfs", -1},
		{"count window: old failures slide out", breaker.Config{FailureRate: 0.75, WindowCalls: 4}, "ffsssfff", 7},
		{"count window: neutral counts nowhere", breaker.Config{FailureRate: 0.5, WindowCalls: 4}, "snnnnnnf", -1},
		{"count window: default min volume is the window", breaker.Config{FailureRate: 1, WindowCalls: 3}, "fff", 2},
		{"time window: rate reached", breaker.Config{FailureRate: 0.5, WindowDuration: 10 * time.Second, MinCalls: 4}, "s.s.f.f", 6},
		{"time window: old successes slide out", breaker.Config{FailureRate: 0.6, WindowDuration: 4 * time.Second, WindowBuckets: 4, MinCalls: 3}, "sss.....ff.f", 11},
		{"time window: old failures slide out", breaker.Config{FailureRate: 0.5, WindowDuration: 4 * time.Second, WindowBuckets: 4, MinCalls: 4}, "fff......sss.f", -1},
		{"time window: below min volume", breaker.Config{FailureRate: 0.5, WindowDuration: 4 * time.Second, WindowBuckets: 4, MinCalls: 3}, "ff.....ff.....ff", -1},
		{"slow rate: count window", breaker.Config{SlowCallRate: 0.5, SlowCallDuration: slow, WindowCalls: 4}, "sSsS", 3},
		{"slow rate: slow failures count as slow", breaker.Config{SlowCallRate: 0.5, SlowCallDuration: slow, WindowCalls: 4}, "sFsF", 3},
		{"slow rate: time window", breaker.Config{SlowCallRate: 1, SlowCallDuration: slow, WindowDuration: time.Minute, MinCalls: 3}, "S.S.S", 4},
		{"combined: consecutive fires first", breaker.Config{ConsecutiveFailures: 2, FailureRate: 0.9, WindowCalls: 10}, "sff", 2},
		{"combined: rate fires first", breaker.Config{ConsecutiveFailures: 5, FailureRate: 0.5, WindowCalls: 4}, "sfsf", 3},
		{"combined: both windows", breaker.Config{FailureRate: 0.5, WindowCalls: 100, WindowDuration: 2 * time.Second, WindowBuckets: 2, MinCalls: 2}, "ssss....f.f", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, clk := newBreaker(t, tt.cfg)
			if got := run(t, b, clk, tt.script, slow, time.Second); got != tt.want {
				t.Errorf("script %q tripped after call %d, want %d", tt.script, got, tt.want)
			}
		})
	}
}

// events records what an Observer is told.
type events struct {
	mu  sync.Mutex
	all []bulwark.Event
}

func (r *events) Observe(e bulwark.Event) {
	r.mu.Lock()
	r.all = append(r.all, e)
	r.mu.Unlock()
}

// transitions returns "from>to:reason" for each state change.
func (r *events) transitions() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, e := range r.all {
		if e.Kind == bulwark.EventStateChange {
			s = append(s, e.From+">"+e.To+":"+e.Reason)
		}
	}
	return strings.Join(s, " ")
}

func (r *events) count(k bulwark.EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.all {
		if e.Kind == k {
			n++
		}
	}
	return n
}

func fail(b *breaker.Breaker) {
	tok, err := b.Acquire()
	if err == nil {
		b.Release(tok, bulwark.Failure, 0)
	}
}

func retryAfter(t *testing.T, err error) time.Duration {
	t.Helper()
	var oe *breaker.OpenError
	if !errors.As(err, &oe) || !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("error %v is not an *OpenError wrapping ErrOpen", err)
	}
	return oe.RetryAfter()
}

func TestOpenDuration(t *testing.T) {
	tests := []struct {
		name string
		cfg  breaker.Config
		want []time.Duration // open durations of successive trips without closing
	}{
		{"fixed", breaker.Config{OpenDuration: time.Second}, []time.Duration{time.Second, time.Second, time.Second}},
		{"default", breaker.Config{}, []time.Duration{time.Minute, time.Minute}},
		{"doubling with cap", breaker.Config{OpenDuration: time.Second, MaxOpenDuration: 5 * time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}},
		{"factor 3", breaker.Config{OpenDuration: time.Second, MaxOpenDuration: time.Hour, OpenBackoff: 3},
			[]time.Duration{time.Second, 3 * time.Second, 9 * time.Second, 27 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.ConsecutiveFailures = 1
			b, clk := newBreaker(t, cfg)
			fail(b)
			for i, want := range tt.want {
				_, err := b.Acquire()
				if got := retryAfter(t, err); got != want {
					t.Errorf("trip %d: RetryAfter() = %v, want %v", i+1, got, want)
				}
				clk.Advance(want - 1)
				if st := b.State(); st != breaker.Open {
					t.Fatalf("trip %d: State() 1ns before the end = %v, want open", i+1, st)
				}
				clk.Advance(1)
				if st := b.State(); st != breaker.HalfOpen {
					t.Fatalf("trip %d: State() at the end = %v, want half-open", i+1, st)
				}
				fail(b) // the probe fails: open again, for longer
			}
		})
	}
}

func TestOpenDurationResetsAfterClosing(t *testing.T) {
	b, clk := newBreaker(t, breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Second, MaxOpenDuration: time.Minute})
	fail(b)
	clk.Advance(time.Second)
	fail(b) // probe fails: 2s
	clk.Advance(2 * time.Second)
	tok, err := b.Acquire()
	if err != nil {
		t.Fatalf("probe Acquire = %v", err)
	}
	b.Release(tok, bulwark.Success, 0)
	if st := b.State(); st != breaker.Closed {
		t.Fatalf("State() after a successful probe = %v, want closed", st)
	}
	fail(b)
	_, err = b.Acquire()
	if got := retryAfter(t, err); got != time.Second {
		t.Errorf("RetryAfter() after closing and tripping again = %v, want 1s", got)
	}
}

func TestOpenJitter(t *testing.T) {
	b, clk := newBreaker(t, breaker.Config{ConsecutiveFailures: 1, OpenDuration: 10 * time.Second, OpenJitter: 0.5})
	seen := map[time.Duration]bool{}
	for i := 0; i < 50; i++ {
		fail(b)
		_, err := b.Acquire()
		got := retryAfter(t, err)
		if got <= 5*time.Second || got > 10*time.Second {
			t.Fatalf("RetryAfter() with 50%% jitter = %v, want in (5s, 10s]", got)
		}
		seen[got] = true
		b.Reset()
	}
	if len(seen) < 10 {
		t.Errorf("50 jittered open durations took %d values, want at least 10", len(seen))
	}
	_ = clk
}

func TestHalfOpen(t *testing.T) {
	b, clk := newBreaker(t, breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Second, HalfOpenProbes: 2, HalfOpenSuccesses: 3, ProbeTimeout: 5 * time.Second})
	fail(b)
	clk.Advance(time.Second)

	p1, err1 := b.Acquire()
	p2, err2 := b.Acquire()
	if err1 != nil || err2 != nil {
		t.Fatalf("two probes: Acquire = %v, %v; want nil, nil", err1, err2)
	}
	clk.Advance(time.Second)
	_, err := b.Acquire()
	var oe *breaker.OpenError
	if !errors.As(err, &oe) || oe.State != breaker.HalfOpen {
		t.Fatalf("third probe: Acquire = %v, want an *OpenError in state half-open", err)
	}
	if got, want := oe.RetryAfter(), 4*time.Second; got != want {
		t.Errorf("third probe: RetryAfter() = %v, want %v (the first probe's deadline)", got, want)
	}

	b.Release(p1, bulwark.Success, 0)
	b.Release(p2, bulwark.Neutral, 0) // frees its slot, counts nothing
	for i := 0; i < 2; i++ {
		if st := b.State(); st != breaker.HalfOpen {
			t.Fatalf("State() after %d successful probes = %v, want half-open", i+1, st)
		}
		tok, err := b.Acquire()
		if err != nil {
			t.Fatalf("probe %d: Acquire = %v", i+3, err)
		}
		b.Release(tok, bulwark.Success, 0)
	}
	if st := b.State(); st != breaker.Closed {
		t.Errorf("State() after 3 successful probes = %v, want closed", st)
	}
}

func TestProbeDeadline(t *testing.T) {
	rec := &events{}
	b, clk := newBreaker(t, breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Second, ProbeTimeout: 3 * time.Second, Observer: rec})
	fail(b)
	clk.Advance(time.Second)
	stuck, err := b.Acquire()
	if err != nil {
		t.Fatalf("probe: Acquire = %v", err)
	}
	clk.Advance(3*time.Second - 1)
	if st := b.State(); st != breaker.HalfOpen {
		t.Fatalf("State() before the probe deadline = %v, want half-open", st)
	}
	clk.Advance(1)
	if st := b.State(); st != breaker.Open {
		t.Fatalf("State() at the probe deadline = %v, want open", st)
	}
	b.Release(stuck, bulwark.Success, 0) // too late: ignored
	if st := b.State(); st != breaker.Open {
		t.Errorf("State() after the overdue probe returned = %v, want open", st)
	}
	clk.Advance(2 * time.Second) // the second trip lasts 1s too (no MaxOpenDuration)
	if st := b.State(); st != breaker.HalfOpen {
		t.Errorf("State() after the second open duration = %v, want half-open", st)
	}
	want := "closed>open:consecutive_failures open>half-open:open_elapsed half-open>open:probe_timeout open>half-open:open_elapsed"
	if got := rec.transitions(); got != want {
		t.Errorf("transitions = %q, want %q", got, want)
	}
}

func TestStaleGenerationIgnored(t *testing.T) {
	b, clk := newBreaker(t, breaker.Config{ConsecutiveFailures: 2, OpenDuration: time.Second})
	old1, _ := b.Acquire()
	old2, _ := b.Acquire()
	fail(b)
	fail(b) // trips
	clk.Advance(time.Second)
	probe, err := b.Acquire()
	if err != nil {
		t.Fatalf("probe: Acquire = %v", err)
	}
	b.Release(old1, bulwark.Failure, 0) // admitted while closed, two generations ago
	if st := b.State(); st != breaker.HalfOpen {
		t.Fatalf("State() after a stale failure = %v, want half-open", st)
	}
	b.Release(probe, bulwark.Success, 0)
	if st := b.State(); st != breaker.Closed {
		t.Fatalf("State() after the probe = %v, want closed", st)
	}
	b.Release(old2, bulwark.Failure, 0)
	fail(b) // one failure of this generation: the stale one must not make it two
	if st := b.State(); st != breaker.Closed {
		t.Errorf("State() after one fresh and one stale failure = %v, want closed", st)
	}
}

func TestClassification(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	errBoom := errors.New("boom")
	tests := []struct {
		name  string
		cfg   breaker.Config
		ctx   context.Context
		err   error
		trips bool
	}{
		{"failure", breaker.Config{}, context.Background(), errBoom, true},
		{"deadline is a failure", breaker.Config{}, context.Background(), context.DeadlineExceeded, true},
		{"caller canceled is neutral", breaker.Config{}, canceled, context.Canceled, false},
		{"permanent is neutral by default", breaker.Config{}, context.Background(), bulwark.Permanent(errBoom), false},
		{"permanent counts when asked", breaker.Config{TripOnPermanent: true}, context.Background(), fmt.Errorf("x: %w", bulwark.Permanent(errBoom)), true},
		{"custom classifier", breaker.Config{Classify: func(context.Context, error) bulwark.Outcome { return bulwark.Neutral }}, context.Background(), errBoom, false},
		{"success", breaker.Config{}, context.Background(), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.ConsecutiveFailures = 1
			b, _ := newBreaker(t, cfg)
			err := b.Do(tt.ctx, func(context.Context) error { return tt.err })
			if !errors.Is(err, tt.err) {
				t.Fatalf("Do = %v, want %v", err, tt.err)
			}
			if got := b.State() == breaker.Open; got != tt.trips {
				t.Errorf("Do returning %v: tripped = %v, want %v", tt.err, got, tt.trips)
			}
		})
	}
}

func TestForcedStates(t *testing.T) {
	rec := &events{}
	b, _ := newBreaker(t, breaker.Config{ConsecutiveFailures: 1, Name: "p", Observer: rec})
	b.ForceOpen()
	ran := false
	err := b.Do(context.Background(), func(context.Context) error { ran = true; return nil })
	var oe *breaker.OpenError
	if ran || !errors.As(err, &oe) || oe.State != breaker.ForcedOpen || oe.RetryAfter() != math.MaxInt64 {
		t.Fatalf("Do while forced open ran=%v, err=%v; want not run, *OpenError forced-open with the longest RetryAfter", ran, err)
	}
	if got, want := err.Error(), "breaker: circuit open (p, forced-open)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	b.ForceClosed()
	for i := 0; i < 10; i++ {
		fail(b)
	}
	if st := b.State(); st != breaker.ForcedClosed {
		t.Errorf("State() after failures while forced closed = %v, want forced-closed", st)
	}
	b.Reset()
	if st := b.State(); st != breaker.Closed {
		t.Errorf("State() after Reset = %v, want closed", st)
	}
	fail(b)
	if st := b.State(); st != breaker.Open {
		t.Errorf("State() after a failure following Reset = %v, want open", st)
	}
	want := "closed>forced-open:forced forced-open>forced-closed:forced forced-closed>closed:reset closed>open:consecutive_failures"
	if got := rec.transitions(); got != want {
		t.Errorf("transitions = %q, want %q", got, want)
	}
	if n := rec.count(bulwark.EventRejected); n != 1 {
		t.Errorf("%d EventRejected, want 1", n)
	}
}

func TestPanicIsFailure(t *testing.T) {
	b, _ := newBreaker(t, breaker.Config{ConsecutiveFailures: 1})
	type boom struct{ n int }
	defer func() {
		if got := recover(); got != (boom{42}) {
			t.Errorf("recovered %v, want the original value %v", got, boom{42})
		}
		if st := b.State(); st != breaker.Open {
			t.Errorf("State() after a panic = %v, want open", st)
		}
	}()
	_ = b.Do(context.Background(), func(context.Context) error { panic(boom{42}) })
}

func TestObserverOutsideLock(t *testing.T) {
	var b *breaker.Breaker
	var mu sync.Mutex
	var kinds []string
	obs := bulwark.ObserverFunc(func(e bulwark.Event) {
		_ = b.State() // would deadlock if called under the breaker's lock
		mu.Lock()
		kinds = append(kinds, e.Kind.String()+":"+e.Outcome.String())
		mu.Unlock()
		if e.Component != bulwark.ComponentBreaker || e.Name != "api" {
			t.Errorf("event %+v: Component, Name = %q, %q; want breaker, api", e, e.Component, e.Name)
		}
	})
	b, _ = newBreaker(t, breaker.Config{Name: "api", ConsecutiveFailures: 1, Observer: obs})
	_ = b.Do(context.Background(), func(context.Context) error { return errors.New("x") })
	_ = b.Do(context.Background(), func(context.Context) error { return nil })
	want := "call:failure state_change:success rejected:success"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("events = %q, want %q", got, want)
	}
}

func TestDoMeasuresSlowCalls(t *testing.T) {
	b, clk := newBreaker(t, breaker.Config{SlowCallRate: 1, SlowCallDuration: time.Second, WindowCalls: 2})
	for i := 0; i < 2; i++ {
		_ = b.Do(context.Background(), func(context.Context) error { clk.Advance(time.Second); return nil })
	}
	if st := b.State(); st != breaker.Open {
		t.Errorf("State() after two slow calls = %v, want open", st)
	}
}

func TestCall(t *testing.T) {
	type resp struct{ status int }
	classify := func(r resp, err error) bulwark.Outcome {
		switch {
		case err != nil || r.status >= 500:
			return bulwark.Failure
		case r.status >= 400:
			return bulwark.Neutral
		}
		return bulwark.Success
	}
	tests := []struct {
		name   string
		status int
		trips  bool
	}{
		{"ok", 200, false},
		{"client error is neutral", 404, false},
		{"server error is a failure", 503, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := newBreaker(t, breaker.Config{ConsecutiveFailures: 1})
			got, err := breaker.Call(context.Background(), b, func(context.Context) (resp, error) { return resp{tt.status}, nil }, classify)
			if err != nil || got.status != tt.status {
				t.Fatalf("Call = %v, %v; want {%d}, nil", got, err, tt.status)
			}
			if tripped := b.State() == breaker.Open; tripped != tt.trips {
				t.Errorf("Call answering %d: tripped = %v, want %v", tt.status, tripped, tt.trips)
			}
			if tt.trips {
				if _, err := breaker.Call(context.Background(), b, func(context.Context) (resp, error) { return resp{200}, nil }, nil); !errors.Is(err, breaker.ErrOpen) {
					t.Errorf("Call while open = %v, want ErrOpen", err)
				}
			}
		})
	}
}

func TestPermit(t *testing.T) {
	b, clk := newBreaker(t, breaker.Config{ConsecutiveFailures: 2, SlowCallRate: 0.5, SlowCallDuration: time.Second, WindowCalls: 10, MinCalls: 4})
	for i := 0; i < 3; i++ {
		p, err := b.Allow()
		if err != nil {
			t.Fatalf("Allow = %v", err)
		}
		p.Done(context.Background(), nil)
	}
	p, _ := b.Allow()
	clk.Advance(time.Second)
	p.Done(context.Background(), nil) // slow: 1 of 4
	p, _ = b.Allow()
	p.Record(bulwark.Failure)
	if st := b.State(); st != breaker.Closed {
		t.Fatalf("State() after one failure = %v, want closed", st)
	}
	p, _ = b.Allow()
	p.Done(context.Background(), errors.New("down"))
	if st := b.State(); st != breaker.Open {
		t.Errorf("State() after two failures = %v, want open", st)
	}
	if _, err := b.Allow(); !errors.Is(err, breaker.ErrOpen) {
		t.Errorf("Allow while open = %v, want ErrOpen", err)
	}
}

// A second Done or Record on a Permit is ignored and reported as misuse: it
// does not count the call again (here, it would trip the breaker).
func TestPermitDoneTwice(t *testing.T) {
	rec := &events{}
	b, _ := newBreaker(t, breaker.Config{ConsecutiveFailures: 2, Observer: rec})
	errDown := errors.New("down")
	p, err := b.Allow()
	if err != nil {
		t.Fatalf("Allow = %v", err)
	}
	p.Done(context.Background(), errDown)
	p.Done(context.Background(), errDown) // misuse
	p.Record(bulwark.Failure)             // misuse
	if st := b.State(); st != breaker.Closed {
		t.Errorf("State() after one failed call reported three times = %v, want closed (one failure of two)", st)
	}
	if n := rec.count(bulwark.EventMisuse); n != 2 {
		t.Errorf("%d EventMisuse, want 2", n)
	}
	if n := rec.count(bulwark.EventCall); n != 1 {
		t.Errorf("%d EventCall, want 1", n)
	}
	q, err := b.Allow()
	if err != nil {
		t.Fatalf("Allow after one failure = %v, want the breaker closed", err)
	}
	q.Record(bulwark.Failure)
	if st := b.State(); st != breaker.Open {
		t.Errorf("State() after a second call failed = %v, want open", st)
	}
}

func TestNewInvalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  breaker.Config
		want string
	}{
		{"negative consecutive", breaker.Config{ConsecutiveFailures: -1}, "negative ConsecutiveFailures -1"},
		{"rate above 1", breaker.Config{FailureRate: 1.5, WindowCalls: 10}, "FailureRate 1.5 outside (0, 1]"},
		{"negative rate", breaker.Config{FailureRate: -0.1, WindowCalls: 10}, "FailureRate -0.1 outside (0, 1]"},
		{"slow rate above 1", breaker.Config{SlowCallRate: 2, SlowCallDuration: 1, WindowCalls: 10}, "SlowCallRate 2 outside (0, 1]"},
		{"rate without window", breaker.Config{FailureRate: 0.5}, "need a window"},
		{"window without rate", breaker.Config{WindowCalls: 10}, "has no effect"},
		{"negative open duration", breaker.Config{OpenDuration: -time.Second}, "negative OpenDuration -1s"},
		{"negative window duration", breaker.Config{FailureRate: 0.5, WindowDuration: -time.Second}, "negative WindowDuration"},
		{"negative window calls", breaker.Config{FailureRate: 0.5, WindowCalls: -3}, "negative WindowCalls -3"},
		{"negative probe timeout", breaker.Config{ProbeTimeout: -1}, "negative ProbeTimeout"},
		{"slow rate without duration", breaker.Config{SlowCallRate: 0.5, WindowCalls: 10}, "SlowCallRate needs SlowCallDuration"},
		{"min calls above window", breaker.Config{FailureRate: 0.5, WindowCalls: 10, MinCalls: 11}, "MinCalls 11 exceeds WindowCalls 10"},
		{"max open below open", breaker.Config{OpenDuration: time.Minute, MaxOpenDuration: time.Second}, "MaxOpenDuration 1s below OpenDuration 1m0s"},
		{"backoff below 1", breaker.Config{OpenBackoff: 0.5}, "OpenBackoff 0.5 below 1"},
		{"jitter of 1", breaker.Config{OpenJitter: 1}, "OpenJitter 1 outside [0, 1)"},
		{"too many probes", breaker.Config{HalfOpenProbes: 5000}, "HalfOpenProbes 5000 outside"},
		{"buckets too fine", breaker.Config{FailureRate: 0.5, WindowDuration: 5 * time.Millisecond, WindowBuckets: 10}, "time window step WindowDuration / WindowBuckets = 5ms / 10 below 1ms"},
		{"buckets without window", breaker.Config{WindowBuckets: 3}, "WindowBuckets without WindowDuration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := breaker.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "breaker: ") {
				t.Errorf("New(%+v) = %v, %v; want an error containing %q", tt.cfg, b, err, tt.want)
			}
		})
	}
}

func TestStateString(t *testing.T) {
	tests := []struct {
		s    breaker.State
		want string
	}{
		{breaker.Closed, "closed"},
		{breaker.Open, "open"},
		{breaker.HalfOpen, "half-open"},
		{breaker.ForcedOpen, "forced-open"},
		{breaker.ForcedClosed, "forced-closed"},
		{breaker.State(9), "state(9)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("State(%d).String() = %q, want %q", tt.s, got, tt.want)
		}
	}
}

func TestDoubleReleaseOfProbe(t *testing.T) {
	rec := &events{}
	b, clk := newBreaker(t, breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Second, HalfOpenProbes: 2, HalfOpenSuccesses: 2, Observer: rec})
	fail(b)
	clk.Advance(time.Second)
	tok, err := b.Acquire()
	if err != nil {
		t.Fatalf("probe: Acquire = %v", err)
	}
	b.Release(tok, bulwark.Success, 0)
	b.Release(tok, bulwark.Success, 0) // misuse: must not count as a second success
	if st := b.State(); st != breaker.HalfOpen {
		t.Errorf("State() after one probe released twice = %v, want half-open", st)
	}
	if n := rec.count(bulwark.EventMisuse); n != 1 {
		t.Errorf("%d EventMisuse, want 1", n)
	}
}

func TestRetryAfterWhileOpen(t *testing.T) {
	b, clk := newBreaker(t, breaker.Config{ConsecutiveFailures: 1, OpenDuration: 10 * time.Second})
	fail(b)
	clk.Advance(4 * time.Second)
	err := b.Do(context.Background(), func(context.Context) error { return nil })
	var ra interface{ RetryAfter() time.Duration }
	if !errors.As(err, &ra) || ra.RetryAfter() != 6*time.Second {
		t.Fatalf("Do 4s into a 10s open state = %v, want an error with RetryAfter() 6s", err)
	}
	if got, want := err.Error(), "breaker: circuit open (open, retry after 6s)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestTimeWindowTimer(t *testing.T) {
	b, clk := newBreaker(t, breaker.Config{FailureRate: 0.5, WindowDuration: 4 * time.Second, WindowBuckets: 4, MinCalls: 2})
	if n := clk.Timers(); n != 0 {
		t.Fatalf("%d timers pending before any call, want 0", n)
	}
	_ = b.Do(context.Background(), func(context.Context) error { return nil })
	if n := clk.Timers(); n != 1 {
		t.Fatalf("%d timers pending while calls come, want 1", n)
	}
	clk.Advance(2 * time.Second) // one step with a call, one without
	if n := clk.Timers(); n != 0 {
		t.Errorf("%d timers pending after a step without calls, want 0", n)
	}
	_ = b.Do(context.Background(), func(context.Context) error { return errors.New("x") })
	_ = b.Do(context.Background(), func(context.Context) error { return errors.New("x") })
	if st := b.State(); st != breaker.Open {
		t.Fatalf("State() after 2 of 3 calls failed = %v, want open", st)
	}
	if n := clk.Timers(); n != 0 {
		t.Errorf("%d timers pending once open, want 0: the closed window's timer must stop", n)
	}
}

type callKey struct{}

// ctxRejections records, for each rejection, the call id of the context it
// came with ("" when it came without one).
type ctxRejections struct{ ids []string }

func (c *ctxRejections) Observe(e bulwark.Event) {
	if e.Kind == bulwark.EventRejected {
		c.ids = append(c.ids, "")
	}
}

func (c *ctxRejections) ObserveContext(ctx context.Context, e bulwark.Event) {
	if e.Kind == bulwark.EventRejected {
		id, _ := ctx.Value(callKey{}).(string)
		c.ids = append(c.ids, id)
	}
}

// TestRejectionCarriesTheCallContext: Do and Call pass the call's context
// with a rejection, so that an OpenTelemetry observer can put it on the
// call's span; Acquire has none to pass.
func TestRejectionCarriesTheCallContext(t *testing.T) {
	obs := &ctxRejections{}
	b, _ := newBreaker(t, breaker.Config{Observer: obs})
	b.ForceOpen()
	ctx := context.WithValue(context.Background(), callKey{}, "call-1")
	_ = b.Do(ctx, func(context.Context) error { return nil })
	_, _ = breaker.Call(ctx, b, func(context.Context) (int, error) { return 1, nil }, nil)
	_, _ = b.Acquire()
	if got, want := strings.Join(obs.ids, ","), "call-1,call-1,"; got != want {
		t.Errorf("rejections came with call ids %q, want %q", got, want)
	}
}
