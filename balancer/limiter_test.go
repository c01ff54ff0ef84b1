package balancer_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/retry"
)

// fakeLimiter admits up to max calls at once, and records what Release is
// told.
type fakeLimiter struct {
	max      int64
	wait     time.Duration // RetryAfter of its refusals
	inflight atomic.Int64
	acquired atomic.Int64
	refused  atomic.Int64

	mu       sync.Mutex
	released []release
}

type release struct {
	o        bulwark.Outcome
	overload bool
}

func (f *fakeLimiter) TryAcquire() (uint64, error) {
	if f.inflight.Add(1) > f.max {
		f.inflight.Add(-1)
		f.refused.Add(1)
		return 0, retryAfter{errors.New("fake limit reached"), f.wait}
	}
	return uint64(f.acquired.Add(1)), nil
}

func (f *fakeLimiter) Release(_ uint64, o bulwark.Outcome, overload bool) {
	f.inflight.Add(-1)
	f.mu.Lock()
	f.released = append(f.released, release{o, overload})
	f.mu.Unlock()
}

func (f *fakeLimiter) releases() []release {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]release(nil), f.released...)
}

// limited returns a balancer over eps whose endpoint i has limiter lims[i].
func limited(t *testing.T, cfg balancer.Config, lims []*fakeLimiter) *balancer.Balancer {
	t.Helper()
	byAddr := map[string]*fakeLimiter{}
	for i, ep := range cfg.Endpoints {
		byAddr[ep.Addr] = lims[i]
	}
	cfg.Limiter = func(ep bulwark.Endpoint) (balancer.Limiter, error) { return byAddr[ep.Addr], nil }
	return mustNew(t, cfg)
}

// An endpoint at its limit is passed over while the others have room, with
// every algorithm: the picks spill over to them, and come back once a slot
// is free.
func TestLimiterSpillsOver(t *testing.T) {
	for _, a := range benchAlgorithms {
		t.Run(a.name, func(t *testing.T) {
			eps := endpoints(3)
			full := &fakeLimiter{max: 2}
			lims := []*fakeLimiter{full, {max: 1 << 20}, {max: 1 << 20}}
			lb := limited(t, balancer.Config{Algorithm: a.algo, Endpoints: eps}, lims)
			// Calls stay in flight until the limited endpoint has 2 of them.
			var held, others []balancer.Pick
			for i := 0; len(held) < 2; i++ {
				if i > 1000 {
					t.Fatalf("the limited endpoint %s was never picked", eps[0].Addr)
				}
				pk, err := lb.Pick(fmt.Sprint(i), nil)
				if err != nil {
					t.Fatal(err)
				}
				if pk.Endpoint() == eps[0] {
					held = append(held, pk)
				} else {
					others = append(others, pk)
				}
			}
			for i := range 3000 {
				key := fmt.Sprint(i)
				pk, err := lb.Pick(key, nil)
				if err != nil {
					t.Fatalf("Pick(%q) with two endpoints free = %v, want a pick", key, err)
				}
				if pk.Endpoint() == eps[0] {
					t.Fatalf("Pick(%q) = %s, at its limit of 2 with 2 in flight; want another endpoint", key, eps[0].Addr)
				}
				pk.Done(balancer.Result{})
			}
			if full.inflight.Load() != 2 {
				t.Errorf("in flight on the limited endpoint = %d, want 2", full.inflight.Load())
			}
			for i := range held {
				held[i].Done(balancer.Result{})
			}
			for i := range others {
				others[i].Done(balancer.Result{})
			}
			got := count(t, lb, "", 300)
			if a.algo != balancer.ConsistentHash && got[eps[0].Addr] == 0 {
				t.Errorf("picks after its calls ended = %v, want some on %s again", got, eps[0].Addr)
			}
		})
	}
}

