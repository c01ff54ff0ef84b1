package limit_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/limit"
)

func newBulkhead(t *testing.T, cfg limit.BulkheadConfig) *limit.Bulkhead {
	t.Helper()
	b, err := limit.NewBulkhead(cfg)
	require.NoError(t, err)
	return b
}

func rejection(t *testing.T, err error) *limit.RejectedError {
	t.Helper()
	var rej *limit.RejectedError
	require.ErrorAs(t, err, &rej)
	require.ErrorIs(t, err, limit.ErrRejected)
	return rej
}

func TestNewBulkheadInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  limit.BulkheadConfig
	}{
		{"zero limit", limit.BulkheadConfig{}},
		{"negative limit", limit.BulkheadConfig{Limit: -1}},
		{"negative queue", limit.BulkheadConfig{Limit: 1, MaxQueue: -1}},
		{"negative wait", limit.BulkheadConfig{Limit: 1, MaxWait: -time.Second}},
		{"headroom too big", limit.BulkheadConfig{Limit: 1, Headroom: 0.5}},
		{"negative headroom", limit.BulkheadConfig{Limit: 1, Headroom: -0.1}},
		{"share above one", limit.BulkheadConfig{Limit: 1, TenantShare: 1.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := limit.NewBulkhead(tc.cfg)
			if !errors.Is(err, limit.ErrInvalidConfig) || b != nil {
				t.Fatalf("NewBulkhead(%+v) = %v, %v; want nil, ErrInvalidConfig", tc.cfg, b, err)
			}
		})
	}
}

func TestBulkheadLimit(t *testing.T) {
	ctx := context.Background()
	b := newBulkhead(t, limit.BulkheadConfig{Name: "db", Limit: 3})
	var ps []limit.Permit
	for range 3 {
		p, err := b.Acquire(ctx)
		require.NoError(t, err)
		ps = append(ps, p)
	}
	if got := b.InFlight(); got != 3 {
		t.Fatalf("InFlight() = %d, want 3", got)
	}
	_, err := b.Acquire(ctx)
	rej := rejection(t, err)
	if rej.Reason != limit.ReasonLimit || rej.Name != "db" || rej.RetryAfter() != 0 {
		t.Fatalf("refusal = %+v (retry after %v), want ReasonLimit from db with no estimate", rej, rej.RetryAfter())
	}
	ps[0].Done(nil)
	p, err := b.Acquire(ctx)
	require.NoError(t, err, "a slot freed by Done is free again")
	p.Done(nil)
	for i := 1; i < 3; i++ {
		ps[i].Done(errors.New("boom"))
	}
	if got := b.InFlight(); got != 0 {
		t.Fatalf("InFlight() after every Done = %d, want 0", got)
	}
}

func TestBulkheadHeadroom(t *testing.T) {
	b := newBulkhead(t, limit.BulkheadConfig{Limit: 10, Headroom: 0.2})
	for _, tc := range []struct {
		c    limit.Criticality
		want int
	}{{limit.Sheddable, 6}, {limit.Normal, 8}, {limit.Critical, 10}} {
		ctx := limit.WithCriticality(context.Background(), tc.c)
		var ps []limit.Permit
		for {
			p, err := b.Acquire(ctx)
			if err != nil {
				break
			}
			ps = append(ps, p)
		}
		if len(ps) != tc.want {
			t.Errorf("%v calls admitted = %d, want %d", tc.c, len(ps), tc.want)
		}
		for i := range ps {
			ps[i].Done(nil)
		}
	}
}

func TestBulkheadTenantShare(t *testing.T) {
	b := newBulkhead(t, limit.BulkheadConfig{Limit: 10, TenantShare: 0.3})
	a := limit.WithTenant(context.Background(), "a")
	var ps []limit.Permit
	for range 3 {
		p, err := b.Acquire(a)
		require.NoError(t, err)
		ps = append(ps, p)
	}
	_, err := b.Acquire(a)
	if rej := rejection(t, err); rej.Reason != limit.ReasonTenant || rej.Tenant != "a" {
		t.Fatalf("4th call of tenant a: %v, want ReasonTenant for a", err)
	}
	p, err := b.Acquire(limit.WithTenant(context.Background(), "b"))
	require.NoError(t, err, "another tenant still gets its share")
	p.Done(nil)
	ps[0].Done(nil)
	p, err = b.Acquire(a)
	require.NoError(t, err, "a tenant gets a slot back when one of its calls ends")
	p.Done(nil)
	for i := 1; i < len(ps); i++ {
		ps[i].Done(nil)
	}
	require.Equal(t, 0, b.InFlight())
}

