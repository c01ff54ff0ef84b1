package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type payment struct {
	ID     string `json:"id"`
	Amount int    `json:"amount"`
}

func TestNewValidates(t *testing.T) {
	st := newStore(t, nil)
	tests := []struct {
		name string
		cfg  idempotency.Config
		want string
	}{
		{"nil store", idempotency.Config{}, "Store is nil"},
		{"negative lease", idempotency.Config{Store: st, Lease: -1}, "Lease -1ns is negative"},
		{"negative retention", idempotency.Config{Store: st, Retention: -time.Second}, "Retention -1s is negative"},
		{"negative wait", idempotency.Config{Store: st, Wait: -1}, "Wait"},
		{"negative poll", idempotency.Config{Store: st, PollInterval: -1}, "PollInterval"},
		{"negative retry-after", idempotency.Config{Store: st, RetryAfter: -1}, "RetryAfter"},
		{"ok", idempotency.Config{Store: st}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := idempotency.New(tt.cfg)
			if tt.want == "" {
				if err != nil || e == nil {
					t.Fatalf("New(%+v) = %v, %v; want an Engine", tt.cfg, e, err)
				}
				return
			}
			if !errors.Is(err, idempotency.ErrInvalidConfig) || !contains(err.Error(), tt.want) {
				t.Fatalf("New(%+v) error = %v, want ErrInvalidConfig containing %q", tt.cfg, err, tt.want)
			}
		})
	}
}

func contains(s, sub string) bool { return len(sub) == 0 || indexOf(s, sub) >= 0 }

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestDoRunsOnceThenReplays(t *testing.T) {
	clk := fakeClock()
	obs := &events{}
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{Observer: obs, Name: "payments"})
	runs := 0
	op := func(context.Context) (payment, error) {
		runs++
		return payment{ID: fmt.Sprintf("pay_%d", runs), Amount: 100}, nil
	}
	ctx := t.Context()
	first, err := idempotency.Do(ctx, e, "k1", []byte("fp"), op)
	require.NoError(t, err)
	for i := range 3 {
		got, err := idempotency.Do(ctx, e, "k1", []byte("fp"), op)
		if err != nil || got != first {
			t.Fatalf("Do replay #%d = %+v, %v; want %+v, nil", i, got, err, first)
		}
	}
	if runs != 1 {
		t.Errorf("op ran %d times, want 1", runs)
	}
	if got, _ := idempotency.Do(ctx, e, "k2", []byte("fp"), op); got.ID != "pay_2" {
		t.Errorf("Do(k2) = %+v, want a second run", got)
	}
	if c, r := obs.count(bulwark.EventClaimed, ""), obs.count(bulwark.EventReplayed, ""); c != 2 || r != 3 {
		t.Errorf("events: %d claimed, %d replayed; want 2, 3", c, r)
	}
}

func TestDoValidatesKey(t *testing.T) {
	clk := fakeClock()
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{})
	_, err := idempotency.Do(t.Context(), e, "", nil, func(context.Context) (int, error) { return 1, nil })
	if !errors.Is(err, idempotency.ErrInvalidKey) {
		t.Fatalf("Do(\"\") error = %v, want ErrInvalidKey", err)
	}
}

func TestDoMismatch(t *testing.T) {
	clk := fakeClock()
	obs := &events{}
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{Observer: obs})
	ctx := t.Context()
	_, err := idempotency.Do(ctx, e, "k", []byte("amount=100"), func(context.Context) (int, error) { return 1, nil })
	require.NoError(t, err)
	ran := false
	got, err := idempotency.Do(ctx, e, "k", []byte("amount=999"), func(context.Context) (int, error) { ran = true; return 2, nil })
	if !errors.Is(err, idempotency.ErrMismatch) || ran || got != 0 {
		t.Fatalf("Do with another fingerprint = %d, %v (ran %v); want 0, ErrMismatch, not run", got, err, ran)
	}
	if n := obs.count(bulwark.EventMismatch, ""); n != 1 {
		t.Errorf("%d mismatch events, want 1", n)
	}
}

