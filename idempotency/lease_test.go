package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/stretchr/testify/require"
)

// The lease of these tests and the renewer's period: a sixth of it.
const (
	testLease  = 30 * time.Second
	testPeriod = testLease / 6
)

// A run that lives for one and a half leases keeps its key: its Engine
// renews the lease, duplicates on this instance and on another are told it is
// in flight all along and never run, and once it ends they get its result.
func TestDoLiveRunKeepsKey(t *testing.T) {
	clk := fakeClock()
	st := newStore(t, clk)
	obs := &events{}
	renewing := &faultyStore{Store: st, extended: make(chan error, 16)}
	a := newEngine(t, renewing, clk, idempotency.Config{Lease: testLease, Observer: obs})
	b := newEngine(t, st, clk, idempotency.Config{Lease: testLease})
	var runs atomic.Int64
	started, release := make(chan struct{}), make(chan struct{})
	type result struct {
		v     payment
		err   error
		cause error
	}
	first := make(chan result, 1)
	go func() {
		var cause error
		v, err := idempotency.Do(context.Background(), a, "k", []byte("fp"), func(ctx context.Context) (payment, error) {
			runs.Add(1)
			close(started)
			<-release
			cause = context.Cause(ctx)
			return payment{ID: "pay_1", Amount: 5}, nil
		})
		first <- result{v, err, cause}
	}()
	<-started
	dup := func(e *idempotency.Engine) error {
		_, err := idempotency.Do(t.Context(), e, "k", []byte("fp"), func(context.Context) (payment, error) {
			runs.Add(1)
			return payment{ID: "pay_2"}, nil
		})
		return err
	}
	for i := 1; i <= 9; i++ { // one and a half leases
		clk.Advance(testPeriod)
		for name, e := range map[string]*idempotency.Engine{"this instance": a, "another instance": b} {
			if err := dup(e); !errors.Is(err, idempotency.ErrInFlight) {
				close(release)
				<-first
				t.Fatalf("duplicate on %s at %v: error %v, want ErrInFlight", name, time.Duration(i)*testPeriod, err)
			}
		}
	}
	close(release)
	got := <-first
	if got.err != nil || got.v.ID != "pay_1" || got.cause != nil {
		t.Fatalf("the live run = %+v, %v (context cause %v); want pay_1, nil, and its context alive", got.v, got.err, got.cause)
	}
	for name, e := range map[string]*idempotency.Engine{"this instance": a, "another instance": b} {
		v, err := idempotency.Do(t.Context(), e, "k", []byte("fp"), func(context.Context) (payment, error) {
			runs.Add(1)
			return payment{ID: "pay_3"}, nil
		})
		if err != nil || v.ID != "pay_1" {
			t.Errorf("duplicate on %s after the run = %+v, %v; want pay_1 replayed", name, v, err)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("op ran %d times, want 1", n)
	}
	close(renewing.extended)
	renewals := 0
	for err := range renewing.extended {
		require.NoError(t, err, "renewal")
		renewals++
	}
	if renewals != 4 { // at 10, 20, 30 and 40 s
		t.Errorf("%d renewals in one and a half leases, want 4 (one every third of a lease)", renewals)
	}
	if n := obs.count(bulwark.EventStoreError, ""); n != 0 {
		t.Errorf("%d store-error events, want 0", n)
	}
}

// The same through the middleware: a request whose handler runs for one and
// a half leases creates one order; its duplicates, on this instance and on
// another, get 409 all along, then the stored response.
func TestMiddlewareLiveRunKeepsKey(t *testing.T) {
	clk := fakeClock()
	st := newStore(t, clk)
	h := &orders{}
	started, release := make(chan struct{}), make(chan struct{})
	var slow atomic.Bool
	slowFirst := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slow.CompareAndSwap(false, true) { // only the first run is slow
			close(started)
			<-release
		}
		h.ServeHTTP(w, r)
	})
	newInstance := func() http.Handler {
		e := newEngine(t, st, clk, idempotency.Config{Lease: testLease})
		mw, err := idempotency.Middleware(idempotency.HTTPConfig{Engine: e})
		require.NoError(t, err)
		return mw(slowFirst)
	}
	a, b := newInstance(), newInstance()
	serve := func(srv http.Handler) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/orders", strings.NewReader(`{"item":"tea"}`))
		r.Header.Set("Idempotency-Key", "k")
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		return w
	}
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- serve(a) }()
	<-started
	for i := 1; i <= 9; i++ {
		clk.Advance(testPeriod)
		for name, srv := range map[string]http.Handler{"this instance": a, "another instance": b} {
			if w := serve(srv); w.Code != http.StatusConflict {
				close(release)
				<-first
				t.Fatalf("duplicate on %s at %v: %d %q, want 409", name, time.Duration(i)*testPeriod, w.Code, w.Body)
			}
		}
	}
	close(release)
	w := <-first
	want := `{"order":1,"request":"{\"item\":\"tea\"}"}`
	if w.Code != http.StatusCreated || w.Body.String() != want {
		t.Fatalf("the live request = %d %q, want 201 %q", w.Code, w.Body, want)
	}
	for name, srv := range map[string]http.Handler{"this instance": a, "another instance": b} {
		if d := serve(srv); d.Code != http.StatusCreated || d.Body.String() != want || d.Header().Get("Idempotent-Replayed") != "true" {
			t.Errorf("duplicate on %s after the run = %d %q, want the stored 201 replayed", name, d.Code, d.Body)
		}
	}
	if n := h.runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

