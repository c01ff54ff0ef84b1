package limit_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bulwark-go/bulwark/limit"
)

func TestParseRules(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []limit.Rule
	}{
		{"", nil},
		{" , \n ", nil},
		{"GET /orders = critical", []limit.Rule{{Method: "GET", Path: "/orders", Criticality: limit.Critical}}},
		{"/reports/=sheddable, * = normal\nPOST /orders=CRITICAL", []limit.Rule{
			{Path: "/reports/", Criticality: limit.Sheddable},
			{Criticality: limit.Normal},
			{Method: "POST", Path: "/orders", Criticality: limit.Critical},
		}},
	} {
		got, err := limit.ParseRules(tc.in)
		require.NoError(t, err, "ParseRules(%q)", tc.in)
		require.Equal(t, tc.want, got, "ParseRules(%q)", tc.in)
	}
	for _, in := range []string{"/orders", "/orders = urgent", "get /orders = critical", "GET /a /b = normal", "orders = normal", "= critical"} {
		if _, err := limit.ParseRules(in); !errors.Is(err, limit.ErrInvalidConfig) {
			t.Errorf("ParseRules(%q) error = %v, want ErrInvalidConfig", in, err)
		}
	}
}

func FuzzParseRules(f *testing.F) {
	for _, s := range []string{"GET /orders = critical, /reports/ = sheddable", "* = normal", "=", "GET  = x", "\n,\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rules, err := limit.ParseRules(s)
		if err != nil {
			if !errors.Is(err, limit.ErrInvalidConfig) {
				t.Fatalf("ParseRules(%q) error %v does not wrap ErrInvalidConfig", s, err)
			}
			return
		}
		// What it reads, it writes back the same.
		var parts []string
		for _, r := range rules {
			if r.Criticality < limit.Sheddable || r.Criticality > limit.Critical {
				t.Fatalf("ParseRules(%q) gave criticality %d", s, r.Criticality)
			}
			parts = append(parts, r.String())
		}
		again, err := limit.ParseRules(strings.Join(parts, ", "))
		if err != nil || len(again) != len(rules) {
			t.Fatalf("ParseRules(%q) = %v; reading its String back: %v, %v", s, rules, again, err)
		}
		for i := range rules {
			if again[i] != rules[i] {
				t.Fatalf("rule %d of %q: %+v, then %+v", i, s, rules[i], again[i])
			}
		}
	})
}

func FuzzParseCriticality(f *testing.F) {
	for _, s := range []string{"critical", " Normal ", "SHEDDABLE", "", "urgent"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := limit.ParseCriticality(s)
		if !ok {
			if c != limit.Normal {
				t.Fatalf("ParseCriticality(%q) = %v, false; want Normal", s, c)
			}
			return
		}
		if back, ok := limit.ParseCriticality(c.String()); !ok || back != c {
			t.Fatalf("ParseCriticality(%q) = %v, but its String reads back as %v, %v", s, c, back, ok)
		}
	})
}

