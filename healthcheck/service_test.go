package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

func newService(t *testing.T, cfg ServiceConfig) (*Service, *bulwarktest.Clock) {
	t.Helper()
	clk := bulwarktest.NewClock(time.Time{})
	cfg.Clock = clk
	s, err := NewService(cfg)
	if err != nil {
		t.Fatalf("NewService = %v", err)
	}
	return s, clk
}

// get serves one request and returns the status code and the decoded body.
func get(t *testing.T, h http.Handler, path string) (int, response) {
	t.Helper()
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, path, nil))
	if ct := rr.Header().Get("Content-Type"); ct != "application/health+json" {
		t.Errorf("GET %s: Content-Type %q, want application/health+json", path, ct)
	}
	var resp response
	if err := json.Unmarshal(rr.Body.Bytes(), &resp); err != nil {
		t.Fatalf("GET %s: body %q: %v", path, rr.Body.String(), err)
	}
	return rr.Code, resp
}

func okCheck(context.Context) error   { return nil }
func downCheck(context.Context) error { return errors.New("connection refused") }

func TestServiceReadiness(t *testing.T) {
	tests := []struct {
		name       string
		checks     []Check
		wantCode   int
		wantStatus string
		wantChecks map[string]string // key → status
	}{
		{"no checks", nil, 200, "pass", nil},
		{"all pass", []Check{{Name: "db", Run: okCheck}, {Name: "cache", Run: okCheck, Optional: true}},
			200, "pass", map[string]string{"db:responseTime": "pass", "cache:responseTime": "pass"}},
		{"optional fails: degraded", []Check{{Name: "db", Run: okCheck}, {Name: "cache", Run: downCheck, Optional: true}},
			200, "warn", map[string]string{"db:responseTime": "pass", "cache:responseTime": "warn"}},
		{"required fails", []Check{{Name: "db", Run: downCheck}, {Name: "cache", Run: okCheck, Optional: true}},
			503, "fail", map[string]string{"db:responseTime": "fail", "cache:responseTime": "pass"}},
		{"required and optional fail", []Check{{Name: "db", Run: downCheck}, {Name: "cache", Run: downCheck, Optional: true}},
			503, "fail", map[string]string{"db:responseTime": "fail", "cache:responseTime": "warn"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newService(t, ServiceConfig{Ready: tt.checks, ServiceID: "orders", Version: "1"})
			code, resp := get(t, s, "/readyz")
			if code != tt.wantCode || resp.Status != tt.wantStatus {
				t.Errorf("GET /readyz = %d %q, want %d %q", code, resp.Status, tt.wantCode, tt.wantStatus)
			}
			if resp.ServiceID != "orders" || resp.Version != "1" {
				t.Errorf("serviceId, version = %q, %q, want orders, 1", resp.ServiceID, resp.Version)
			}
			if len(resp.Checks) != len(tt.wantChecks) {
				t.Errorf("checks = %v, want %v", resp.Checks, tt.wantChecks)
			}
			for k, want := range tt.wantChecks {
				d := resp.Checks[k]
				if len(d) != 1 || d[0].Status != want {
					t.Errorf("checks[%q] = %+v, want status %q", k, d, want)
					continue
				}
				if (want == "pass") != (d[0].Output == "") {
					t.Errorf("checks[%q].output = %q; want an output exactly when not passing", k, d[0].Output)
				}
				if d[0].ObservedUnit != "ms" || d[0].Time == "" {
					t.Errorf("checks[%q] = %+v, want observedUnit ms and a time", k, d[0])
				}
			}
		})
	}
}

func TestServiceCache(t *testing.T) {
	var runs atomic.Int32
	s, clk := newService(t, ServiceConfig{Ready: []Check{{Name: "db", TTL: 5 * time.Second,
		Run: func(context.Context) error { runs.Add(1); return nil }}}})
	get(t, s, "/readyz")
	clk.Advance(5*time.Second - time.Millisecond)
	get(t, s, "/readyz")
	if got := runs.Load(); got != 1 {
		t.Errorf("runs within the TTL = %d, want 1", got)
	}
	clk.Advance(time.Millisecond)
	get(t, s, "/readyz")
	if got := runs.Load(); got != 2 {
		t.Errorf("runs after the TTL = %d, want 2", got)
	}
}