// A renewal refused with ErrFenced (the key was taken over) ends the run's
// context at once, with ErrLeaseLost; a renewal that fails otherwise is
// retried, and the context ends when two sixths of the lease or less are
// left without a renewal.
func TestDoLeaseLost(t *testing.T) {
	tests := []struct {
		name     string
		extend   error
		lostAt   time.Duration // the tick at which the context ends
		wantWrap error         // also wrapped by the cause's event
	}{
		{"renewal fenced", idempotency.ErrFenced, 2 * testPeriod, idempotency.ErrFenced},
		{"renewals failing", errOutage, 4 * testPeriod, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := fakeClock()
			st := &faultyStore{Store: newStore(t, clk)}
			st.failExtend.Store(&tt.extend)
			obs := &events{}
			e := newEngine(t, st, clk, idempotency.Config{Lease: testLease, Observer: obs})
			started := make(chan struct{})
			var opCtx context.Context
			done := make(chan error, 1)
			go func() {
				_, err := idempotency.Do(context.Background(), e, "k", nil, func(ctx context.Context) (int, error) {
					opCtx = ctx
					close(started)
					<-ctx.Done()
					return 0, ctx.Err()
				})
				done <- err
			}()
			<-started
			for at := testPeriod; at < tt.lostAt; at += testPeriod {
				clk.Advance(testPeriod)
				if err := opCtx.Err(); err != nil {
					t.Fatalf("op's context ended at %v with %v (cause %v), want it alive until %v", at, err, context.Cause(opCtx), tt.lostAt)
				}
			}
			clk.Advance(testPeriod) // the tick ends the context before Advance returns
			if opCtx.Err() == nil {
				clk.Advance(testLease)
				<-done
				t.Fatalf("op's context alive after %v, want it ended then", tt.lostAt)
			}
			err := <-done
			if cause := context.Cause(opCtx); !errors.Is(cause, idempotency.ErrLeaseLost) {
				t.Errorf("context.Cause(op's ctx) = %v, want ErrLeaseLost", cause)
			}
			if !errors.Is(err, idempotency.ErrLeaseLost) || !errors.Is(err, context.Canceled) {
				t.Errorf("Do error = %v, want one wrapping ErrLeaseLost and op's context.Canceled", err)
			}
			if n := obs.count(bulwark.EventStoreError, "lease_lost"); n != 1 {
				t.Errorf("%d lease-lost events, want 1", n)
			}
			if tt.wantWrap != nil && !obs.has(func(ev bulwark.Event) bool {
				return ev.Reason == "lease_lost" && errors.Is(ev.Err, tt.wantWrap) && errors.Is(ev.Err, idempotency.ErrLeaseLost)
			}) {
				t.Errorf("lease-lost event does not carry the renewal's error %v", tt.wantWrap)
			}
		})
	}
}