// When every endpoint is at its limit, Pick fails at once with
// ErrUnavailable wrapping the refusal with the shortest RetryAfter, says why,
// and reports one EventRejected; no slot is left taken.
func TestLimiterEveryEndpointFull(t *testing.T) {
	for _, a := range benchAlgorithms {
		t.Run(a.name, func(t *testing.T) {
			obs := &events{}
			lims := []*fakeLimiter{{max: 1, wait: 80 * time.Millisecond}, {max: 1, wait: 30 * time.Millisecond}, {max: 1, wait: 50 * time.Millisecond}}
			lb := limited(t, balancer.Config{Algorithm: a.algo, Endpoints: endpoints(3), Observer: obs}, lims)
			var held []balancer.Pick
			for range 3 {
				pk, err := lb.Pick("k", nil)
				if err != nil {
					t.Fatalf("Pick with a free slot left = %v", err)
				}
				held = append(held, pk)
			}
			_, err := lb.Pick("k", nil)
			var ra interface{ RetryAfter() time.Duration }
			if !errors.Is(err, balancer.ErrUnavailable) || !errors.As(err, &ra) || ra.RetryAfter() != 30*time.Millisecond {
				t.Fatalf("Pick with every endpoint at its limit = %v, want ErrUnavailable with RetryAfter 30ms, the shortest", err)
			}
			if !strings.Contains(err.Error(), "concurrency limit") {
				t.Errorf("error %q does not say that the endpoints are at their limit", err)
			}
			rej := obs.kinds(bulwark.EventRejected)
			if len(rej) != 1 || rej[0].Reason != "limit" || !errors.Is(rej[0].Err, balancer.ErrUnavailable) {
				t.Errorf("EventRejected = %+v, want one, Reason limit, with the error", rej)
			}
			for i, l := range lims {
				if got := l.inflight.Load(); got != 1 {
					t.Errorf("limiter %d holds %d calls after the refused pick, want 1", i, got)
				}
			}
			for i := range held {
				held[i].Done(balancer.Result{})
			}
			if _, err := lb.Pick("k", nil); err != nil {
				t.Errorf("Pick after the calls ended = %v, want a pick", err)
			}
		})
	}
}

// Done releases the limiter's slot exactly once, with the call's outcome and
// whether it was a sign of overload.
func TestLimiterReleasedOnceWithOutcome(t *testing.T) {
	tests := []struct {
		name string
		res  balancer.Result
		want release
	}{
		{"success", balancer.Result{Latency: time.Millisecond}, release{bulwark.Success, false}},
		{"failure", balancer.Result{Err: errors.New("reset")}, release{bulwark.Failure, false}},
		{"canceled", balancer.Result{Err: context.Canceled}, release{bulwark.Neutral, false}},
		{"timeout", balancer.Result{Err: fmt.Errorf("call: %w", context.DeadlineExceeded)}, release{bulwark.Failure, true}},
		{"busy", balancer.Result{Err: errors.New("503"), Overload: true}, release{bulwark.Failure, true}},
		{"asked to slow down", balancer.Result{Overload: true}, release{bulwark.Success, true}},
		{"own classification", balancer.Result{Err: errors.New("404"), Outcome: bulwark.Neutral}, release{bulwark.Neutral, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := &events{}
			lim := &fakeLimiter{max: 10}
			lb := limited(t, balancer.Config{Endpoints: endpoints(1), Observer: obs}, []*fakeLimiter{lim})
			pk, err := lb.Pick("", nil)
			if err != nil {
				t.Fatal(err)
			}
			pk.Done(tt.res)
			pk.Done(tt.res)
			if got := lim.releases(); len(got) != 1 || got[0] != tt.want {
				t.Errorf("Release calls after Done(%+v) twice = %+v, want one, %+v", tt.res, got, tt.want)
			}
			if lim.inflight.Load() != 0 {
				t.Errorf("in flight after Done = %d, want 0", lim.inflight.Load())
			}
			if n := len(obs.kinds(bulwark.EventMisuse)); n != 1 {
				t.Errorf("EventMisuse = %d, want 1 for the second Done", n)
			}
		})
	}
}

// A breaker's refusal after the limiter admitted the call gives the slot
// back, as a call not made.
func TestLimiterSlotBackWhenBreakerRefuses(t *testing.T) {
	lim := &fakeLimiter{max: 10}
	br := &fakeBreaker{}
	br.open.Store(true)
	lb := mustNew(t, balancer.Config{
		Endpoints: endpoints(1),
		Limiter:   func(bulwark.Endpoint) (balancer.Limiter, error) { return lim, nil },
		Breaker:   func(bulwark.Endpoint) (balancer.Breaker, error) { return br, nil },
	})
	_, err := lb.Pick("", nil)
	var ra interface{ RetryAfter() time.Duration }
	if !errors.Is(err, balancer.ErrUnavailable) || !errors.As(err, &ra) || ra.RetryAfter() != 3*time.Second {
		t.Fatalf("Pick with the breaker open = %v, want ErrUnavailable wrapping the breaker's refusal", err)
	}
	if strings.Contains(err.Error(), "concurrency limit") {
		t.Errorf("error %q blames the limit for the breaker's refusal", err)
	}
	got := lim.releases()
	if lim.inflight.Load() != 0 || int64(len(got)) != lim.acquired.Load() {
		t.Errorf("limiter after the breaker refused: %d in flight, %d released of %d admitted; want 0, all", lim.inflight.Load(), len(got), lim.acquired.Load())
	}
	for _, r := range got {
		if r != (release{bulwark.Neutral, false}) {
			t.Errorf("slot given back as %+v, want neutral (the call was not made)", r)
		}
	}
}

