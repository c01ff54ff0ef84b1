package ratelimit_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/ratelimit"
)

func TestMiddleware(t *testing.T) {
	g, clk := newGroup(t, ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 2, Period: time.Minute, Burst: 2}})
	mw, err := ratelimit.Middleware(ratelimit.HTTPConfig{
		Limiter: g,
		Key:     func(r *http.Request) string { return r.Header.Get("X-Tenant") },
		Headers: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	served := 0
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served++ }))
	get := func(tenant string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/orders", nil)
		req.Header.Set("X-Tenant", tenant)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for i, want := range []string{`"default";r=1;t=30`, `"default";r=0;t=60`} {
		rec := get("acme")
		if rec.Code != http.StatusOK || rec.Header().Get("RateLimit") != want {
			t.Fatalf("request %d: %d RateLimit %q, want 200 %q", i, rec.Code, rec.Header().Get("RateLimit"), want)
		}
		if got, want := rec.Header().Get("RateLimit-Policy"), `"default";q=2;w=60`; got != want {
			t.Fatalf("RateLimit-Policy = %q, want %q", got, want)
		}
	}
	clk.Advance(10 * time.Second)
	rec := get("acme")
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("third request: %d, want 429", rec.Code)
	}
	if got := rec.Header().Get("Retry-After"); got != "20" {
		t.Errorf("Retry-After = %q, want 20 (the next token in 20 s)", got)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/problem+json" {
		t.Errorf("Content-Type = %q", got)
	}
	var p struct {
		Type, Title, Detail string
		Status              int
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	if p.Status != 429 || p.Title != "Too Many Requests" || p.Type != "about:blank" || p.Detail == "" {
		t.Errorf("problem = %+v", p)
	}
	if served != 2 {
		t.Fatalf("handler served %d, want 2", served)
	}
	if rec := get("other"); rec.Code != http.StatusOK {
		t.Fatalf("another tenant: %d, want 200", rec.Code)
	}
}

func TestMiddlewareCostAboveBurst(t *testing.T) {
	g, _ := newGroup(t, ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 5}})
	mw, err := ratelimit.Middleware(ratelimit.HTTPConfig{Limiter: g, Cost: func(*http.Request) int { return 6 }})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	mw(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "" || rec.Header().Get("RateLimit") != "" {
		t.Fatalf("cost above burst: %d Retry-After %q RateLimit %q, want 429 without Retry-After (and no RateLimit without Headers)",
			rec.Code, rec.Header().Get("Retry-After"), rec.Header().Get("RateLimit"))
	}
}

// A sub-second window is advertised per whole second.
func TestMiddlewarePolicyScaled(t *testing.T) {
	g, _ := newGroup(t, ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 100, Burst: 10}})
	mw, err := ratelimit.Middleware(ratelimit.HTTPConfig{Limiter: g, Headers: true, PolicyName: "per-tenant"})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	mw(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if got, want := rec.Header().Get("RateLimit-Policy"), `"per-tenant";q=100;w=1`; got != want {
		t.Fatalf("RateLimit-Policy = %q, want %q", got, want)
	}
}

type failingTaker struct{}

func (failingTaker) Take(context.Context, string, int) (ratelimit.Result, error) {
	return ratelimit.Result{}, errors.New("connection refused")
}

func TestMiddlewareLimiterError(t *testing.T) {
	mw, err := ratelimit.Middleware(ratelimit.HTTPConfig{Limiter: failingTaker{}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("handler ran") })).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("limiter error: %d %q, want 503 problem+json", rec.Code, rec.Header().Get("Content-Type"))
	}
}

func TestMiddlewareInvalidConfig(t *testing.T) {
	g, _ := newGroup(t, ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 5}})
	for _, cfg := range []ratelimit.HTTPConfig{{}, {Limiter: g, PolicyName: `a"b`}, {Limiter: g, PolicyName: "é"}} {
		if _, err := ratelimit.Middleware(cfg); !errors.Is(err, ratelimit.ErrInvalidConfig) {
			t.Errorf("Middleware(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}