// op completes its key itself, as a transactional completion does (here on
// the MemoryStore, with the Lease from its context), and marks the Lease.
func TestDoCompletedByOp(t *testing.T) {
	complete := func(ctx context.Context, st idempotency.Store, v payment) error {
		l := idempotency.LeaseFromContext(ctx)
		if l == nil {
			return errors.New("no lease in op's context")
		}
		b, err := idempotency.EncodeResult(v)
		if err != nil {
			return err
		}
		if err := st.Complete(ctx, l.Key(), l.Token(), b, l.Retention()); err != nil {
			return err
		}
		l.MarkCompleted()
		return nil
	}
	t.Run("then succeeded", func(t *testing.T) {
		clk := fakeClock()
		st := &faultyStore{Store: newStore(t, clk)}
		obs := &events{}
		e := newEngine(t, st, clk, idempotency.Config{Lease: testLease, Observer: obs})
		v, err := idempotency.Do(t.Context(), e, "k", nil, func(ctx context.Context) (payment, error) {
			p := payment{ID: "pay_tx", Amount: 7}
			return p, complete(ctx, st, p)
		})
		require.NoError(t, err)
		require.Equal(t, "pay_tx", v.ID)
		if n := st.completes.Load(); n != 1 {
			t.Errorf("%d Completes, want op's 1 only", n)
		}
		again, err := idempotency.Do(t.Context(), e, "k", nil, func(context.Context) (payment, error) { return payment{ID: "again"}, nil })
		if err != nil || again != v {
			t.Errorf("duplicate = %+v, %v; want op's stored %+v", again, err, v)
		}
		if n := obs.count(bulwark.EventStoreError, ""); n != 0 {
			t.Errorf("%d store-error events, want 0", n)
		}
	})
	t.Run("then failed", func(t *testing.T) {
		// The completion committed, then op failed: the key is done, with
		// what op stored, and the refused release is no error.
		clk := fakeClock()
		st := &faultyStore{Store: newStore(t, clk)}
		obs := &events{}
		e := newEngine(t, st, clk, idempotency.Config{Lease: testLease, Observer: obs})
		boom := errors.New("response write failed")
		_, err := idempotency.Do(t.Context(), e, "k", nil, func(ctx context.Context) (payment, error) {
			if err := complete(ctx, st, payment{ID: "pay_tx"}); err != nil {
				return payment{}, err
			}
			return payment{}, boom
		})
		require.ErrorIs(t, err, boom)
		again, err := idempotency.Do(t.Context(), e, "k", nil, func(context.Context) (payment, error) { return payment{ID: "again"}, nil })
		if err != nil || again.ID != "pay_tx" {
			t.Errorf("duplicate = %+v, %v; want pay_tx stored by op", again, err)
		}
		if n := obs.count(bulwark.EventStoreError, ""); n != 0 {
			t.Errorf("%d store-error events, want 0", n)
		}
	})
	t.Run("rolled back", func(t *testing.T) {
		// op marked the lease, but its transaction rolled back and it
		// failed: the key is released, so a retry runs.
		clk := fakeClock()
		st := &faultyStore{Store: newStore(t, clk)}
		e := newEngine(t, st, clk, idempotency.Config{Lease: testLease})
		_, err := idempotency.Do(t.Context(), e, "k", nil, func(ctx context.Context) (payment, error) {
			idempotency.LeaseFromContext(ctx).MarkCompleted() // the completion's statement ran…
			return payment{}, errors.New("commit failed")     // …and the commit did not
		})
		require.Error(t, err)
		again, err := idempotency.Do(t.Context(), e, "k", nil, func(context.Context) (payment, error) { return payment{ID: "retry"}, nil })
		if err != nil || again.ID != "retry" {
			t.Errorf("retry after a rolled-back completion = %+v, %v; want it to run", again, err)
		}
	})
	t.Run("renewals stop", func(t *testing.T) {
		// Once op completed its key, the Engine stops renewing, so the
		// completed key is not mistaken for a lost lease while op
		// finishes.
		clk := fakeClock()
		st := &faultyStore{Store: newStore(t, clk), extended: make(chan error, 16)}
		obs := &events{}
		e := newEngine(t, st, clk, idempotency.Config{Lease: testLease, Observer: obs})
		completed, release := make(chan struct{}), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			_, err := idempotency.Do(context.Background(), e, "k", nil, func(ctx context.Context) (payment, error) {
				if err := complete(ctx, st, payment{ID: "pay_tx"}); err != nil {
					return payment{}, err
				}
				close(completed)
				<-release
				return payment{ID: "pay_tx"}, context.Cause(ctx)
			})
			done <- err
		}()
		<-completed
		for range 9 {
			clk.Advance(testPeriod)
		}
		close(release)
		require.NoError(t, <-done)
		if len(st.extended) != 0 || obs.count(bulwark.EventStoreError, "") != 0 {
			t.Errorf("%d renewals and %d store-error events after op completed its key, want none", len(st.extended), obs.count(bulwark.EventStoreError, ""))
		}
	})
}