// New and Update fail, wrapping the error, when the Limiter func does, and
// the set stays as it was.
func TestLimiterFuncError(t *testing.T) {
	boom := errors.New("no limiter for you")
	eps := endpoints(3)
	lb := mustNew(t, balancer.Config{Endpoints: eps[:2], Limiter: func(ep bulwark.Endpoint) (balancer.Limiter, error) {
		if ep == eps[2] {
			return nil, boom
		}
		return nil, nil
	}})
	if err := lb.Update(eps); !errors.Is(err, boom) {
		t.Errorf("Update with a failing Limiter func = %v, want it wrapped", err)
	}
	if got := count(t, lb, "", 60); got[eps[2].Addr] != 0 || len(got) != 2 {
		t.Errorf("picks after the failed Update = %v, want the first two endpoints only", got)
	}
	if _, err := balancer.New(balancer.Config{Endpoints: eps, Limiter: func(bulwark.Endpoint) (balancer.Limiter, error) { return nil, boom }}); !errors.Is(err, boom) {
		t.Errorf("New with a failing Limiter func = %v, want it wrapped", err)
	}
}

// newLimits returns a Limiter func that gives each endpoint a fixed limit
// (a *limit.Limiter that never moves) of n, or of the n of its Addr in
// byAddr, and the limiters it made.
func newLimits(n int, byAddr map[string]int) (func(bulwark.Endpoint) (balancer.Limiter, error), *sync.Map) {
	made := &sync.Map{}
	return func(ep bulwark.Endpoint) (balancer.Limiter, error) {
		n := n
		if m, ok := byAddr[ep.Addr]; ok {
			n = m
		}
		l, err := limit.New(limit.Config{Name: "lb/" + ep.Addr, InitialLimit: n, MinLimit: n, MaxLimit: n, Headroom: -1})
		if err != nil {
			return nil, err
		}
		made.Store(ep.Addr, l)
		return l, nil
	}, made
}

// With *limit.Limiter as the limiter: each endpoint takes its limit, then
// Pick fails with an error that is both ErrUnavailable and the limiter's
// *limit.RejectedError.
func TestLimitLimiterPerEndpoint(t *testing.T) {
	newLimiter, made := newLimits(2, nil)
	lb := mustNew(t, balancer.Config{Algorithm: balancer.LeastRequest, Endpoints: endpoints(2), Limiter: newLimiter})
	var held []balancer.Pick
	for range 4 {
		pk, err := lb.Pick("", nil)
		if err != nil {
			t.Fatalf("Pick %d of 4 with a limit of 2 on each of 2 endpoints = %v", len(held)+1, err)
		}
		held = append(held, pk)
	}
	_, err := lb.Pick("", nil)
	var rej *limit.RejectedError
	if !errors.Is(err, balancer.ErrUnavailable) || !errors.Is(err, limit.ErrRejected) || !errors.As(err, &rej) || rej.Reason != limit.ReasonLimit {
		t.Fatalf("Pick past every limit = %v, want ErrUnavailable and a *limit.RejectedError for the limit", err)
	}
	for i := range held {
		held[i].Done(balancer.Result{})
	}
	made.Range(func(addr, l any) bool {
		if got := l.(*limit.Limiter).InFlight(); got != 0 {
			t.Errorf("limiter of %s holds %d calls after every Done, want 0", addr, got)
		}
		return true
	})
}