func TestServiceCheckTimeout(t *testing.T) {
	started := make(chan struct{})
	s, clk := newService(t, ServiceConfig{Ready: []Check{{Name: "db", Timeout: 3 * time.Second,
		Run: func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}}}})
	type result struct {
		code int
		resp response
	}
	done := make(chan result)
	go func() {
		code, resp := get(t, s, "/readyz")
		done <- result{code, resp}
	}()
	<-started
	clk.Advance(3*time.Second - time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("GET /readyz answered %d before the check's timeout", r.code)
	default:
	}
	clk.Advance(time.Millisecond)
	r := <-done
	if r.code != 503 {
		t.Errorf("GET /readyz with a check past its timeout = %d, want 503", r.code)
	}
	if d := r.resp.Checks["db:responseTime"]; len(d) != 1 || !strings.Contains(d[0].Output, "deadline exceeded") ||
		d[0].ObservedValue != 3000 {
		t.Errorf("checks = %+v, want a failure after 3000 ms naming the deadline", d)
	}
}

func TestServiceSharesOneRun(t *testing.T) {
	var runs atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	s, _ := newService(t, ServiceConfig{Ready: []Check{{Name: "db",
		Run: func(context.Context) error {
			if runs.Add(1) == 1 {
				close(started)
			}
			<-release
			return nil
		}}}})
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = get(t, s, "/readyz")
		}()
	}
	<-started
	close(release)
	wg.Wait()
	if got := runs.Load(); got != 1 {
		t.Errorf("runs for 8 concurrent requests = %d, want 1", got)
	}
	for i, c := range codes {
		if c != 200 {
			t.Errorf("request %d = %d, want 200", i, c)
		}
	}
}