func TestLeaseFromContext(t *testing.T) {
	if l := idempotency.LeaseFromContext(t.Context()); l != nil {
		t.Fatalf("LeaseFromContext of a plain context = %+v, want nil", l)
	}
	clk := fakeClock()
	st := newStore(t, clk)
	e := newEngine(t, st, clk, idempotency.Config{Retention: time.Hour})
	var got *idempotency.Lease
	_, err := idempotency.Do(t.Context(), e, "k", []byte("fp"), func(ctx context.Context) (int, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute) // a derived context carries it too
		defer cancel()
		got = idempotency.LeaseFromContext(ctx)
		rec, err := st.Get(ctx, "k")
		if got == nil || err != nil || got.Key() != "k" || got.Token() != rec.Token || got.Retention() != time.Hour {
			return 0, fmt.Errorf("lease %+v, record %+v, %v; want key k, the record's token and 1h", got, rec, err)
		}
		return 1, nil
	})
	require.NoError(t, err)

	// Unprotected (fail open): no lease.
	bad := &faultyStore{Store: st}
	bad.failClaim.Store(true)
	open := newEngine(t, bad, clk, idempotency.Config{FailOpen: true})
	_, err = idempotency.Do(t.Context(), open, "k2", nil, func(ctx context.Context) (int, error) {
		if l := idempotency.LeaseFromContext(ctx); l != nil {
			return 0, fmt.Errorf("lease of an unprotected run = %+v, want nil", l)
		}
		return 1, nil
	})
	require.NoError(t, err)

	l := idempotency.NewLease("k", 7, time.Minute)
	if l.Key() != "k" || l.Token() != 7 || l.Retention() != time.Minute {
		t.Errorf("NewLease = %q %d %v, want k 7 1m", l.Key(), l.Token(), l.Retention())
	}
	l.MarkCompleted() // records only
}

// A run shorter than the renewer's period costs no timer of its own: however
// many run, the Engine holds at most one.
func TestShortRunsShareOneTimer(t *testing.T) {
	clk := fakeClock()
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{Lease: testLease})
	for i := range 100 {
		_, err := idempotency.Do(t.Context(), e, fmt.Sprint("k", i), nil, func(context.Context) (int, error) { return i, nil })
		require.NoError(t, err)
	}
	if n := clk.Timers(); n != 1 {
		t.Fatalf("%d timers pending after 100 short runs, want the renewer's 1", n)
	}
	clk.Advance(testPeriod) // the renewer finds no run and stops
	if n := clk.Timers(); n != 0 {
		t.Fatalf("%d timers pending once idle, want 0", n)
	}
}

