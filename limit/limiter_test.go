package limit_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/limit"
)

func TestNewInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  limit.Config
	}{
		{"negative min", limit.Config{MinLimit: -1}},
		{"max below min", limit.Config{MinLimit: 10, MaxLimit: 5, InitialLimit: 5}},
		{"initial above max", limit.Config{MaxLimit: 10, InitialLimit: 11}},
		{"initial below min", limit.Config{MinLimit: 30}},
		{"headroom too big", limit.Config{Headroom: 0.6}},
		{"share above one", limit.Config{TenantShare: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := limit.New(tc.cfg)
			if !errors.Is(err, limit.ErrInvalidConfig) || l != nil {
				t.Fatalf("New(%+v) = %v, %v; want nil, ErrInvalidConfig", tc.cfg, l, err)
			}
		})
	}
	l, err := limit.New(limit.Config{})
	require.NoError(t, err, "the zero Config is valid")
	require.Equal(t, 20, l.Limit())
}

// server is a callee for the limiter tests: a call takes base while at most
// knee calls run, and proportionally longer above (a queue in front of knee
// workers).
type server struct {
	base time.Duration
	knee int
}

func (s server) latency(n int) time.Duration {
	if n <= s.knee {
		return s.base
	}
	return time.Duration(int64(s.base) * int64(n) / int64(s.knee))
}

// drive runs rounds in which demand calls try to start at once (the
// refused ones are counted as refused, as real callers would be), and those
// admitted end together after the server's latency (or as end says). It
// returns the limit after the last round.
func drive(t *testing.T, l *limit.Limiter, clk *bulwarktest.Clock, rounds, demand int, srv server, end func(p *limit.Permit)) int {
	t.Helper()
	ps := make([]limit.Permit, 0, demand)
	for range rounds {
		ps = ps[:0]
		for range demand {
			p, err := l.Acquire(context.Background())
			if err != nil {
				if !errors.Is(err, limit.ErrRejected) {
					t.Fatal(err)
				}
				continue
			}
			ps = append(ps, p)
		}
		clk.Advance(srv.latency(len(ps)))
		for i := range ps {
			if end != nil {
				end(&ps[i])
			} else {
				ps[i].Done(nil)
			}
		}
	}
	return l.Limit()
}

func newLimiter(t *testing.T, cfg limit.Config) (*limit.Limiter, *bulwarktest.Clock) {
	t.Helper()
	clk := bulwarktest.NewClock(time.Time{})
	cfg.Clock = clk
	l, err := limit.New(cfg)
	require.NoError(t, err)
	return l, clk
}

// normalShare is the limit that Normal calls may use under the default
// Headroom.
func normalShare(limit int) int { return limit - limit/10 }

func TestLimiterFindsTheKnee(t *testing.T) {
	l, clk := newLimiter(t, limit.Config{})
	srv := server{base: 10 * time.Millisecond, knee: 40}
	got := normalShare(drive(t, l, clk, 400, 200, srv, nil))
	if got < 40 || got > 40*13/10 {
		t.Fatalf("limit for normal calls after 400 rounds against a knee of 40 = %d, want in [40, 52]", got)
	}
	if b := l.Baseline(); b != srv.base {
		t.Fatalf("Baseline() = %v, want %v", b, srv.base)
	}
}

func TestLimiterFollowsCapacityDown(t *testing.T) {
	l, clk := newLimiter(t, limit.Config{})
	drive(t, l, clk, 300, 200, server{base: 10 * time.Millisecond, knee: 40}, nil)
	got := normalShare(drive(t, l, clk, 300, 200, server{base: 10 * time.Millisecond, knee: 20}, nil))
	if got < 20 || got > 28 {
		t.Fatalf("limit for normal calls after the knee fell from 40 to 20 = %d, want in [20, 28]", got)
	}
}