type ctxKey struct{}

// CacheError gets the context Do was called with.
func TestDoCacheErrorGetsContext(t *testing.T) {
	clk := fakeClock()
	var got any
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{CacheError: func(ctx context.Context, err error) bool {
		got = ctx.Value(ctxKey{})
		return true
	}})
	ctx := context.WithValue(t.Context(), ctxKey{}, "caller")
	_, err := idempotency.Do(ctx, e, "k", nil, func(context.Context) (payment, error) { return payment{}, errors.New("boom") })
	if err == nil || got != "caller" {
		t.Fatalf("Do error = %v, CacheError saw ctx value %v; want an error and %q", err, got, "caller")
	}
}

func TestDoErrors(t *testing.T) {
	boom := errors.New("card network timeout")
	declined := bulwark.Permanent(errors.New("card declined"))
	tests := []struct {
		name       string
		cacheError func(context.Context, error) bool
		err        error
		wantRuns   int  // after two calls
		wantReplay bool // the second call got a *ReplayedError
	}{
		{"transient error releases the key", nil, boom, 2, false},
		{"permanent error is stored and replayed", nil, declined, 1, true},
		{"CacheError false releases a permanent error", func(context.Context, error) bool { return false }, declined, 2, false},
		{"CacheError true stores any error", func(context.Context, error) bool { return true }, boom, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := fakeClock()
			e := newEngine(t, newStore(t, clk), clk, idempotency.Config{CacheError: tt.cacheError})
			runs := 0
			op := func(context.Context) (payment, error) { runs++; return payment{}, tt.err }
			_, err := idempotency.Do(t.Context(), e, "k", nil, op)
			if !errors.Is(err, tt.err) {
				t.Fatalf("first Do error = %v, want op's %v", err, tt.err)
			}
			_, err = idempotency.Do(t.Context(), e, "k", nil, op)
			var re *idempotency.ReplayedError
			if gotReplay := errors.As(err, &re); gotReplay != tt.wantReplay {
				t.Fatalf("second Do error = %v (%T); replayed = %v, want %v", err, err, gotReplay, tt.wantReplay)
			}
			if tt.wantReplay && (re.Message != tt.err.Error() || re.Key != "k" || !bulwark.IsPermanent(err)) {
				t.Errorf("replayed error = %+v, permanent %v; want message %q, key k, permanent", re, bulwark.IsPermanent(err), tt.err.Error())
			}
			if runs != tt.wantRuns {
				t.Errorf("op ran %d times, want %d", runs, tt.wantRuns)
			}
		})
	}
}

func TestDoPanicReleasesKey(t *testing.T) {
	clk := fakeClock()
	st := newStore(t, clk)
	e := newEngine(t, st, clk, idempotency.Config{})
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recover() = %v, want the op's panic value", r)
			}
		}()
		_, _ = idempotency.Do(t.Context(), e, "k", nil, func(context.Context) (int, error) { panic("boom") })
	}()
	if _, err := st.Get(t.Context(), "k"); !errors.Is(err, idempotency.ErrNotFound) {
		t.Fatalf("Get after a panic = %v, want ErrNotFound (released)", err)
	}
	got, err := idempotency.Do(t.Context(), e, "k", nil, func(context.Context) (int, error) { return 7, nil })
	if got != 7 || err != nil {
		t.Fatalf("Do after a panic = %d, %v; want 7, nil", got, err)
	}
}

func TestDoEncodeError(t *testing.T) {
	clk := fakeClock()
	st := newStore(t, clk)
	e := newEngine(t, st, clk, idempotency.Config{})
	_, err := idempotency.Do(t.Context(), e, "k", nil, func(context.Context) (func(), error) { return func() {}, nil })
	if err == nil || !contains(err.Error(), "cannot be stored") {
		t.Fatalf("Do of an unencodable result error = %v, want an encode error", err)
	}
	// op ran: the key stays taken, with the error, and is not released.
	if rec, err := st.Get(t.Context(), "k"); err != nil || !rec.Completed {
		t.Fatalf("Get after an encode error = %+v, %v; want the key completed with the error", rec, err)
	}
}