// The handler completes its key in its own "transaction" with the response
// it then writes, encoded by EncodeResponse: duplicates get it replayed
// exactly as a response the middleware recorded, and the middleware stores
// nothing more.
func TestMiddlewareCompletedByHandler(t *testing.T) {
	clk := fakeClock()
	st := &faultyStore{Store: newStore(t, clk)}
	obs := &events{}
	e := newEngine(t, st, clk, idempotency.Config{Observer: obs})
	mw, err := idempotency.Middleware(idempotency.HTTPConfig{Engine: e})
	require.NoError(t, err)
	var runs atomic.Int64
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		body := []byte(`{"order":"ord_1"}`)
		hdr := http.Header{"Content-Type": {"application/json"}, "Location": {"/orders/ord_1"}}
		l := idempotency.LeaseFromContext(r.Context())
		resp, err := idempotency.EncodeResponse(http.StatusCreated, hdr, body)
		if err == nil {
			err = st.Complete(r.Context(), l.Key(), l.Token(), resp, l.Retention())
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		l.MarkCompleted()
		for k, v := range hdr {
			w.Header()[k] = v
		}
		w.Header().Set("X-Not-Replayed", "1")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	}))
	serve := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/orders", strings.NewReader("x"))
		r.Header.Set("Idempotency-Key", "k")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	first := serve()
	require.Equal(t, http.StatusCreated, first.Code)
	dup := serve()
	if dup.Code != http.StatusCreated || dup.Body.String() != `{"order":"ord_1"}` ||
		dup.Header().Get("Location") != "/orders/ord_1" || dup.Header().Get("Content-Type") != "application/json" ||
		dup.Header().Get("Idempotent-Replayed") != "true" || dup.Header().Get("X-Not-Replayed") != "" {
		t.Errorf("duplicate = %d %v %q, want the encoded 201 replayed", dup.Code, dup.Header(), dup.Body)
	}
	if runs.Load() != 1 || st.completes.Load() != 1 || obs.count(bulwark.EventStoreError, "") != 0 {
		t.Errorf("handler ran %d times, %d Completes, %d store errors; want 1, 1 (the handler's), 0",
			runs.Load(), st.completes.Load(), obs.count(bulwark.EventStoreError, ""))
	}
}

// EncodeResponse stores what the middleware itself stores for the same
// response, byte for byte, when given the headers the middleware replays.
func TestEncodeResponseMatchesRecorded(t *testing.T) {
	clk := fakeClock()
	st := newStore(t, clk)
	e := newEngine(t, st, clk, idempotency.Config{})
	mw, err := idempotency.Middleware(idempotency.HTTPConfig{Engine: e, ReplayHeaders: []string{"Content-Type", "Location"}})
	require.NoError(t, err)
	var key string // the store key, which the Lease tells
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key = idempotency.LeaseFromContext(r.Context()).Key()
		(&orders{}).ServeHTTP(w, r)
	}))
	r := httptest.NewRequest("POST", "/orders", strings.NewReader("x"))
	r.Header.Set("Idempotency-Key", "k")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	rec, err := st.Get(t.Context(), key)
	require.NoError(t, err)
	body, _ := io.ReadAll(w.Result().Body)
	enc, err := idempotency.EncodeResponse(w.Code, http.Header{
		"Content-Type": {w.Header().Get("Content-Type")}, "Location": {w.Header().Get("Location")},
	}, body)
	require.NoError(t, err)
	if string(enc) != string(rec.Value) {
		t.Errorf("EncodeResponse = %q, want what the middleware stored, %q", enc, rec.Value)
	}
	for _, status := range []int{0, 101, 199, 1000} {
		if _, err := idempotency.EncodeResponse(status, nil, nil); err == nil {
			t.Errorf("EncodeResponse(%d) error = nil, want one", status)
		}
	}
}