func TestLimiterIgnoresFastFailures(t *testing.T) {
	l, clk := newLimiter(t, limit.Config{})
	srv := server{base: 10 * time.Millisecond, knee: 40}
	before := drive(t, l, clk, 300, 200, srv, nil)
	// Now half the calls fail at once, before the others are answered: a
	// limiter that learned from their latency would take them for the
	// baseline and see queueing everywhere else.
	for range 300 {
		var ps []limit.Permit
		for range 200 {
			p, err := l.Acquire(context.Background())
			if err != nil {
				break
			}
			ps = append(ps, p)
		}
		for i := 0; i < len(ps); i += 2 {
			ps[i].Done(errors.New("bad request"))
		}
		clk.Advance(srv.latency(len(ps) / 2))
		for i := 1; i < len(ps); i += 2 {
			ps[i].Done(nil)
		}
	}
	if after := l.Limit(); after < before*9/10 {
		t.Fatalf("limit fell from %d to %d while half the calls failed fast", before, after)
	}
	if b := l.Baseline(); b != srv.base {
		t.Fatalf("Baseline() = %v, want %v", b, srv.base)
	}
}

func TestLimiterTimeoutsLowerTheLimit(t *testing.T) {
	obs := &recorder{}
	l, clk := newLimiter(t, limit.Config{Observer: obs})
	drive(t, l, clk, 300, 200, server{base: 10 * time.Millisecond, knee: 40}, nil)
	// A black hole: every call times out after a second.
	got := drive(t, l, clk, 40, 200, server{base: time.Second, knee: 1000}, func(p *limit.Permit) { p.Done(context.DeadlineExceeded) })
	if got > 4 {
		t.Fatalf("limit after 40 s of timeouts = %d, want <= 4", got)
	}
	if len(obs.kinds(bulwark.EventLimitChanged)) == 0 {
		t.Fatal("no EventLimitChanged")
	}
	// The callee answers again: the limit comes back within seconds.
	back := normalShare(drive(t, l, clk, 300, 200, server{base: 10 * time.Millisecond, knee: 40}, nil))
	if back < 40 {
		t.Fatalf("limit 3 s after the black hole ended = %d, want >= 40", back)
	}
}

func TestLimiterSlowerCalleeKeepsTheLimit(t *testing.T) {
	l, clk := newLimiter(t, limit.Config{})
	drive(t, l, clk, 300, 200, server{base: 10 * time.Millisecond, knee: 40}, nil)
	// The callee gets ten times slower, with the same concurrency: its own
	// dependency is slow. The limit must not collapse.
	got := normalShare(drive(t, l, clk, 300, 200, server{base: 100 * time.Millisecond, knee: 40}, nil))
	if got < 40 {
		t.Fatalf("limit after the callee got 10x slower at the same concurrency = %d, want >= 40", got)
	}
	if b := l.Baseline(); b != 100*time.Millisecond {
		t.Fatalf("Baseline() = %v, want 100ms", b)
	}
}

func TestLimiterNoDriftInLongOverload(t *testing.T) {
	l, clk := newLimiter(t, limit.Config{})
	srv := server{base: 10 * time.Millisecond, knee: 40}
	// 5 simulated minutes at 2.5x the capacity.
	for range 30 {
		got := normalShare(drive(t, l, clk, 1000, 100, srv, nil))
		if got > 40*14/10 {
			t.Fatalf("limit for normal calls drifted to %d at %v, want <= 56", got, clk.Since(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)))
		}
	}
	if b := l.Baseline(); b != srv.base {
		t.Fatalf("Baseline() after the overload = %v, want %v", b, srv.base)
	}
}

func TestLimiterCanceledCallsTeachNothing(t *testing.T) {
	l, clk := newLimiter(t, limit.Config{})
	before := drive(t, l, clk, 300, 200, server{base: 10 * time.Millisecond, knee: 40}, nil)
	after := drive(t, l, clk, 100, 200, server{base: 10 * time.Second, knee: 40}, func(p *limit.Permit) { p.Done(context.Canceled) })
	if after != before {
		t.Fatalf("limit moved from %d to %d on calls their callers canceled", before, after)
	}
}

