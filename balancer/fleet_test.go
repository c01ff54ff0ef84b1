package balancer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/healthcheck"
)

// breakerGroup stands for *breaker.Group as a Follower: keyed by Addr, it
// keeps a breaker per member and forgets the others.
type breakerGroup struct {
	mu   sync.Mutex
	m    map[string]*fakeBreaker
	made int // breakers made
	sets int // SetEndpoints calls
}

func (g *breakerGroup) get(ep bulwark.Endpoint) (balancer.Breaker, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]*fakeBreaker{}
	}
	br := g.m[ep.Addr]
	if br == nil {
		br = &fakeBreaker{}
		g.m[ep.Addr] = br
		g.made++
	}
	return br, nil
}

func (g *breakerGroup) SetEndpoints(eps []bulwark.Endpoint) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sets++
	keep := map[string]*fakeBreaker{}
	for _, ep := range eps {
		if br := g.m[ep.Addr]; br != nil {
			keep[ep.Addr] = br
		}
	}
	g.m = keep
	return nil
}

func (g *breakerGroup) peek(addr string) *fakeBreaker {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.m[addr]
}

// failing is a Follower whose SetEndpoints fails for a non-empty set.
type failing struct{ err error }

func (f failing) SetEndpoints(eps []bulwark.Endpoint) error {
	if len(eps) == 0 {
		return nil
	}
	return f.err
}

// uncomparable is a Follower value that == panics on.
type uncomparable struct{ sets []int }

func (u uncomparable) SetEndpoints(eps []bulwark.Endpoint) error {
	_ = append(u.sets, len(eps))
	return nil
}

func addrs(eps []bulwark.Endpoint) []string {
	var out []string
	for _, ep := range eps {
		out = append(out, ep.Addr)
	}
	return out
}

func TestFollowersFollowUpdates(t *testing.T) {
	eps := endpoints(4)
	group := &breakerGroup{}
	lb, j := judged(t, balancer.Config{Endpoints: eps[:3], Breaker: group.get, Followers: []balancer.Follower{group}})
	if err := lb.Update(eps[1:]); err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	sets := j.sets
	j.mu.Unlock()
	want := [][]string{addrs(eps[:3]), addrs(eps[1:])}
	if len(sets) != 2 || !slices.Equal(addrs(sets[0]), want[0]) || !slices.Equal(addrs(sets[1]), want[1]) {
		t.Errorf("judge's sets = %v, want %v", sets, want)
	}
	if group.sets != 2 || group.made != 4 || group.peek(eps[0].Addr) != nil {
		t.Errorf("breaker group: %d sets, %d breakers made, %s kept = %v; want 2, 4, forgotten",
			group.sets, group.made, eps[0].Addr, group.peek(eps[0].Addr) != nil)
	}

	// A breaker that cannot be made fails the Update, which changes nothing.
	boom := errors.New("no breaker")
	bad, _ := judged(t, balancer.Config{Endpoints: eps[:1], Breaker: func(ep bulwark.Endpoint) (balancer.Breaker, error) {
		if ep.Addr == eps[3].Addr {
			return nil, boom
		}
		return nil, nil
	}})
	if err := bad.Update(eps); !errors.Is(err, boom) {
		t.Errorf("Update with a failing Breaker = %v, want it wrapped", err)
	}
	if got := count(t, bad, "", 10); got[eps[0].Addr] != 10 {
		t.Errorf("picks after a failed Update = %v, want the old set", got)
	}
	if _, err := balancer.New(balancer.Config{Endpoints: eps, Breaker: func(bulwark.Endpoint) (balancer.Breaker, error) { return nil, boom }}); !errors.Is(err, boom) {
		t.Errorf("New with a failing Breaker = %v, want it wrapped", err)
	}

	// A follower that refuses the set: the balancer and the other
	// followers have it, and Update says so.
	refused := errors.New("refused")
	partial, pj := judged(t, balancer.Config{Followers: []balancer.Follower{failing{refused}}})
	if err := partial.Update(eps[:2]); !errors.Is(err, refused) {
		t.Errorf("Update with a refusing follower = %v, want its error", err)
	}
	if got := count(t, partial, "", 10); len(got) != 2 || len(pj.sets) != 2 {
		t.Errorf("after a refused Update: picks %v and judge's sets %v, want the new set in both", got, pj.sets)
	}

	// Followers of a type that == cannot compare are fine, twice too.
	if _, err := balancer.New(balancer.Config{Followers: []balancer.Follower{uncomparable{}, uncomparable{}}}); err != nil {
		t.Errorf("New with uncomparable followers = %v", err)
	}
	for _, tt := range []struct {
		name      string
		followers []balancer.Follower
	}{
		{"nil follower", []balancer.Follower{nil}},
		{"twice", []balancer.Follower{group, group}},
	} {
		if _, err := balancer.New(balancer.Config{Followers: tt.followers}); err == nil {
			t.Errorf("New with a follower %s = nil error", tt.name)
		}
	}
}