// A pick of an endpoint with a limiter allocates nothing, nor does one that
// spills over from an endpoint at its limit: one endpoint is full with a
// call in flight, the other has room with three, so that the algorithms go
// to the full one first (least-request by load, consistent hashing by key)
// or often (round robin, random), and a run of four picks meets a refusal
// or more, but for Peak-EWMA, which has measured only the other endpoint and
// never tries the full one.
func TestLimiterPickAllocatesNothing(t *testing.T) {
	for _, a := range benchAlgorithms {
		t.Run(a.name, func(t *testing.T) {
			eps := endpoints(2)
			lb0 := mustNew(t, balancer.Config{Algorithm: a.algo, Endpoints: eps})
			pk, err := lb0.Pick("k", nil)
			if err != nil {
				t.Fatal(err)
			}
			full := pk.Endpoint() // where the key goes first
			pk.Done(balancer.Result{})
			newLimiter, made := newLimits(100, map[string]int{full.Addr: 1})
			lb := mustNew(t, balancer.Config{Algorithm: a.algo, Endpoints: eps, Limiter: newLimiter})
			var held []balancer.Pick
			others := 0 // calls held on the endpoint with room
			for i := 0; len(held) < 4; i++ {
				if i > 1000 {
					t.Fatal("could not put 1 call on one endpoint and 3 on the other")
				}
				pk, err := lb.Pick(fmt.Sprint(i), nil)
				if err != nil {
					t.Fatal(err)
				}
				if pk.Endpoint() != full {
					if others == 3 { // random may pick the other one a fourth time first
						pk.Done(balancer.Result{})
						continue
					}
					others++
				}
				held = append(held, pk)
			}
			for i := range held {
				defer held[i].Done(balancer.Result{})
			}
			l, _ := made.Load(full.Addr)
			if l.(*limit.Limiter).InFlight() != 1 {
				t.Fatalf("full endpoint holds %d calls, want 1", l.(*limit.Limiter).InFlight())
			}
			spilled := 0
			allocs := testing.AllocsPerRun(500, func() {
				for range 4 {
					pk, err := lb.Pick("k", nil)
					if err != nil {
						t.Fatal(err)
					}
					if pk.Endpoint() == full {
						t.Fatalf("Pick = %s, at its limit", full.Addr)
					}
					spilled++
					pk.Done(balancer.Result{Latency: time.Millisecond})
				}
			})
			if allocs != 0 {
				t.Errorf("Pick and Done with per-endpoint limiters: %v allocs, want 0", allocs)
			}
			if spilled == 0 {
				t.Errorf("no pick went past the full endpoint")
			}
		})
	}
}

// Transport: when every endpoint is at its limit, RoundTrip fails at once,
// without retrying and without sending anything.
func TestTransportEveryEndpointFull(t *testing.T) {
	b1, b2 := newBackend(t, 200), newBackend(t, 200)
	lims := []*fakeLimiter{{max: 0, wait: 40 * time.Millisecond}, {max: 0, wait: 40 * time.Millisecond}}
	lb := limited(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: b1.addr()}, {Addr: b2.addr()}}}, lims)
	policy := &attempts{n: 3}
	_, err := (&http.Client{Transport: &balancer.Transport{Balancer: lb, Policy: policy}}).Get("http://svc/")
	var ra interface{ RetryAfter() time.Duration }
	if !errors.Is(err, balancer.ErrUnavailable) || !errors.As(err, &ra) || ra.RetryAfter() != 40*time.Millisecond {
		t.Errorf("Get with every endpoint at its limit = %v, want ErrUnavailable with the limiter's RetryAfter", err)
	}
	if len(policy.errors) != 0 {
		t.Errorf("attempts retried after the limit refused: %v, want none (a permanent refusal)", policy.errors)
	}
	if b1.count()+b2.count() != 0 {
		t.Errorf("backends got %d requests, want none", b1.count()+b2.count())
	}
}

// Transport tells the limiter of each attempt: a 503 or 429 is a sign of
// overload, a 200 a success, a 500 a plain failure.
func TestTransportTellsTheLimiter(t *testing.T) {
	tests := []struct {
		status int
		want   release
	}{
		{200, release{bulwark.Success, false}},
		{404, release{bulwark.Success, false}},
		{500, release{bulwark.Failure, false}},
		{502, release{bulwark.Failure, false}},
		{503, release{bulwark.Failure, true}},
		{429, release{bulwark.Success, true}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			b := newBackend(t, tt.status)
			lim := &fakeLimiter{max: 10}
			lb := limited(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: b.addr()}}}, []*fakeLimiter{lim})
			resp, err := (&http.Client{Transport: &balancer.Transport{Balancer: lb}}).Get("http://svc/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := lim.releases(); len(got) != 1 || got[0] != tt.want {
				t.Errorf("limiter told %+v of a %d, want %+v", got, tt.status, tt.want)
			}
		})
	}
}