func TestLimiterRejects(t *testing.T) {
	obs := &recorder{}
	l, clk := newLimiter(t, limit.Config{Name: "api", InitialLimit: 10, MinLimit: 10, MaxLimit: 10, Observer: obs})
	drive(t, l, clk, 20, 5, server{base: 10 * time.Millisecond, knee: 100}, nil)
	var ps []limit.Permit
	for range 9 { // Normal calls may use 90 % of the limit
		p, err := l.Acquire(context.Background())
		require.NoError(t, err)
		ps = append(ps, p)
	}
	_, err := l.Acquire(context.Background())
	rej := rejection(t, err)
	if rej.Reason != limit.ReasonLimit || rej.Name != "api" || rej.RetryAfter() != 10*time.Millisecond {
		t.Fatalf("refusal = %+v, RetryAfter %v; want ReasonLimit from api, 10ms", rej, rej.RetryAfter())
	}
	p, err := l.Acquire(limit.WithCriticality(context.Background(), limit.Critical))
	require.NoError(t, err, "a critical call uses the headroom")
	ps = append(ps, p)
	if got := l.InFlight(); got != 10 {
		t.Fatalf("InFlight() = %d, want 10", got)
	}
	for i := range ps {
		ps[i].Done(nil)
	}
	ev := obs.kinds(bulwark.EventRejected)
	if len(ev) != 1 || ev[0].Component != bulwark.ComponentLimiter || ev[0].Reason != "limit" {
		t.Fatalf("events = %+v, want one EventRejected limit from the limiter", ev)
	}
}

func TestLimiterTenantShare(t *testing.T) {
	l, _ := newLimiter(t, limit.Config{InitialLimit: 10, MinLimit: 10, MaxLimit: 10})
	a := limit.WithTenant(context.Background(), "a")
	var ps []limit.Permit
	for range 5 {
		p, err := l.Acquire(a)
		require.NoError(t, err)
		ps = append(ps, p)
	}
	_, err := l.Acquire(a)
	if rej := rejection(t, err); rej.Reason != limit.ReasonTenant {
		t.Fatalf("tenant a over half the limit: %v, want ReasonTenant", err)
	}
	p, err := l.Acquire(limit.WithTenant(context.Background(), "b"))
	require.NoError(t, err)
	ps = append(ps, p)
	for i := range ps {
		ps[i].Done(nil)
	}
	require.Equal(t, 0, l.InFlight())
}

func TestLimiterDoPanics(t *testing.T) {
	l, _ := newLimiter(t, limit.Config{})
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recover() = %v, want the op's panic", r)
			}
		}()
		_ = l.Do(context.Background(), func(context.Context) error { panic("boom") })
	}()
	require.Equal(t, 0, l.InFlight())
}

func TestLimiterConcurrentSafe(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	l, err := limit.New(limit.Config{Clock: clk, InitialLimit: 8, MaxLimit: 64, TenantShare: 0.75})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := limit.WithCriticality(context.Background(), limit.Criticality(w%3-1))
			ctx = limit.WithTenant(ctx, []string{"a", "b", ""}[w%3])
			for i := range 2000 {
				p, err := l.Acquire(ctx)
				if err != nil {
					continue
				}
				if w == 0 && i%10 == 0 {
					clk.Advance(time.Millisecond)
				}
				switch i % 4 {
				case 0:
					p.Drop()
				case 1:
					p.Done(errors.New("x"))
				default:
					p.Done(nil)
				}
				_ = l.Limit()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 0, l.InFlight())
}

func TestLimiterProbesOnTheGrid(t *testing.T) {
	// Few, slow calls: a window needs most of a second to fill. The probe
	// due at 10 s (the grid of the default ProbeInterval on the wall
	// clock) must start with the first call that ends after it, not when
	// the window closes, so that limiters sharing a callee halve their
	// limits together.
	l, clk := newLimiter(t, limit.Config{InitialLimit: 4, MaxLimit: 4})
	start := clk.Now()
	grid := start.Truncate(10 * time.Second).Add(10 * time.Second)
	var inflight []limit.Permit
	const latency, gap = 100 * time.Millisecond, 50 * time.Millisecond
	for clk.Now().Before(grid.Add(-gap)) {
		p, err := l.Acquire(context.Background())
		require.NoError(t, err)
		inflight = append(inflight, p)
		clk.Advance(gap)
		if len(inflight)*int(gap) > int(latency) {
			inflight[0].Done(nil)
			inflight = inflight[1:]
		}
	}
	require.Equal(t, 4, l.Limit(), "the limit before the probe")
	for clk.Now().Before(grid.Add(2 * gap)) {
		clk.Advance(gap)
		inflight[0].Done(nil)
		inflight = inflight[1:]
		p, err := l.Acquire(context.Background())
		require.NoError(t, err)
		inflight = append(inflight, p)
	}
	if got := l.Limit(); got != 2 {
		t.Fatalf("Limit() %v after the probe was due = %d, want 2 (halved)", clk.Now().Sub(grid), got)
	}
	for i := range inflight {
		inflight[i].Done(nil)
	}
}