// TestPendingEndpoints: an endpoint that a judge has not pronounced on is
// pending: not picked while another is eligible, not counted against the
// panic threshold, and picked when every endpoint is pending.
func TestPendingEndpoints(t *testing.T) {
	obs := &events{}
	eps := endpoints(4)
	j := &judge{pending: true}
	lb := mustNew(t, balancer.Config{Endpoints: eps, Observer: obs, Followers: []balancer.Follower{j}})
	j.lb = lb
	if got := count(t, lb, "", 400); len(got) != 4 {
		t.Errorf("picks with every endpoint pending = %v, want all four", got)
	}
	j.set(eps[0], true)
	if got := count(t, lb, "", 400); got[eps[0].Addr] != 400 {
		t.Errorf("picks with one eligible, three pending = %v, want only the eligible one", got)
	}
	j.set(eps[1], false) // 1 of the 2 judged is eligible: at the threshold
	if got := count(t, lb, "", 400); got[eps[0].Addr] != 400 {
		t.Errorf("picks with one eligible, one down, two pending = %v, want only the eligible one", got)
	}
	if changes := obs.kinds(bulwark.EventStateChange); len(changes) != 0 {
		t.Errorf("state changes with pending endpoints = %+v, want none", changes)
	}
	j.set(eps[2], false) // 1 of 3 judged: panic
	if got := count(t, lb, "", 400); len(got) != 4 {
		t.Errorf("picks in panic mode = %v, want all four", got)
	}
	if changes := obs.kinds(bulwark.EventStateChange); len(changes) != 1 || changes[0].To != "panic" {
		t.Errorf("state changes = %+v, want one to panic", changes)
	}

	// Without panic mode, nothing eligible: the pending ones take the calls.
	off := &judge{pending: true}
	lb2 := mustNew(t, balancer.Config{Endpoints: eps[:3], PanicThreshold: -1, Followers: []balancer.Follower{off}})
	off.lb = lb2
	off.set(eps[0], false)
	if got := count(t, lb2, "", 400); got[eps[0].Addr] != 0 || len(got) != 2 {
		t.Errorf("picks with one down, two pending, panic off = %v, want the two pending", got)
	}
	off.set(eps[1], false)
	off.set(eps[2], false)
	if _, err := lb2.Pick("", nil); !errors.Is(err, balancer.ErrUnavailable) {
		t.Errorf("Pick with every endpoint down, panic off = %v, want ErrUnavailable", err)
	}
}

// gatedProbe is a health probe that succeeds, but holds the first probe of
// each endpoint until the test opens its gate.
type gatedProbe struct {
	mu    sync.Mutex
	gates map[string]chan struct{}
}

func (g *gatedProbe) gate(addr string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates == nil {
		g.gates = map[string]chan struct{}{}
	}
	c := g.gates[addr]
	if c == nil {
		c = make(chan struct{})
		g.gates[addr] = c
	}
	return c
}