type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func TestMiddleware(t *testing.T) {
	b := newBulkhead(t, limit.BulkheadConfig{Limit: 2, TenantShare: 0.5})
	rules, err := limit.ParseRules("GET /orders = critical, /reports/ = sheddable")
	require.NoError(t, err)
	mw, err := limit.Middleware(limit.MiddlewareConfig{
		Limiter: b, Rules: rules,
		Tenant: func(r *http.Request) string { return r.Header.Get("X-Tenant") },
	})
	require.NoError(t, err)
	release := make(chan struct{})
	entered := make(chan string, 4)
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := limit.CriticalityFrom(r.Context())
		if got := r.Header.Get(limit.DefaultHeader); got != c.String() {
			t.Errorf("header %s = %q, want %q", limit.DefaultHeader, got, c)
		}
		entered <- r.URL.Path + " " + c.String() + " " + limit.TenantFrom(r.Context())
		if r.URL.Query().Has("hold") {
			<-release
		}
	}))
	serve := func(method, target, tenant string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, target, nil)
		if tenant != "" {
			req.Header.Set("X-Tenant", tenant)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	rec := serve("GET", "/orders/1", "")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "/orders/1 critical ", <-entered)
	serve("POST", "/reports/x", "t1")
	require.Equal(t, "/reports/x sheddable t1", <-entered)
	serve("POST", "/orders", "")
	require.Equal(t, "/orders normal ", <-entered)

	// Tenant t1 holds its share (1 of 2): its next request gets 429.
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve("GET", "/orders?hold", "t1")
	}()
	<-entered
	rec = serve("GET", "/orders", "t1")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	var p problemBody
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
	require.Equal(t, 429, p.Status)
	require.Contains(t, p.Detail, "tenant")

	// Another request fills the bulkhead: the next gets 503.
	done2 := make(chan struct{})
	go func() {
		defer close(done2)
		serve("GET", "/orders?hold", "t2")
	}()
	<-entered
	rec = serve("GET", "/orders", "")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
	require.Equal(t, 503, p.Status)
	require.Equal(t, "", rec.Header().Get("Retry-After"), "a bulkhead without MaxWait has no estimate")
	close(release)
	<-done
	<-done2
	require.Equal(t, 0, b.InFlight())
}

func TestMiddlewareRetryAfterAndOutcomes(t *testing.T) {
	l, clk := newLimiter(t, limit.Config{InitialLimit: 10, MinLimit: 10, MaxLimit: 10})
	drive(t, l, clk, 20, 5, server{base: 1500 * time.Millisecond, knee: 100}, nil) // the median latency is 1.5 s
	mw, err := limit.Middleware(limit.MiddlewareConfig{Limiter: l, TrustHeader: true, Header: "X-Criticality"})
	require.NoError(t, err)
	status := http.StatusOK
	hold := make(chan struct{})
	entered := make(chan limit.Criticality, 16)
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- limit.CriticalityFrom(r.Context())
		if r.URL.Path == "/hold" {
			<-hold
			return
		}
		if r.URL.Path == "/panic" {
			panic(http.ErrAbortHandler)
		}
		w.WriteHeader(status)
	}))
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Criticality", "sheddable")
	h.ServeHTTP(httptest.NewRecorder(), req)
	require.Equal(t, limit.Sheddable, <-entered, "a trusted header wins")

	for _, s := range []int{http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusOK} {
		status = s
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
		<-entered
	}
	func() {
		defer func() { _ = recover() }()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/panic", nil))
	}()
	<-entered
	require.Equal(t, 0, l.InFlight(), "every outcome, a panic too, returned its slot")

	done := make(chan struct{})
	for range 9 { // Normal requests may hold 9 of 10
		go func() {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/hold", nil))
			done <- struct{}{}
		}()
		<-entered
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Equal(t, "2", rec.Header().Get("Retry-After"), "1.5 s, rounded up to whole seconds")
	close(hold)
	for range 9 {
		<-done
	}
	require.Equal(t, 0, l.InFlight())
}

func TestMiddlewareInvalid(t *testing.T) {
	if _, err := limit.Middleware(limit.MiddlewareConfig{}); !errors.Is(err, limit.ErrInvalidConfig) {
		t.Errorf("Middleware without a Limiter: %v, want ErrInvalidConfig", err)
	}
	b := newBulkhead(t, limit.BulkheadConfig{Limit: 1})
	if _, err := limit.Middleware(limit.MiddlewareConfig{Limiter: b, Rules: []limit.Rule{{Criticality: 7}}}); !errors.Is(err, limit.ErrInvalidConfig) {
		t.Errorf("Middleware with criticality 7: %v, want ErrInvalidConfig", err)
	}
}

func TestMiddlewareClientGone(t *testing.T) {
	l, _ := newLimiter(t, limit.Config{})
	mw, err := limit.Middleware(limit.MiddlewareConfig{Limiter: l})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { cancel() }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil).WithContext(ctx))
	require.Equal(t, 0, l.InFlight())
}