// queued starts a call of criticality c that waits in b's queue, and waits
// until it is queued (its MaxWait timer is pending on clk).
func queued(t *testing.T, b *limit.Bulkhead, clk *bulwarktest.Clock, c limit.Criticality) <-chan error {
	t.Helper()
	timers := clk.Timers()
	done := make(chan error, 1)
	go func() {
		p, err := b.Acquire(limit.WithCriticality(context.Background(), c))
		if err == nil {
			p.Done(nil)
		}
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, clk.BlockUntil(ctx, timers+1))
	return done
}

// recv returns what ch receives, failing t if nothing comes for long.
func recv(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second): // a deadlock guard, not a timing assumption
		t.Fatal("nothing received in 10 s")
		return nil
	}
}

func TestBulkheadQueueServesMostCriticalFirst(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	b := newBulkhead(t, limit.BulkheadConfig{Limit: 1, MaxQueue: 3, MaxWait: time.Minute, Clock: clk})
	hold, err := b.Acquire(context.Background())
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		order []limit.Criticality
	)
	var wg sync.WaitGroup
	for _, c := range []limit.Criticality{limit.Sheddable, limit.Normal, limit.Critical} {
		timers := clk.Timers()
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := b.Acquire(limit.WithCriticality(context.Background(), c))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, c) // holding the only slot: the order of admission
			mu.Unlock()
			p.Done(nil)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, clk.BlockUntil(ctx, timers+1)) // it waits in the queue
		cancel()
	}
	require.Equal(t, 3, b.Queued())
	hold.Done(nil)
	wg.Wait()
	want := []limit.Criticality{limit.Critical, limit.Normal, limit.Sheddable}
	if !slices.Equal(order, want) {
		t.Fatalf("admitted from the queue in the order %v, want %v", order, want)
	}
	require.Equal(t, 0, b.Queued())
	require.Equal(t, 0, b.InFlight())
}

func TestBulkheadFullQueueShedsLowerCriticality(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	b := newBulkhead(t, limit.BulkheadConfig{Limit: 1, MaxQueue: 1, MaxWait: time.Minute, Clock: clk})
	hold, err := b.Acquire(context.Background())
	require.NoError(t, err)
	shed := queued(t, b, clk, limit.Sheddable)

	_, err = b.Acquire(limit.WithCriticality(context.Background(), limit.Sheddable))
	if rej := rejection(t, err); rej.Reason != limit.ReasonQueueFull {
		t.Fatalf("a call no more critical than the queue's: %v, want ReasonQueueFull", err)
	}
	crit := make(chan error, 1)
	go func() {
		p, err := b.Acquire(limit.WithCriticality(context.Background(), limit.Critical))
		if err == nil {
			p.Done(nil)
		}
		crit <- err
	}()
	// The critical call evicts the sheddable one and takes its place in one
	// step: once the sheddable call is refused, the critical one waits.
	if rej := rejection(t, recv(t, shed)); rej.Reason != limit.ReasonShed || rej.Criticality != limit.Sheddable {
		t.Fatalf("the evicted waiter: %+v, want ReasonShed for a sheddable call", rej)
	}
	hold.Done(nil)
	require.NoError(t, <-crit)
}