// blockingOp returns an op that signals started and blocks until release
// is closed, then returns v.
func blockingOp[T any](v T) (op func(context.Context) (T, error), started, release chan struct{}) {
	started, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	return func(context.Context) (T, error) {
		once.Do(func() { close(started) })
		<-release
		return v, nil
	}, started, release
}

func TestDoInFlightFailsFast(t *testing.T) {
	clk := fakeClock()
	obs := &events{}
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{Observer: obs, RetryAfter: 2 * time.Second})
	op, started, release := blockingOp(5)
	done := make(chan error, 1)
	go func() { _, err := idempotency.Do(context.Background(), e, "k", nil, op); done <- err }()
	<-started
	_, err := idempotency.Do(t.Context(), e, "k", nil, func(context.Context) (int, error) { return 0, nil })
	var ife *idempotency.InFlightError
	if !errors.As(err, &ife) || !errors.Is(err, idempotency.ErrInFlight) || ife.Key != "k" || ife.RetryAfter() != 2*time.Second {
		t.Fatalf("Do while in flight error = %v, want *InFlightError for k with RetryAfter 2s", err)
	}
	close(release)
	require.NoError(t, <-done)
	if n := obs.count(bulwark.EventConflict, ""); n != 1 {
		t.Errorf("%d conflict events, want 1", n)
	}
	// The suggested wait never exceeds the rest of the lease.
	e2 := newEngine(t, newStore(t, clk), clk, idempotency.Config{Lease: 10 * time.Second, RetryAfter: time.Minute})
	op2, started2, release2 := blockingOp(5)
	go func() { _, err := idempotency.Do(context.Background(), e2, "k", nil, op2); done <- err }()
	<-started2
	clk.Advance(7 * time.Second)
	_, err = idempotency.Do(t.Context(), e2, "k", nil, op2)
	if !errors.As(err, &ife) || ife.Retry > 10*time.Second {
		t.Fatalf("Do while in flight error = %v, want an *InFlightError with Retry <= 10s", err)
	}
	close(release2)
	require.NoError(t, <-done)
}

func TestDoWaitsForLocalRun(t *testing.T) {
	clk := fakeClock()
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{Wait: time.Minute})
	op, started, release := blockingOp(payment{ID: "pay_1"})
	first := make(chan error, 1)
	go func() { _, err := idempotency.Do(context.Background(), e, "k", nil, op); first <- err }()
	<-started
	second := make(chan payment, 1)
	go func() {
		p, err := idempotency.Do(context.Background(), e, "k", nil, func(context.Context) (payment, error) {
			return payment{ID: "second run"}, nil
		})
		if err != nil {
			p.ID = err.Error()
		}
		second <- p
	}()
	// The duplicate waits on a timer (poll interval or Wait).
	require.NoError(t, clk.BlockUntil(t.Context(), 2)) // the renewer's and the waiting duplicate's
	close(release)
	require.NoError(t, <-first)
	if got := <-second; got.ID != "pay_1" {
		t.Fatalf("waiting duplicate got %+v, want the first run's result", got)
	}
}