// With RetryAfterPerEndpoint, a retry on another endpoint does not wait for
// the Retry-After of the one that answered 503; the retry policy's budget
// still counts it. Without, it waits (here, a Retry-After above the policy's
// cap makes it give up at once). With no endpoint left untried, the wait
// holds either way.
func TestTransportRetryAfterPerEndpoint(t *testing.T) {
	tests := []struct {
		name        string
		perEndpoint bool
		backends    int
		wantStatus  int
		wantHits    int
	}{
		{"per endpoint: retried elsewhere at once", true, 2, 200, 2},
		{"per endpoint: nowhere else to go, the wait holds", true, 1, 503, 1},
		{"default: the wait holds", false, 2, 503, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shed := newBackend(t, http.StatusServiceUnavailable)
			shed.header = http.Header{"Retry-After": {"5"}}
			eps := []bulwark.Endpoint{{Addr: shed.addr()}}
			ok := newBackend(t, http.StatusOK)
			if tt.backends > 1 {
				eps = append(eps, bulwark.Endpoint{Addr: ok.addr()})
			}
			// A key that the endpoint asking for a wait owns: the first
			// attempt goes there, the retry to the next owner.
			lb := mustNew(t, balancer.Config{Algorithm: balancer.ConsistentHash, Endpoints: eps})
			key := ""
			for i := 0; key == ""; i++ {
				pk, err := lb.Pick(fmt.Sprint(i), nil)
				if err != nil {
					t.Fatal(err)
				}
				if pk.Endpoint() == eps[0] {
					key = fmt.Sprint(i)
				}
				pk.Done(balancer.Result{})
			}
			budget, err := retry.NewBudget(retry.BudgetConfig{Ratio: 0.1})
			if err != nil {
				t.Fatal(err)
			}
			policy, err := retry.New(retry.Config{MaxAttempts: 3, MaxRetryAfter: time.Second, Budget: budget,
				Delay: func(int, time.Duration, error) time.Duration { return 0 }})
			if err != nil {
				t.Fatal(err)
			}
			tr := &balancer.Transport{Balancer: lb, Policy: policy, RetryAfterPerEndpoint: tt.perEndpoint,
				Key: func(*http.Request) string { return key }}
			resp, err := (&http.Client{Transport: tr}).Get("http://svc/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus || shed.count()+ok.count() != tt.wantHits {
				t.Errorf("status %d after %d attempts, want %d after %d", resp.StatusCode, shed.count()+ok.count(), tt.wantStatus, tt.wantHits)
			}
			if shed.count() != 1 {
				t.Errorf("the endpoint that asked for a wait got %d attempts, want 1", shed.count())
			}
		})
	}
}

// Under concurrent picks, no endpoint ever holds more calls than its limit,
// a pick fails only for the limit, and every slot comes back. Each worker
// keeps its latest call in flight until its next pick, and the workers wait
// for each other after their first pick: 16 calls then want the 12 slots
// at once, whatever the scheduling.
func TestLimiterConcurrentSafe(t *testing.T) {
	for _, a := range benchAlgorithms {
		t.Run(a.name, func(t *testing.T) {
			const perEndpoint, workers, picks = 3, 16, 2000
			eps := endpoints(4)
			newLimiter, made := newLimits(perEndpoint, nil)
			lb := mustNew(t, balancer.Config{Algorithm: a.algo, Endpoints: eps, Limiter: newLimiter})
			inflight := map[bulwark.Endpoint]*atomic.Int64{}
			for _, ep := range eps {
				inflight[ep] = &atomic.Int64{}
			}
			var wg, ready sync.WaitGroup
			ready.Add(workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var last *balancer.Pick
					end := func() {
						if last != nil {
							inflight[last.Endpoint()].Add(-1)
							last.Done(balancer.Result{Latency: time.Millisecond})
							last = nil
						}
					}
					defer end()
					for i := range picks {
						if i == 1 {
							ready.Done()
							ready.Wait()
						}
						pk, err := lb.Pick(fmt.Sprint(w*picks+i), nil)
						end()
						if err != nil {
							if !errors.Is(err, balancer.ErrUnavailable) || !errors.Is(err, limit.ErrRejected) {
								t.Errorf("Pick = %v, want a pick or a refusal for the limit", err)
							}
							continue
						}
						if n := inflight[pk.Endpoint()].Add(1); n > perEndpoint {
							t.Errorf("%s holds %d calls, above its limit of %d", pk.Endpoint().Addr, n, perEndpoint)
						}
						last = &pk
					}
				}()
			}
			wg.Wait()
			made.Range(func(addr, l any) bool {
				if got := l.(*limit.Limiter).InFlight(); got != 0 {
					t.Errorf("limiter of %s holds %d calls after every Done, want 0", addr, got)
				}
				return true
			})
		})
	}
}