// EncodeResult and EncodeError store what Do replays.
func TestEncodeResultAndError(t *testing.T) {
	clk := fakeClock()
	st := newStore(t, clk)
	e := newEngine(t, st, clk, idempotency.Config{})
	store := func(key string, value []byte) {
		c, err := st.Claim(t.Context(), key, nil, time.Minute)
		require.NoError(t, err)
		require.NoError(t, st.Complete(t.Context(), key, c.Token, value, time.Hour))
	}
	v, err := idempotency.EncodeResult(payment{ID: "pay_9", Amount: 3})
	require.NoError(t, err)
	store("result", v)
	got, err := idempotency.Do(t.Context(), e, "result", nil, func(context.Context) (payment, error) { return payment{}, nil })
	if err != nil || got != (payment{ID: "pay_9", Amount: 3}) {
		t.Errorf("Do of an EncodeResult record = %+v, %v; want pay_9", got, err)
	}
	store("error", idempotency.EncodeError(errors.New("card declined")))
	_, err = idempotency.Do(t.Context(), e, "error", nil, func(context.Context) (payment, error) { return payment{}, nil })
	var re *idempotency.ReplayedError
	if !errors.As(err, &re) || re.Message != "card declined" || !bulwark.IsPermanent(err) {
		t.Errorf("Do of an EncodeError record = %v, want a permanent ReplayedError \"card declined\"", err)
	}
	if _, err := idempotency.EncodeResult(func() {}); err == nil {
		t.Errorf("EncodeResult of a func: error = nil, want one")
	}
}

// The run's context behaves as a context.WithCancelCause of the caller's,
// whenever the operation first looks at it: before or after its lease is
// lost, after the run, and when the caller's context ends.
func TestRunContext(t *testing.T) {
	t.Run("lost before first look", func(t *testing.T) {
		clk := fakeClock()
		st := &faultyStore{Store: newStore(t, clk)}
		st.failExtend.Store(&errOutage)
		e := newEngine(t, st, clk, idempotency.Config{Lease: testLease})
		started, looked := make(chan struct{}), make(chan struct{})
		seen := make(chan [2]error, 1)
		go func() {
			_, _ = idempotency.Do(context.Background(), e, "k", nil, func(ctx context.Context) (int, error) {
				close(started)
				<-looked // the lease is lost meanwhile; ctx was never asked
				seen <- [2]error{ctx.Err(), context.Cause(ctx)}
				<-ctx.Done()
				return 0, nil
			})
		}()
		<-started
		clk.Advance(4 * testPeriod) // renewals fail until the lease is lost
		close(looked)
		if got := <-seen; !errors.Is(got[0], context.Canceled) || !errors.Is(got[1], idempotency.ErrLeaseLost) {
			t.Errorf("Err, Cause = %v, %v; want context.Canceled, ErrLeaseLost", got[0], got[1])
		}
	})
	t.Run("after the run", func(t *testing.T) {
		clk := fakeClock()
		e := newEngine(t, newStore(t, clk), clk, idempotency.Config{})
		var kept context.Context
		_, err := idempotency.Do(t.Context(), e, "k", nil, func(ctx context.Context) (int, error) { kept = ctx; return 1, nil })
		require.NoError(t, err)
		select {
		case <-kept.Done():
		default:
			t.Fatal("Done of a run's context after the run: not closed")
		}
		if !errors.Is(kept.Err(), context.Canceled) || !errors.Is(context.Cause(kept), context.Canceled) {
			t.Errorf("after the run: Err, Cause = %v, %v; want context.Canceled", kept.Err(), context.Cause(kept))
		}
	})
	t.Run("caller's context ends", func(t *testing.T) {
		clk := fakeClock()
		e := newEngine(t, newStore(t, clk), clk, idempotency.Config{})
		type key struct{}
		parent, cancel := context.WithCancelCause(context.WithValue(t.Context(), key{}, "v"))
		gone := errors.New("client gone")
		_, err := idempotency.Do(parent, e, "k", nil, func(ctx context.Context) (int, error) {
			derived, stop := context.WithTimeout(ctx, time.Hour) // derives without a goroutine
			defer stop()
			if ctx.Value(key{}) != "v" || ctx.Err() != nil {
				return 0, fmt.Errorf("before the cancel: value %v, Err %v", ctx.Value(key{}), ctx.Err())
			}
			cancel(gone)
			<-derived.Done()
			if !errors.Is(context.Cause(ctx), gone) || !errors.Is(context.Cause(derived), gone) {
				return 0, fmt.Errorf("Cause = %v, derived %v; want the caller's", context.Cause(ctx), context.Cause(derived))
			}
			return 1, nil
		})
		require.NoError(t, err)
	})
}