func TestBulkheadMaxWait(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	obs := &recorder{}
	b := newBulkhead(t, limit.BulkheadConfig{Name: "db", Limit: 1, MaxQueue: 1, MaxWait: 100 * time.Millisecond, Clock: clk, Observer: obs})
	hold, err := b.Acquire(context.Background())
	require.NoError(t, err)
	waiter := queued(t, b, clk, limit.Normal)
	clk.Advance(99 * time.Millisecond)
	select {
	case err := <-waiter:
		t.Fatalf("the waiter ended before MaxWait: %v", err)
	default:
	}
	clk.Advance(time.Millisecond)
	rej := rejection(t, <-waiter)
	if rej.Reason != limit.ReasonWaitTimeout || rej.RetryAfter() != 100*time.Millisecond {
		t.Fatalf("refusal after MaxWait: %+v, RetryAfter %v; want ReasonWaitTimeout, 100ms", rej, rej.RetryAfter())
	}
	ev := obs.kinds(bulwark.EventRejected)
	if len(ev) != 1 || ev[0].Reason != "wait_timeout" || ev[0].Component != bulwark.ComponentBulkhead || ev[0].Name != "db" {
		t.Fatalf("events = %+v, want one EventRejected wait_timeout from bulkhead db", ev)
	}
	hold.Done(nil)
	require.Equal(t, 0, b.InFlight())
	require.Equal(t, 0, b.Queued())
}

func TestBulkheadWaitCanceled(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	b := newBulkhead(t, limit.BulkheadConfig{Limit: 1, MaxQueue: 1, MaxWait: time.Hour, Clock: clk})
	hold, err := b.Acquire(context.Background())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.Acquire(ctx)
		done <- err
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	require.NoError(t, clk.BlockUntil(wctx, 1)) // the waiter's MaxWait timer
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a canceled context = %v, want context.Canceled", err)
	}
	require.Equal(t, 0, b.Queued())
	hold.Done(nil)
	p, err := b.Acquire(context.Background())
	require.NoError(t, err, "the canceled waiter left its slot free")
	p.Done(nil)
}

func TestPermitDoneTwice(t *testing.T) {
	obs := &recorder{}
	b := newBulkhead(t, limit.BulkheadConfig{Name: "db", Limit: 2, Observer: obs})
	p, err := b.Acquire(context.Background())
	require.NoError(t, err)
	q, err := b.Acquire(context.Background())
	require.NoError(t, err)
	p.Done(nil)
	p.Done(nil)
	p.Drop()
	if got := b.InFlight(); got != 1 {
		t.Fatalf("InFlight() after ending one permit three times = %d, want 1", got)
	}
	if got := len(obs.kinds(bulwark.EventMisuse)); got != 2 {
		t.Fatalf("EventMisuse events = %d, want 2", got)
	}
	q.Done(nil)
	var zero limit.Permit
	zero.Done(nil) // does nothing
	require.Equal(t, 0, b.InFlight())
}

func TestBulkheadDoPanics(t *testing.T) {
	b := newBulkhead(t, limit.BulkheadConfig{Limit: 1})
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recover() = %v, want the op's panic", r)
			}
		}()
		_ = b.Do(context.Background(), func(context.Context) error { panic("boom") })
	}()
	require.Equal(t, 0, b.InFlight(), "a panicking op returns its slot")
	require.NoError(t, b.Do(context.Background(), func(context.Context) error { return nil }))
}

func TestBulkheadConcurrentSafe(t *testing.T) {
	const limitN, workers, calls = 4, 16, 300
	clk := bulwarktest.NewClock(time.Time{})
	b := newBulkhead(t, limit.BulkheadConfig{Limit: limitN, MaxQueue: 4, Headroom: 0.25, TenantShare: 0.75, Clock: clk})
	var inflight, peak atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := limit.WithCriticality(context.Background(), limit.Criticality(w%3-1))
			ctx = limit.WithTenant(ctx, []string{"a", "b", ""}[w%3])
			for range calls {
				err := b.Do(ctx, func(context.Context) error {
					n := inflight.Add(1)
					for m := peak.Load(); n > m && !peak.CompareAndSwap(m, n); m = peak.Load() {
					}
					inflight.Add(-1)
					return nil
				})
				if err != nil && !errors.Is(err, limit.ErrRejected) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > limitN {
		t.Fatalf("peak in flight = %d, want <= %d", p, limitN)
	}
	require.Equal(t, 0, b.InFlight())
	require.Equal(t, 0, b.Queued())
}