func TestDoWaitsForRemoteRun(t *testing.T) {
	clk := fakeClock()
	st := newStore(t, clk)
	// Two processes share one store.
	a := newEngine(t, st, clk, idempotency.Config{})
	b := newEngine(t, st, clk, idempotency.Config{Wait: 10 * time.Second, PollInterval: time.Second})
	op, started, release := blockingOp(42)
	first := make(chan error, 1)
	go func() { _, err := idempotency.Do(context.Background(), a, "k", nil, op); first <- err }()
	<-started
	type res struct {
		v   int
		err error
	}
	second := make(chan res, 1)
	go func() {
		v, err := idempotency.Do(context.Background(), b, "k", nil, func(context.Context) (int, error) { return -1, nil })
		second <- res{v, err}
	}()
	require.NoError(t, clk.BlockUntil(t.Context(), 2)) // the renewer's and the waiting duplicate's
	close(release)
	require.NoError(t, <-first)
	clk.Advance(time.Second) // b polls the store
	if got := <-second; got.v != 42 || got.err != nil {
		t.Fatalf("remote duplicate got %d, %v; want 42, nil", got.v, got.err)
	}

	// A run that outlasts Wait: the duplicate gives up with ErrInFlight.
	op2, started2, release2 := blockingOp(1)
	go func() { _, err := idempotency.Do(context.Background(), a, "k2", nil, op2); first <- err }()
	<-started2
	go func() {
		v, err := idempotency.Do(context.Background(), b, "k2", nil, func(context.Context) (int, error) { return -1, nil })
		second <- res{v, err}
	}()
	for range 10 {
		require.NoError(t, clk.BlockUntil(t.Context(), 2)) // the renewer's and the waiting duplicate's
		clk.Advance(time.Second)
	}
	if got := <-second; !errors.Is(got.err, idempotency.ErrInFlight) {
		t.Fatalf("duplicate after Wait got %d, %v; want ErrInFlight", got.v, got.err)
	}
	close(release2)
	require.NoError(t, <-first)
}

func TestDoWaitCanceled(t *testing.T) {
	clk := fakeClock()
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{Wait: time.Hour})
	op, started, release := blockingOp(1)
	first := make(chan error, 1)
	go func() { _, err := idempotency.Do(context.Background(), e, "k", nil, op); first <- err }()
	<-started
	ctx, cancel := context.WithCancel(t.Context())
	second := make(chan error, 1)
	go func() {
		_, err := idempotency.Do(ctx, e, "k", nil, func(context.Context) (int, error) { return 0, nil })
		second <- err
	}()
	require.NoError(t, clk.BlockUntil(t.Context(), 2)) // the renewer's and the waiting duplicate's
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled waiting Do error = %v, want context.Canceled", err)
	}
	close(release)
	require.NoError(t, <-first)
}

// A worker that dies after claiming (it claimed through the store and never
// finished) blocks its key only until its lease ends; its late Complete is
// then refused.
func TestDoTakesOverDeadWorker(t *testing.T) {
	clk := fakeClock()
	st := newStore(t, clk)
	obs := &events{}
	e := newEngine(t, st, clk, idempotency.Config{Lease: 30 * time.Second, Observer: obs})
	dead, err := st.Claim(t.Context(), "k", []byte("fp"), 30*time.Second)
	require.NoError(t, err)
	require.True(t, dead.Won)

	op := func(context.Context) (int, error) { return 2, nil }
	_, err = idempotency.Do(t.Context(), e, "k", []byte("fp"), op)
	require.ErrorIs(t, err, idempotency.ErrInFlight)

	clk.Advance(30 * time.Second)
	got, err := idempotency.Do(t.Context(), e, "k", []byte("fp"), op)
	if got != 2 || err != nil {
		t.Fatalf("Do after the dead worker's lease = %d, %v; want 2, nil", got, err)
	}
	if n := obs.count(bulwark.EventLeaseTakeover, ""); n != 1 {
		t.Errorf("%d lease takeover events, want 1", n)
	}
	if err := st.Complete(t.Context(), "k", dead.Token, []byte("late"), time.Hour); !errors.Is(err, idempotency.ErrFenced) {
		t.Fatalf("dead worker's late Complete error = %v, want ErrFenced", err)
	}
	if got, err := idempotency.Do(t.Context(), e, "k", []byte("fp"), func(context.Context) (int, error) { return 3, nil }); got != 2 || err != nil {
		t.Fatalf("Do after the late Complete = %d, %v; want the new owner's 2", got, err)
	}
}