func TestLimiterQueuesMoreWhenLessIsRefused(t *testing.T) {
	// Under a heavy overload every queued call only adds latency; near the
	// capacity a few queued calls keep the callee busy between bursts. The
	// limit settles closer to the knee when most calls are refused than
	// when few are.
	srv := server{base: 10 * time.Millisecond, knee: 40}
	heavy, clk := newLimiter(t, limit.Config{})
	gotHeavy := normalShare(drive(t, heavy, clk, 400, 200, srv, nil)) // 3 in 4 refused
	light, clk := newLimiter(t, limit.Config{})
	gotLight := 0
	for range 400 { // one more call than the limit admits: almost none refused
		gotLight = normalShare(drive(t, light, clk, 1, normalShare(light.Limit())+1, srv, nil))
	}
	if gotHeavy > 40*12/10 || gotLight < gotHeavy+5 {
		t.Fatalf("limit for normal calls against a knee of 40: %d with most calls refused, %d with few; want <= 48 and >= %d", gotHeavy, gotLight, gotHeavy+5)
	}
}

func TestLimiterSlowerCalleeWithoutProbes(t *testing.T) {
	// With no probes, the decreases themselves tell that the callee got
	// slower: the limit fell to a quarter and the latency did not.
	l, clk := newLimiter(t, limit.Config{ProbeInterval: -1})
	drive(t, l, clk, 300, 200, server{base: 10 * time.Millisecond, knee: 40}, nil)
	got := normalShare(drive(t, l, clk, 300, 200, server{base: 100 * time.Millisecond, knee: 40}, nil))
	if got < 40 {
		t.Fatalf("limit after the callee got 10x slower, without probes = %d, want >= 40", got)
	}
	if b := l.Baseline(); b != 100*time.Millisecond {
		t.Fatalf("Baseline() = %v, want 100ms", b)
	}
}

func TestLimiterNeverBelowMinLimit(t *testing.T) {
	// A callee that turns slow, and then queues even at half the limit
	// (its baseline was learnt while fast): the probes find the
	// calls queued at half, and the limit comes back lower than it was,
	// but never below MinLimit. With MinLimit = MaxLimit (a fixed limit,
	// as the proxy's per-backend limit is) the limit never moves.
	for _, tc := range []struct {
		name              string
		initial, min, max int
	}{
		{"fixed", 8, 8, 8},
		{"range", 32, 8, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := &recorder{}
			l, clk := newLimiter(t, limit.Config{InitialLimit: tc.initial, MinLimit: tc.min, MaxLimit: tc.max, Headroom: -1, Observer: obs})
			fast, slow := server{base: 10 * time.Millisecond, knee: 100}, server{base: 10 * time.Millisecond, knee: 1}
			start := clk.Now()
			probes := 0
			for clk.Now().Sub(start) < 2*time.Minute {
				srv := fast // the baseline, 10 ms, is learnt first
				if clk.Now().Sub(start) > 20*time.Second {
					srv = slow
				}
				drive(t, l, clk, 1, 100, srv, nil)
				if got := l.Limit(); got < tc.min || got > tc.max {
					t.Fatalf("Limit() = %d at %v, want within [%d, %d]", got, clk.Now().Sub(start), tc.min, tc.max)
				}
			}
			for _, e := range obs.kinds(bulwark.EventLimitChanged) {
				if e.Reason == "probe" {
					probes++
				}
				if e.Limit < tc.min || (tc.min == tc.max && e.Limit != tc.min) {
					t.Fatalf("EventLimitChanged %s to %d, want within [%d, %d]", e.Reason, e.Limit, tc.min, tc.max)
				}
			}
			if tc.min < tc.max && probes == 0 {
				t.Fatalf("no probe in 2 minutes of calls: the test did not reach what it checks")
			}
		})
	}
}