func TestServiceCanceledRequestIsNotCached(t *testing.T) {
	var runs atomic.Int32
	s, _ := newService(t, ServiceConfig{Ready: []Check{{Name: "db",
		Run: func(ctx context.Context) error { runs.Add(1); return ctx.Err() }}}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rr := httptest.NewRecorder()
	s.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/readyz", nil).WithContext(ctx))
	code, _ := get(t, s, "/readyz")
	if code != 200 || runs.Load() != 2 {
		t.Errorf("after a canceled request: GET /readyz = %d with %d runs, want 200 with 2 runs", code, runs.Load())
	}
}

func TestServiceDrainFlipsReadinessBeforeShutdown(t *testing.T) {
	rec := newRecorder()
	s, err := NewService(ServiceConfig{Name: "orders", Ready: []Check{{Name: "db", Run: okCheck}}, Observer: rec})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	status := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("/readyz"); got != 200 {
		t.Fatalf("GET /readyz before Drain = %d, want 200", got)
	}
	s.Drain()
	// The server still serves: readiness says to stop sending traffic.
	if got := status("/readyz"); got != 503 {
		t.Errorf("GET /readyz after Drain = %d, want 503", got)
	}
	if got := status("/livez"); got != 200 {
		t.Errorf("GET /livez after Drain = %d, want 200", got)
	}
	var changes []string
	for _, e := range rec.eventsOf(bulwark.EventStateChange) {
		changes = append(changes, e.From+">"+e.To)
	}
	if want := "unknown>pass pass>draining"; strings.Join(changes, " ") != want {
		t.Errorf("state changes = %q, want %q", changes, want)
	}
}

func TestServiceStartup(t *testing.T) {
	s, _ := newService(t, ServiceConfig{Ready: []Check{{Name: "db", Run: downCheck}}})
	if code, _ := get(t, s, "/startupz"); code != 503 {
		t.Errorf("GET /startupz before start = %d, want 503", code)
	}
	get(t, s, "/readyz") // fails: not started by it
	if code, _ := get(t, s, "/startupz"); code != 503 {
		t.Errorf("GET /startupz after a failed /readyz = %d, want 503", code)
	}
	s.MarkStarted()
	if code, _ := get(t, s, "/startupz"); code != 200 {
		t.Errorf("GET /startupz after MarkStarted = %d, want 200", code)
	}

	s2, _ := newService(t, ServiceConfig{Ready: []Check{{Name: "db", Run: okCheck}}})
	get(t, s2, "/readyz")
	if code, _ := get(t, s2, "/startupz"); code != 200 {
		t.Errorf("GET /startupz after /readyz passed = %d, want 200", code)
	}
}

func TestServiceLiveness(t *testing.T) {
	s, _ := newService(t, ServiceConfig{Ready: []Check{{Name: "db", Run: downCheck}}})
	if code, resp := get(t, s.Livez(), "/livez"); code != 200 || resp.Status != "pass" {
		t.Errorf("GET /livez without Live checks = %d %q, want 200 pass", code, resp.Status)
	}
	s2, _ := newService(t, ServiceConfig{Live: []Check{{Name: "deadlock", Run: downCheck}}})
	if code, resp := get(t, s2.Livez(), "/livez"); code != 503 || resp.Status != "fail" {
		t.Errorf("GET /livez with a failing Live check = %d %q, want 503 fail", code, resp.Status)
	}
}

func TestServiceRouting(t *testing.T) {
	s, _ := newService(t, ServiceConfig{})
	tests := []struct {
		method, path string
		wantCode     int
		wantBody     bool
	}{
		{"GET", "/startupz", 503, true},
		{"GET", "/livez", 200, true},
		{"GET", "/health/readyz", 200, true},
		{"HEAD", "/readyz", 200, false},
		{"GET", "/startupz", 200, true},
		{"POST", "/readyz", 405, true},
		{"GET", "/other", 404, true},
	}
	for _, tt := range tests {
		rr := httptest.NewRecorder()
		s.ServeHTTP(rr, httptest.NewRequest(tt.method, tt.path, nil))
		if rr.Code != tt.wantCode || (rr.Body.Len() > 0) != tt.wantBody {
			t.Errorf("%s %s = %d with %d body bytes, want %d (body: %v)", tt.method, tt.path, rr.Code, rr.Body.Len(), tt.wantCode, tt.wantBody)
		}
	}
}

func TestNewServiceErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  ServiceConfig
	}{
		{"no name", ServiceConfig{Ready: []Check{{Run: okCheck}}}},
		{"colon in name", ServiceConfig{Ready: []Check{{Name: "db:main", Run: okCheck}}}},
		{"duplicate", ServiceConfig{Ready: []Check{{Name: "db", Run: okCheck}, {Name: "db", Run: okCheck}}}},
		{"no run", ServiceConfig{Live: []Check{{Name: "db"}}}},
		{"negative timeout", ServiceConfig{Ready: []Check{{Name: "db", Run: okCheck, Timeout: -1}}}},
		{"negative ttl", ServiceConfig{Ready: []Check{{Name: "db", Run: okCheck, TTL: -1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewService(tt.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("NewService(%s) = %v, want an error wrapping ErrInvalidConfig", tt.name, err)
			}
		})
	}
}

func TestServiceConcurrentSafe(t *testing.T) {
	var flip atomic.Bool
	s, clk := newService(t, ServiceConfig{Ready: []Check{
		{Name: "db", TTL: time.Millisecond, Run: func(context.Context) error {
			if flip.Load() {
				return errors.New("down")
			}
			return nil
		}},
		{Name: "cache", Optional: true, Run: okCheck},
	}})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				rr := httptest.NewRecorder()
				s.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, []string{"/readyz", "/livez", "/startupz"}[i%3], nil))
				if g == 0 {
					clk.Advance(time.Millisecond)
					flip.Store(i%7 == 0)
				}
				if g == 1 && i == 50 {
					s.Drain()
				}
			}
		}()
	}
	wg.Wait()
	if code, _ := get(t, s, "/readyz"); code != 503 {
		t.Errorf("GET /readyz after Drain = %d, want 503", code)
	}
}

func TestServiceResultChangeAfterTTL(t *testing.T) {
	var down atomic.Bool
	s, clk := newService(t, ServiceConfig{Ready: []Check{{Name: "db", TTL: 5 * time.Second,
		Run: func(context.Context) error {
			if down.Load() {
				return errors.New("down")
			}
			return nil
		}}}})
	want := []struct {
		down    bool
		advance time.Duration
		code    int
	}{
		{false, 0, 200},
		{true, time.Second, 200}, // cached
		{true, 4 * time.Second, 503},
		{true, time.Second, 503},
		{false, 4 * time.Second, 200},
	}
	for i, w := range want {
		down.Store(w.down)
		clk.Advance(w.advance)
		if code, _ := get(t, s, "/readyz"); code != w.code {
			t.Errorf("step %d: GET /readyz = %d, want %d", i, code, w.code)
		}
	}
}