// A run that cannot renew its lease (its instance is cut off from the
// store) has its context ended with ErrLeaseLost before the lease ends, and
// loses the key to a duplicate; its own late result is then refused and
// reported, and the duplicate's result stands.
func TestDoFencedRunReported(t *testing.T) {
	clk := fakeClock()
	st := newStore(t, clk)
	obs := &events{}
	cut := &faultyStore{Store: st}
	cut.failExtend.Store(&errOutage)
	e := newEngine(t, cut, clk, idempotency.Config{Lease: time.Minute, Observer: obs})
	started, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	var cause error
	go func() {
		v, err := idempotency.Do(context.Background(), e, "k", nil, func(ctx context.Context) (int, error) {
			close(started)
			<-ctx.Done()
			cause = context.Cause(ctx)
			<-release
			return 1, nil // finishes anyway, late
		})
		if v != 1 {
			err = fmt.Errorf("slow run's own result = %d, %v; want 1", v, err)
		}
		first <- err
	}()
	<-started
	clk.Advance(time.Minute)
	other := newEngine(t, st, clk, idempotency.Config{})
	v, err := idempotency.Do(t.Context(), other, "k", nil, func(context.Context) (int, error) { return 2, nil })
	require.NoError(t, err)
	require.Equal(t, 2, v)
	close(release)
	require.NoError(t, <-first)
	if !errors.Is(cause, idempotency.ErrLeaseLost) {
		t.Errorf("context.Cause of the cut-off run = %v, want ErrLeaseLost", cause)
	}
	if n := obs.count(bulwark.EventStoreError, "fenced"); n != 1 {
		t.Errorf("%d fenced store-error events, want 1", n)
	}
	if n := obs.count(bulwark.EventStoreError, "lease_lost"); n != 1 {
		t.Errorf("%d lease-lost store-error events, want 1", n)
	}
	if v, _ := idempotency.Do(t.Context(), other, "k", nil, func(context.Context) (int, error) { return 3, nil }); v != 2 {
		t.Errorf("replay = %d, want the new owner's 2", v)
	}
}

func TestDoStoreOutage(t *testing.T) {
	tests := []struct {
		name     string
		failOpen bool
		wantRun  bool
		reason   string
	}{
		{"fail closed", false, false, "fail-closed"},
		{"fail open", true, true, "fail-open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := fakeClock()
			st := &faultyStore{Store: newStore(t, clk)}
			st.failClaim.Store(true)
			obs := &events{}
			e := newEngine(t, st, clk, idempotency.Config{FailOpen: tt.failOpen, Observer: obs})
			ran := false
			v, err := idempotency.Do(t.Context(), e, "k", nil, func(context.Context) (int, error) { ran = true; return 9, nil })
			if ran != tt.wantRun {
				t.Fatalf("op ran = %v, want %v", ran, tt.wantRun)
			}
			if tt.wantRun && (v != 9 || err != nil) {
				t.Fatalf("fail-open Do = %d, %v; want 9, nil", v, err)
			}
			if !tt.wantRun && (!errors.Is(err, idempotency.ErrStore) || !errors.Is(err, errOutage)) {
				t.Fatalf("fail-closed Do error = %v, want ErrStore wrapping the outage", err)
			}
			if n := obs.count(bulwark.EventStoreError, tt.reason); n != 1 {
				t.Errorf("%d store-error events with reason %q, want 1", n, tt.reason)
			}
		})
	}
}

func TestDoCompleteFailureReported(t *testing.T) {
	clk := fakeClock()
	st := &faultyStore{Store: newStore(t, clk)}
	st.failComplete.Store(true)
	obs := &events{}
	e := newEngine(t, st, clk, idempotency.Config{Observer: obs})
	v, err := idempotency.Do(t.Context(), e, "k", nil, func(context.Context) (int, error) { return 4, nil })
	if v != 4 || err != nil {
		t.Fatalf("Do = %d, %v; want op's 4, nil", v, err)
	}
	if n := obs.count(bulwark.EventStoreError, "complete"); n != 1 {
		t.Errorf("%d store-error events with reason complete, want 1", n)
	}
}