func (g *gatedProbe) probe(ctx context.Context, ep bulwark.Endpoint) error {
	select {
	case <-g.gate(ep.Addr):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestRollingDeployNeverPanics: start-up and a rolling deploy that
// replaces every endpoint one by one, with an active checker among the
// followers. A new endpoint takes no call until its first probe passes, then
// takes its share; no pick fails, panic mode never starts, and no state
// change is emitted.
func TestRollingDeployNeverPanics(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	obs := &events{}
	probes := &gatedProbe{}
	healthy := make(chan string, 64)
	hc, err := healthcheck.New(healthcheck.Config{Probe: probes.probe, Interval: time.Second, Timeout: time.Hour,
		Clock: clk, Listener: listenerFunc(func(ep bulwark.Endpoint, ok bool) {
			if ok {
				healthy <- ep.Addr
			}
		})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := hc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	old := endpoints(6)
	set := slices.Clone(old)
	lb := mustNew(t, balancer.Config{Algorithm: balancer.LeastRequest, Endpoints: set, Observer: obs,
		Followers: []balancer.Follower{hc}})

	// pickAll picks 300 times, none failing, and checks that every pick
	// went to an endpoint the checker found healthy.
	pickAll := func(stage string) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range 300 {
			pk, err := lb.Pick("", nil)
			if err != nil {
				t.Fatalf("%s: Pick = %v, want no failure", stage, err)
			}
			got[pk.Endpoint().Addr]++
			pk.Done(balancer.Outcome{})
		}
		return got
	}
	open := func(ep bulwark.Endpoint) {
		t.Helper()
		close(probes.gate(ep.Addr))
		for {
			select {
			case addr := <-healthy:
				if addr == ep.Addr {
					return
				}
			case <-time.After(10 * time.Second): // only a checker that lost the endpoint gets here
				t.Fatalf("%s not healthy after its first probe passed", ep.Addr)
			}
		}
	}

	// Start-up: every endpoint pending, picks go to them all.
	if got := pickAll("start-up"); len(got) != 6 {
		t.Errorf("start-up picks = %v, want all six pending endpoints", got)
	}
	for _, ep := range old {
		open(ep)
	}
	for i := range old {
		fresh := bulwark.Endpoint{Addr: fmt.Sprintf("10.1.0.%d:80", i)}
		set[i] = fresh
		if err := lb.Update(set); err != nil {
			t.Fatal(err)
		}
		if got := pickAll(fmt.Sprintf("replacing %d", i)); got[fresh.Addr] != 0 || got[old[i].Addr] != 0 {
			t.Errorf("replacing %d: picks %v, want none on the new endpoint before its first probe, none on the old", i, got)
		}
		open(fresh)
		if got := pickAll(fmt.Sprintf("replaced %d", i)); got[fresh.Addr] == 0 {
			t.Errorf("replaced %d: picks %v, want the new endpoint used after its first probe", i, got)
		}
		if st, _ := hc.State(old[i]); st != healthcheck.Unknown {
			t.Errorf("checker still knows the old endpoint %s", old[i].Addr)
		}
	}
	if changes := obs.kinds(bulwark.EventStateChange); len(changes) != 0 {
		t.Errorf("state changes during start-up and a rolling deploy = %+v, want none", changes)
	}
}

type listenerFunc func(bulwark.Endpoint, bool)

func (f listenerFunc) HealthChanged(ep bulwark.Endpoint, healthy bool) { f(ep, healthy) }
func (f listenerFunc) EjectionChanged(bulwark.Endpoint, bool)          {}

// TestReAddedEndpointStartsAfresh: an endpoint that leaves is forgotten by
// the balancer, the checker, the detector and the breakers, and one that
// comes back starts afresh in all of them.
func TestReAddedEndpointStartsAfresh(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	eps := endpoints(4)
	x := eps[0]
	var mu sync.Mutex
	down := map[string]bool{x.Addr: true}
	probed := make(chan string, 64)
	hc, err := healthcheck.New(healthcheck.Config{Interval: time.Second, Clock: clk,
		Probe: func(_ context.Context, ep bulwark.Endpoint) error {
			mu.Lock()
			defer mu.Unlock()
			if down[ep.Addr] {
				return errors.New("down")
			}
			return nil
		},
		Observer: bulwark.ObserverFunc(func(e bulwark.Event) {
			if e.Kind == bulwark.EventProbe {
				probed <- e.Endpoint.Addr
			}
		})})
	if err != nil {
		t.Fatal(err)
	}
	detector, err := healthcheck.NewOutlierDetector(healthcheck.OutlierConfig{MaxEjectionPercent: 100, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	group := &breakerGroup{}
	lb := mustNew(t, balancer.Config{Endpoints: eps, Clock: clk, Breaker: group.get,
		Followers: []balancer.Follower{hc, detector, group}})
	waitProbes := func(want ...string) {
		t.Helper()
		left := map[string]bool{}
		for _, a := range want {
			left[a] = true
		}
		for len(left) > 0 {
			select {
			case addr := <-probed:
				delete(left, addr)
			case <-time.After(10 * time.Second): // only a checker that lost them gets here
				t.Fatalf("no probe of %v", left)
			}
		}
	}
	if err := hc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	waitProbes(addrs(eps)...)
	if st, _ := hc.State(x); st != healthcheck.Unhealthy {
		t.Fatalf("checker state of x = %v, want unhealthy", st)
	}
	for range 5 {
		detector.Record(eps[1], bulwark.Failure, false)
	}
	group.peek(eps[1].Addr).open.Store(true)
	if !detector.Ejected(eps[1]) {
		t.Fatalf("eps[1] not ejected after 5 failures")
	}

	// Both leave, then come back.
	if err := lb.Update(eps[2:]); err != nil {
		t.Fatal(err)
	}
	if _, ok := hc.State(x); ok {
		t.Errorf("the checker still checks x after it left")
	}
	if group.peek(eps[1].Addr) != nil {
		t.Errorf("the breaker group still holds eps[1] after it left")
	}
	mu.Lock()
	down[x.Addr] = false
	mu.Unlock()
	if err := lb.Update(eps); err != nil {
		t.Fatal(err)
	}
	if detector.Ejected(eps[1]) {
		t.Errorf("eps[1] still ejected after it came back")
	}
	if br := group.peek(eps[1].Addr); br == nil || br.open.Load() {
		t.Errorf("eps[1]'s breaker after it came back = %v, want a new, closed one", br)
	}
	if st, _ := hc.State(x); st != healthcheck.Unknown && st != healthcheck.Healthy {
		t.Errorf("checker state of x back in the set = %v, want unknown until its probe passes", st)
	}
	waitProbes(x.Addr, eps[1].Addr)
	got := count(t, lb, "", 400)
	if got[x.Addr] == 0 || got[eps[1].Addr] == 0 {
		t.Errorf("picks after both came back = %v, want both used", got)
	}
	// The detector counts eps[1]'s failures from zero.
	for range 4 {
		detector.Record(eps[1], bulwark.Failure, false)
	}
	if detector.Ejected(eps[1]) {
		t.Errorf("eps[1] ejected after 4 failures since it came back")
	}
}
