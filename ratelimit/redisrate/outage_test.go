package redisrate

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/redis/go-redis/v9"
)

// faultClient returns a client through p that gives up quickly.
func faultClient(t *testing.T, p *idempotencytest.FaultProxy) *redis.Client {
	return newClient(t, p.Addr(), func(o *redis.Options) {
		o.MaxRetries = 1
		o.DialTimeout = 200 * time.Millisecond
	})
}

// During an outage a Limiter that fails open lets requests through and one
// that fails closed refuses them with ErrUnavailable (the middleware answers
// 503, Do does not run the call); both report EventStoreError; once Redis is
// back, the limits are where they were.
func TestOutageFailOpenOrClosed(t *testing.T) {
	rdb := serverClient(t)
	for _, failOpen := range []bool{true, false} {
		t.Run(map[bool]string{true: "open", false: "closed"}[failOpen], func(t *testing.T) {
			p := idempotencytest.NewFaultProxy(t, redisAddr(t))
			rec := &recorder{}
			// The outage is a cut: its errors come at once. The Timeout
			// only has to let the Takes before it through on a loaded
			// machine.
			l := newLimiter(t, faultClient(t, p), Config{Name: "api", Prefix: testPrefix(t, rdb), Rate: 1, Period: time.Hour, Burst: 1,
				FailOpen: failOpen, Observer: rec, Timeout: 5 * time.Second})
			ctx := context.Background()
			if r, err := l.Take(ctx, "k", 1); err != nil || !r.Allowed {
				t.Fatalf("Take before the outage = %+v, %v", r, err)
			}
			if r, err := l.Take(ctx, "k", 1); err != nil || r.Allowed {
				t.Fatalf("second Take = %+v, %v; want refused", r, err)
			}

			p.Cut()
			r, err := l.Take(ctx, "k", 1)
			if failOpen {
				if err != nil || !r.Allowed {
					t.Fatalf("Take during the outage, failing open = %+v, %v; want allowed", r, err)
				}
			} else if !errors.Is(err, ErrUnavailable) || r.Allowed {
				t.Fatalf("Take during the outage, failing closed = %+v, %v; want an error wrapping ErrUnavailable", r, err)
			}
			ran := false
			err = l.Do(ctx, "k", func(context.Context) error { ran = true; return nil })
			if ran != failOpen || (failOpen && err != nil) || (!failOpen && !errors.Is(err, ErrUnavailable)) {
				t.Fatalf("Do during the outage = %v (ran %v), want ran = %v", err, ran, failOpen)
			}
			mw, _ := ratelimit.Middleware(ratelimit.HTTPConfig{Limiter: l})
			w := httptest.NewRecorder()
			mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
			if want := map[bool]int{true: 200, false: 503}[failOpen]; w.Code != want {
				t.Fatalf("middleware during the outage: %d, want %d", w.Code, want)
			}
			want := map[bool]string{true: "fail-open", false: "fail-closed"}[failOpen]
			var outages int
			for _, e := range rec.events() {
				if e.Kind == bulwark.EventStoreError {
					outages++
					if e.Reason != want || e.Err == nil || e.Name != "api" {
						t.Errorf("event %+v, want Reason %s with the error", e, want)
					}
				}
			}
			if outages != 3 {
				t.Errorf("%d EventStoreError, want 3", outages)
			}

			p.Restore()
			var last error
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if r, last = l.Take(ctx, "k", 1); last == nil {
					break
				}
			}
			if last != nil || r.Allowed {
				t.Fatalf("Take after the outage = %+v, %v; want refused: the bucket in Redis is still empty", r, last)
			}
		})
	}
}

// A black hole (no answer at all) costs each decision at most Timeout.
func TestOutageBlackhole(t *testing.T) {
	rdb := serverClient(t)
	p := idempotencytest.NewFaultProxy(t, redisAddr(t))
	// 1 s: the Take before the black hole must pass on a loaded machine.
	l := newLimiter(t, faultClient(t, p), Config{Prefix: testPrefix(t, rdb), Rate: 10, Timeout: time.Second})
	if _, err := l.Take(context.Background(), "k", 1); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	defer p.Restore()
	start := time.Now()
	_, err := l.Take(context.Background(), "k", 1)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Take into a black hole = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Take into a black hole took %v, want about Timeout (1s)", d)
	}
}

// With a Fallback, the outage's decisions are the local limiter's.
func TestOutageFallback(t *testing.T) {
	rdb := serverClient(t)
	p := idempotencytest.NewFaultProxy(t, redisAddr(t))
	local, err := ratelimit.NewGroup(ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 1, Period: time.Hour, Burst: 2}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	l := newLimiter(t, faultClient(t, p), Config{Prefix: testPrefix(t, rdb), Rate: 100, Fallback: local, Observer: rec, Timeout: 300 * time.Millisecond})
	p.Cut()
	defer p.Restore()
	var allowed []bool
	for range 3 {
		r, err := l.Take(context.Background(), "k", 1)
		if err != nil {
			t.Fatal(err)
		}
		allowed = append(allowed, r.Allowed)
	}
	if !allowed[0] || !allowed[1] || allowed[2] {
		t.Fatalf("decisions during the outage = %v, want the local limiter's [true true false]", allowed)
	}
	if evs := rec.events(); len(evs) == 0 || evs[0].Reason != "fallback" {
		t.Fatalf("events = %+v, want EventStoreError with Reason fallback", evs)
	}
}