func TestDoCanceledBeforeClaim(t *testing.T) {
	clk := fakeClock()
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{FailOpen: true})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ran := false
	_, err := idempotency.Do(ctx, e, "k", nil, func(context.Context) (int, error) { ran = true; return 1, nil })
	if !errors.Is(err, context.Canceled) || ran || errors.Is(err, idempotency.ErrStore) {
		t.Fatalf("Do with a canceled ctx = %v (ran %v); want context.Canceled, not run, not a store error", err, ran)
	}
}

// Many goroutines send one key: op runs once, and each caller gets its
// result or ErrInFlight; with Wait, every caller gets the result.
func TestDoConcurrentSafe(t *testing.T) {
	for _, wait := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprintf("wait=%v", wait), func(t *testing.T) {
			e := newEngine(t, newStore(t, nil), nil, idempotency.Config{Wait: wait})
			const callers = 200
			var runs, returned atomic.Int64
			var wg sync.WaitGroup
			results := make([]payment, callers)
			errs := make([]error, callers)
			start := make(chan struct{})
			othersDone := make(chan struct{}) // closed when the callers other than the runner have returned
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					results[i], errs[i] = idempotency.Do(context.Background(), e, "k", []byte("fp"), func(context.Context) (payment, error) {
						n := runs.Add(1)
						// The run lasts until every other caller met it in
						// flight: returned (ErrInFlight) without Wait, waiting
						// for it with Wait.
						if wait == 0 {
							select {
							case <-othersDone:
							case <-time.After(time.Minute):
								t.Error("the other callers did not return in a minute")
							}
						} else if got, ok := goroutinesReached(callers-1, "(*Engine).awaitRun"); !ok {
							t.Errorf("%d callers waited for the run after a minute, want %d", got, callers-1)
						}
						return payment{ID: fmt.Sprint("pay_", n), Amount: 5}, nil
					})
					if returned.Add(1) == callers-1 {
						close(othersDone) // the runner returns after the others
					}
				}()
			}
			close(start)
			wg.Wait()
			if n := runs.Load(); n != 1 {
				t.Fatalf("op ran %d times, want 1", n)
			}
			inFlight := 0
			for i := range callers {
				switch {
				case errs[i] == nil && results[i] == payment{ID: "pay_1", Amount: 5}:
				case wait == 0 && errors.Is(errs[i], idempotency.ErrInFlight):
					inFlight++
				default:
					t.Fatalf("caller %d got %+v, %v; want the result of run 1%s", i, results[i], errs[i],
						map[bool]string{true: " or ErrInFlight"}[wait == 0])
				}
			}
			if want := map[bool]int{true: callers - 1, false: 0}[wait == 0]; inFlight != want {
				t.Errorf("%d callers got ErrInFlight, want %d: every other caller met the run in flight", inFlight, want)
			}
		})
	}
}

// Concurrent duplicates in one process share one Claim.
func TestDoCoalescesClaimsConcurrentSafe(t *testing.T) {
	const callers = 50
	clk := fakeClock()
	st := &faultyStore{Store: newStore(t, clk), gate: make(chan struct{}), entered: make(chan struct{}, callers)}
	e := newEngine(t, st, clk, idempotency.Config{})
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	ready.Add(callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			_, _ = idempotency.Do(context.Background(), e, "k", nil, func(context.Context) (int, error) { return 1, nil })
		}()
	}
	ready.Wait()
	<-st.entered // the first Claim is in the store, held at the gate
	// Every other caller waits for that Claim's flight, not in a Claim of
	// its own: without coalescing, this never happens.
	waitForGoroutines(t, callers-1, "singleflight.(*Group).Do(", "(*WaitGroup).Wait")
	close(st.gate)
	wg.Wait()
	if m := st.maxInClaim.Load(); m != 1 {
		t.Errorf("%d Claims of one key were in the store at once, want 1", m)
	}
	if n := st.claims.Load(); n != 1 {
		t.Errorf("%d callers made %d Claims, want the one they shared", callers, n)
	}
}