// Many goroutines look at a run's context while its lease is lost.
func TestRunContextConcurrentSafe(t *testing.T) {
	clk := fakeClock()
	st := &faultyStore{Store: newStore(t, clk)}
	st.failExtend.Store(&idempotency.ErrFenced)
	e := newEngine(t, st, clk, idempotency.Config{Lease: testLease})
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := idempotency.Do(context.Background(), e, "k", nil, func(ctx context.Context) (int, error) {
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					if i%2 == 0 {
						<-ctx.Done()
					} else {
						_ = ctx.Err()
						_ = context.Cause(ctx)
						_ = idempotency.LeaseFromContext(ctx)
						<-ctx.Done()
					}
				})
			}
			close(started)
			wg.Wait()
			return 0, context.Cause(ctx)
		})
		done <- err
	}()
	<-started
	clk.Advance(2 * testPeriod)
	if err := <-done; !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Fatalf("Do = %v, want ErrLeaseLost", err)
	}
}

// A handler that completed its key, then answered 500 (its commit failed or
// a later step did): if the completion committed, duplicates get it
// replayed; if it rolled back, the key is free for a retry. Neither is a
// store error.
func TestMiddlewareCompletedThenFailed(t *testing.T) {
	for _, committed := range []bool{true, false} {
		t.Run(fmt.Sprintf("committed=%v", committed), func(t *testing.T) {
			clk := fakeClock()
			st := &faultyStore{Store: newStore(t, clk)}
			obs := &events{}
			e := newEngine(t, st, clk, idempotency.Config{Observer: obs})
			mw, err := idempotency.Middleware(idempotency.HTTPConfig{Engine: e})
			require.NoError(t, err)
			var runs atomic.Int64
			h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if runs.Add(1) > 1 {
					w.WriteHeader(http.StatusAccepted) // the retry
					return
				}
				l := idempotency.LeaseFromContext(r.Context())
				if committed {
					resp, _ := idempotency.EncodeResponse(http.StatusCreated, nil, []byte("created"))
					require.NoError(t, st.Complete(r.Context(), l.Key(), l.Token(), resp, l.Retention()))
				}
				l.MarkCompleted()
				w.WriteHeader(http.StatusInternalServerError)
			}))
			serve := func() *httptest.ResponseRecorder {
				r := httptest.NewRequest("POST", "/orders", strings.NewReader("x"))
				r.Header.Set("Idempotency-Key", "k")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				return w
			}
			require.Equal(t, http.StatusInternalServerError, serve().Code)
			dup := serve()
			switch {
			case committed && (dup.Code != http.StatusCreated || dup.Body.String() != "created"):
				t.Errorf("duplicate after a committed completion = %d %q, want the stored 201", dup.Code, dup.Body)
			case !committed && dup.Code != http.StatusAccepted:
				t.Errorf("retry after a rolled-back completion = %d, want the handler's run (202)", dup.Code)
			}
			if n := obs.count(bulwark.EventStoreError, ""); n != 0 {
				t.Errorf("%d store-error events, want 0", n)
			}
		})
	}
}