// A duplicate waiting for a run that fails with a transient error runs op
// itself once the key is released.
func TestDoWaiterRunsAfterRelease(t *testing.T) {
	clk := fakeClock()
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{Wait: time.Minute})
	started, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := idempotency.Do(context.Background(), e, "k", nil, func(context.Context) (int, error) {
			close(started)
			<-release
			return 0, errors.New("transient")
		})
		first <- err
	}()
	<-started
	second := make(chan int, 1)
	go func() {
		v, err := idempotency.Do(context.Background(), e, "k", nil, func(context.Context) (int, error) { return 2, nil })
		if err != nil {
			v = -1
		}
		second <- v
	}()
	require.NoError(t, clk.BlockUntil(t.Context(), 2)) // the renewer's and the waiting duplicate's
	close(release)
	if err := <-first; err == nil || err.Error() != "transient" {
		t.Fatalf("first Do error = %v, want transient", err)
	}
	if v := <-second; v != 2 {
		t.Fatalf("waiting duplicate = %d, want its own run's 2", v)
	}
}

// A duplicate that shared the Claim of a caller who then gave up does not
// fail with that caller's cancellation: it claims for itself.
func TestDoLeaderCanceledConcurrentSafe(t *testing.T) {
	clk := fakeClock()
	st := &faultyStore{Store: newStore(t, clk), gate: make(chan struct{}), entered: make(chan struct{}, 2)}
	e := newEngine(t, st, clk, idempotency.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() {
		_, err := idempotency.Do(ctx, e, "k", nil, func(context.Context) (int, error) { return 1, nil })
		leader <- err
	}()
	<-st.entered // the leader's Claim waits at the gate
	follower := make(chan error, 1)
	var v int
	go func() {
		var err error
		v, err = idempotency.Do(context.Background(), e, "k", nil, func(context.Context) (int, error) { return 2, nil })
		follower <- err
	}()
	waitForGoroutines(t, 1, "singleflight.(*Group).Do(", "(*WaitGroup).Wait") // the follower joined the leader's flight
	cancel()
	close(st.gate)
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled leader's Do error = %v, want context.Canceled", err)
	}
	if err := <-follower; err != nil || v != 2 {
		t.Fatalf("follower's Do = %d, %v; want its own run's 2, nil", v, err)
	}
}

func TestDoForeignRecord(t *testing.T) {
	clk := fakeClock()
	st := newStore(t, clk)
	e := newEngine(t, st, clk, idempotency.Config{})
	c, err := st.Claim(t.Context(), "k", nil, time.Minute)
	require.NoError(t, err)
	require.NoError(t, st.Complete(t.Context(), "k", c.Token, []byte("h\x00\x00\xc8\x00"), time.Hour))
	_, err = idempotency.Do(t.Context(), e, "k", nil, func(context.Context) (int, error) { return 1, nil })
	if err == nil || !contains(err.Error(), "not a Do result") {
		t.Fatalf("Do on a key holding a middleware record: error = %v, want a decode error", err)
	}
}

// TestDoUnencodableResultKeepsKey: op ran and had its effect, but its result
// cannot be stored: the key must stay taken, with the error, so that a
// duplicate does not run op again.
func TestDoUnencodableResultKeepsKey(t *testing.T) {
	clk := fakeClock()
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{})
	runs := 0
	op := func(context.Context) (float64, error) { runs++; return math.NaN(), nil }
	for i := range 2 {
		_, err := idempotency.Do(t.Context(), e, "nan", nil, op)
		if err == nil || !bulwark.IsPermanent(err) {
			t.Errorf("Do #%d = %v, want a permanent error", i, err)
		}
	}
	if runs != 1 {
		t.Errorf("op ran %d times for one key, want 1", runs)
	}
}
