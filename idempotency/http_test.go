package idempotency_test

import (
	"bytes"
	"context"
	"encoding/json"
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
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/stretchr/testify/require"
)

// orders is a handler that creates orders: each run creates a new one.
type orders struct {
	runs   atomic.Int64
	status int           // answer with this status; 0 means 201
	block  chan struct{} // if not nil, each run waits for it
	start  chan struct{} // if not nil, closed by the first run
	once   sync.Once
	body   string // if set, the answer's body instead of the order
}

func (o *orders) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := o.runs.Add(1)
	if o.start != nil {
		o.once.Do(func() { close(o.start) })
	}
	if o.block != nil {
		<-o.block
	}
	in, _ := io.ReadAll(r.Body)
	status := o.status
	if status == 0 {
		status = http.StatusCreated
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", fmt.Sprintf("/orders/%d", n))
	w.Header().Set("Set-Cookie", "session=secret")
	w.WriteHeader(status)
	if o.body != "" {
		io.WriteString(w, o.body)
		return
	}
	fmt.Fprintf(w, `{"order":%d,"request":%q}`, n, in)
}

type server struct {
	clk     *bulwarktest.Clock
	store   *faultyStore
	engine  *idempotency.Engine
	handler http.Handler
	obs     *events
}

func newServer(t *testing.T, next http.Handler, ecfg idempotency.Config, hcfg idempotency.HTTPConfig) *server {
	t.Helper()
	clk := fakeClock()
	s := &server{clk: clk, store: &faultyStore{Store: newStore(t, clk)}, obs: &events{}}
	ecfg.Observer = s.obs
	s.engine = newEngine(t, s.store, clk, ecfg)
	hcfg.Engine = s.engine
	mw, err := idempotency.Middleware(hcfg)
	require.NoError(t, err)
	s.handler = mw(next)
	return s
}

type req struct {
	method, target, body string
	keys                 []string // Idempotency-Key header values
	tenant               string
}

func post(key, body string) req {
	return req{method: "POST", target: "/orders", body: body, keys: []string{key}}
}

func (s *server) do(r req) *httptest.ResponseRecorder {
	hr := httptest.NewRequest(r.method, r.target, strings.NewReader(r.body))
	for _, k := range r.keys {
		hr.Header.Add("Idempotency-Key", k)
	}
	if r.tenant != "" {
		hr.Header.Set("X-Tenant", r.tenant)
	}
	w := httptest.NewRecorder()
	s.handler.ServeHTTP(w, hr)
	return w
}

// problemOf checks that w is a problem+json answer with status and returns
// its detail.
func problemOf(t *testing.T, w *httptest.ResponseRecorder, status int) string {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status = %d, want %d; body %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
	if p.Status != status || p.Title != http.StatusText(status) || p.Type != "about:blank" || p.Detail == "" {
		t.Fatalf("problem = %+v, want status %d with its title and a detail", p, status)
	}
	return p.Detail
}

func TestMiddlewareValidates(t *testing.T) {
	clk := fakeClock()
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{})
	tests := []struct {
		name string
		cfg  idempotency.HTTPConfig
		want string
	}{
		{"nil engine", idempotency.HTTPConfig{}, "Engine is nil"},
		{"negative key length", idempotency.HTTPConfig{Engine: e, MaxKeyLength: -1}, "MaxKeyLength"},
		{"negative request body", idempotency.HTTPConfig{Engine: e, MaxRequestBody: -1}, "MaxRequestBody"},
		{"negative stored body", idempotency.HTTPConfig{Engine: e, MaxStoredBody: -1}, "MaxStoredBody"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mw, err := idempotency.Middleware(tt.cfg)
			if !errors.Is(err, idempotency.ErrInvalidConfig) || mw != nil || !contains(err.Error(), tt.want) {
				t.Fatalf("Middleware(%+v) error = %v, want ErrInvalidConfig containing %q", tt.cfg, err, tt.want)
			}
		})
	}
}

func TestMiddlewareKeys(t *testing.T) {
	long := strings.Repeat("k", 256)
	tests := []struct {
		name       string
		r          req
		allowMiss  bool
		wantStatus int
		wantRun    bool
	}{
		{"bare key", post("order-1", "{}"), false, http.StatusCreated, true},
		{"quoted key (sf-string)", post(`"8e03978e-40d5-43e8-bc93-6894a57f9324"`, "{}"), false, http.StatusCreated, true},
		{"quoted key with escapes", post(`"a \"b\" \\c"`, "{}"), false, http.StatusCreated, true},
		{"255 bytes", post(long[:255], "{}"), false, http.StatusCreated, true},
		{"256 bytes", post(long, "{}"), false, http.StatusBadRequest, false},
		{"missing", req{method: "POST", target: "/orders"}, false, http.StatusBadRequest, false},
		{"missing, allowed", req{method: "POST", target: "/orders"}, true, http.StatusCreated, true},
		{"empty", post("", "{}"), false, http.StatusBadRequest, false},
		{"empty quoted", post(`""`, "{}"), false, http.StatusBadRequest, false},
		{"space inside bare", post("a b", "{}"), false, http.StatusBadRequest, false},
		{"comma (a list)", post("a,b", "{}"), false, http.StatusBadRequest, false},
		{"non-ASCII", post("clé", "{}"), false, http.StatusBadRequest, false},
		{"control byte", post("a\x01", "{}"), false, http.StatusBadRequest, false},
		{"unterminated quote", post(`"abc`, "{}"), false, http.StatusBadRequest, false},
		{"text after quote", post(`"abc"d`, "{}"), false, http.StatusBadRequest, false},
		{"bad escape", post(`"a\b"`, "{}"), false, http.StatusBadRequest, false},
		{"two headers", req{method: "POST", target: "/orders", keys: []string{"a", "b"}}, false, http.StatusBadRequest, false},
		{"bad key on a GET passes", req{method: "GET", target: "/orders", keys: []string{"a b"}}, false, http.StatusCreated, true},
		{"PATCH needs a key", req{method: "PATCH", target: "/orders/1"}, false, http.StatusBadRequest, false},
		{"PUT is not covered", req{method: "PUT", target: "/orders/1"}, false, http.StatusCreated, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &orders{}
			s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{AllowMissingKey: tt.allowMiss})
			w := s.do(tt.r)
			if tt.wantStatus == http.StatusBadRequest {
				problemOf(t, w, http.StatusBadRequest)
				if n := s.obs.count(bulwark.EventRejected, ""); n != 1 {
					t.Errorf("%d rejected events, want 1", n)
				}
			} else if w.Code != tt.wantStatus {
				t.Fatalf("%s %s with keys %q: status %d, want %d", tt.r.method, tt.r.target, tt.r.keys, w.Code, tt.wantStatus)
			}
			if ran := h.runs.Load() == 1; ran != tt.wantRun {
				t.Errorf("handler ran = %v, want %v", ran, tt.wantRun)
			}
		})
	}
}

func TestMiddlewareReplay(t *testing.T) {
	h := &orders{}
	s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{})
	first := s.do(post("k1", `{"item":"tea"}`))
	require.Equal(t, http.StatusCreated, first.Code)
	if first.Header().Get("Idempotent-Replayed") != "" {
		t.Errorf("first response has Idempotent-Replayed")
	}
	for i := range 3 {
		again := s.do(post("k1", `{"item":"tea"}`))
		if again.Code != first.Code || again.Body.String() != first.Body.String() {
			t.Fatalf("replay #%d = %d %q, want %d %q", i, again.Code, again.Body, first.Code, first.Body)
		}
		for _, hdr := range []string{"Content-Type", "Location"} {
			if got, want := again.Header().Get(hdr), first.Header().Get(hdr); got != want {
				t.Errorf("replay header %s = %q, want %q", hdr, got, want)
			}
		}
		if got := again.Header().Get("Idempotent-Replayed"); got != "true" {
			t.Errorf("Idempotent-Replayed = %q, want true", got)
		}
		if got := again.Header().Get("Set-Cookie"); got != "" {
			t.Errorf("replay carries Set-Cookie %q, want none (not in ReplayHeaders)", got)
		}
	}
	if n := h.runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	// The quoted form is the same key.
	if w := s.do(post(`"k1"`, `{"item":"tea"}`)); w.Header().Get("Idempotent-Replayed") != "true" {
		t.Errorf(`key "k1" (quoted) was not replayed as k1`)
	}
	if n := s.obs.count(bulwark.EventReplayed, ""); n != 4 {
		t.Errorf("%d replayed events, want 4", n)
	}
}

func TestMiddlewareScopes(t *testing.T) {
	tests := []struct {
		name     string
		a, b     req
		wantRuns int64
		wantB    int // status of b
	}{
		{"same request", post("k", "x"), post("k", "x"), 1, http.StatusCreated},
		{"other tenant", req{"POST", "/orders", "x", []string{"k"}, "acme"}, req{"POST", "/orders", "x", []string{"k"}, "globex"}, 2, http.StatusCreated},
		{"other route", req{"POST", "/orders", "x", []string{"k"}, ""}, req{"POST", "/refunds", "x", []string{"k"}, ""}, 2, http.StatusCreated},
		{"other method", req{"POST", "/orders", "x", []string{"k"}, ""}, req{"PATCH", "/orders", "x", []string{"k"}, ""}, 2, http.StatusCreated},
		{"other body", post("k", "x"), post("k", "y"), 1, http.StatusUnprocessableEntity},
		{"other query", req{"POST", "/orders?a=1", "x", []string{"k"}, ""}, req{"POST", "/orders?a=2", "x", []string{"k"}, ""}, 1, http.StatusUnprocessableEntity},
		{"query order ignored", req{"POST", "/orders?a=1&b=2", "x", []string{"k"}, ""}, req{"POST", "/orders?b=2&a=1", "x", []string{"k"}, ""}, 1, http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &orders{}
			s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{
				Tenant: func(r *http.Request) string { return r.Header.Get("X-Tenant") },
			})
			require.Equal(t, http.StatusCreated, s.do(tt.a).Code)
			w := s.do(tt.b)
			if w.Code != tt.wantB || h.runs.Load() != tt.wantRuns {
				t.Fatalf("after %+v, %+v: status %d and %d runs, want %d and %d", tt.a, tt.b, w.Code, h.runs.Load(), tt.wantB, tt.wantRuns)
			}
			if tt.wantB == http.StatusUnprocessableEntity {
				problemOf(t, w, http.StatusUnprocessableEntity)
			}
		})
	}
}

func TestMiddlewareRoutePattern(t *testing.T) {
	h := &orders{}
	clk := fakeClock()
	e := newEngine(t, newStore(t, clk), clk, idempotency.Config{})
	mw, err := idempotency.Middleware(idempotency.HTTPConfig{Engine: e})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("POST /carts/{id}/checkout", mw(h))
	do := func(path, body string) int {
		r := httptest.NewRequest("POST", path, strings.NewReader(body))
		r.Header.Set("Idempotency-Key", "k")
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w.Code
	}
	require.Equal(t, http.StatusCreated, do("/carts/1/checkout", "x"))
	// Same route pattern, same key, other path: the fingerprint differs.
	if code := do("/carts/2/checkout", "x"); code != http.StatusUnprocessableEntity {
		t.Fatalf("same key on another path of the route: status %d, want 422", code)
	}
}

func TestMiddlewareCachingPolicy(t *testing.T) {
	tests := []struct {
		status    int
		cacheable func(context.Context, int) bool
		wantRuns  int64 // after two identical requests
	}{
		{200, nil, 1}, {201, nil, 1}, {204, nil, 1},
		{400, nil, 1}, {404, nil, 1}, {422, nil, 1},
		{408, nil, 2}, {409, nil, 2}, {429, nil, 2},
		{500, nil, 2}, {502, nil, 2}, {503, nil, 2},
		{303, nil, 2},
		{303, func(ctx context.Context, s int) bool { return s == 303 || idempotency.DefaultCacheable(ctx, s) }, 1},
		{201, func(context.Context, int) bool { return false }, 2},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/custom=%v", tt.status, tt.cacheable != nil), func(t *testing.T) {
			h := &orders{status: tt.status}
			s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{Cacheable: tt.cacheable})
			a := s.do(post("k", "x"))
			b := s.do(post("k", "x"))
			if a.Code != tt.status || b.Code != tt.status {
				t.Fatalf("statuses %d, %d; want %d twice", a.Code, b.Code, tt.status)
			}
			if n := h.runs.Load(); n != tt.wantRuns {
				t.Errorf("status %d: handler ran %d times, want %d", tt.status, n, tt.wantRuns)
			}
		})
	}
}

// A handler that writes nothing answers 200, stored; one that never writes
// a status but writes a body answers 200 too.
func TestMiddlewareImplicitStatus(t *testing.T) {
	var runs atomic.Int64
	s := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { runs.Add(1) }),
		idempotency.Config{}, idempotency.HTTPConfig{})
	if w := s.do(post("k", "")); w.Code != 200 {
		t.Fatalf("status %d, want 200", w.Code)
	}
	if w := s.do(post("k", "")); w.Code != 200 || w.Header().Get("Idempotent-Replayed") != "true" || runs.Load() != 1 {
		t.Fatalf("replay: status %d, replayed %q, %d runs; want 200, true, 1", w.Code, w.Header().Get("Idempotent-Replayed"), runs.Load())
	}
}

func TestMiddlewareInFlight(t *testing.T) {
	h := &orders{block: make(chan struct{}), start: make(chan struct{})}
	s := newServer(t, h, idempotency.Config{RetryAfter: 1500 * time.Millisecond}, idempotency.HTTPConfig{})
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- s.do(post("k", "x")) }()
	<-h.start
	w := s.do(post("k", "x"))
	problemOf(t, w, http.StatusConflict)
	if got := w.Header().Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After = %q, want 2 (1.5 s rounded up)", got)
	}
	// A different payload while in flight is a mismatch, not a conflict.
	problemOf(t, s.do(post("k", "other")), http.StatusUnprocessableEntity)
	close(h.block)
	if w := <-first; w.Code != http.StatusCreated {
		t.Fatalf("first request: status %d, want 201", w.Code)
	}
	if w := s.do(post("k", "x")); w.Code != http.StatusCreated || w.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("after the first finished: status %d, replayed %q; want a 201 replay", w.Code, w.Header().Get("Idempotent-Replayed"))
	}
}

// 1,000 goroutines send one key: the handler runs once, and every caller
// gets that response or a 409.
func TestMiddlewareConcurrentSafe(t *testing.T) {
	const callers = 1000
	// The handler holds on until half the callers have had their answer,
	// which, while it runs, can only be 409; the other half race with its
	// completion and get 409 or the replay.
	var answered atomic.Int64
	half := make(chan struct{})
	h := &orders{block: half}
	s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{})
	var wg sync.WaitGroup
	start := make(chan struct{})
	out := make([]*httptest.ResponseRecorder, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out[i] = s.do(post("same-key", `{"item":"tea"}`))
			if answered.Add(1) == callers/2 {
				close(half)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := h.runs.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
	want := `{"order":1,"request":"{\"item\":\"tea\"}"}`
	conflicts := 0
	for i, w := range out {
		switch {
		case w.Code == http.StatusCreated && w.Body.String() == want && w.Header().Get("Location") == "/orders/1":
		case w.Code == http.StatusConflict && w.Header().Get("Retry-After") != "":
			conflicts++
		default:
			t.Fatalf("caller %d got %d %q, want 201 %q or 409", i, w.Code, w.Body, want)
		}
	}
	if created := callers - conflicts; conflicts < callers/2 || created < 1 {
		t.Fatalf("%d callers got 201 and %d got 409, want at least one 201 and at least %d 409s", created, conflicts, callers/2)
	}
}

// A handler whose instance can no longer renew its lease (cut off from the
// store, or dead) holds the key only until the lease ends; another instance
// then takes it over, and the cut-off one's late completion is refused.
func TestMiddlewareTakeover(t *testing.T) {
	clk := fakeClock()
	st := newStore(t, clk)
	obs := &events{}
	newInstance := func(st idempotency.Store, h http.Handler) http.Handler {
		e := newEngine(t, st, clk, idempotency.Config{Lease: 10 * time.Second, Observer: obs})
		mw, err := idempotency.Middleware(idempotency.HTTPConfig{Engine: e})
		require.NoError(t, err)
		return mw(h)
	}
	stuck := &orders{block: make(chan struct{}), start: make(chan struct{}), body: "from the dead instance"}
	healthy := &orders{body: "from the live instance"}
	// The stuck instance is cut off from the store: it cannot renew.
	cut := &faultyStore{Store: st}
	cut.failExtend.Store(&errOutage)
	a, b := newInstance(cut, stuck), newInstance(st, healthy)
	serve := func(h http.Handler) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/orders", strings.NewReader("x"))
		r.Header.Set("Idempotency-Key", "k")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	late := make(chan *httptest.ResponseRecorder, 1)
	go func() { late <- serve(a) }()
	<-stuck.start
	if w := serve(b); w.Code != http.StatusConflict {
		t.Fatalf("during the lease: status %d, want 409", w.Code)
	}
	clk.Advance(10 * time.Second)
	if w := serve(b); w.Code != http.StatusCreated || w.Body.String() != "from the live instance" {
		t.Fatalf("after the lease: %d %q, want the live instance's 201", w.Code, w.Body)
	}
	if n := obs.count(bulwark.EventLeaseTakeover, ""); n != 1 {
		t.Errorf("%d takeover events, want 1", n)
	}
	close(stuck.block) // the "dead" instance finishes late
	<-late
	if n := obs.count(bulwark.EventStoreError, "fenced"); n != 1 {
		t.Errorf("%d fenced events, want 1", n)
	}
	if w := serve(b); w.Body.String() != "from the live instance" || w.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay after the late completion: %q, want the live instance's", w.Body)
	}
}

func TestMiddlewareRetention(t *testing.T) {
	h := &orders{}
	s := newServer(t, h, idempotency.Config{Retention: time.Hour}, idempotency.HTTPConfig{})
	s.do(post("k", "x"))
	s.clk.Advance(time.Hour - time.Millisecond)
	if w := s.do(post("k", "x")); w.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("just before retention ends: not replayed")
	}
	s.clk.Advance(time.Millisecond)
	if w := s.do(post("k", "x")); w.Header().Get("Idempotent-Replayed") != "" || h.runs.Load() != 2 {
		t.Fatalf("after retention: replayed %q, %d runs; want a fresh run", w.Header().Get("Idempotent-Replayed"), h.runs.Load())
	}
}

func TestMiddlewareRequestBodyLimit(t *testing.T) {
	tests := []struct {
		name       string
		size       int
		chunked    bool // no Content-Length
		wantStatus int
	}{
		{"at the limit", 100, false, http.StatusCreated},
		{"at the limit, chunked", 100, true, http.StatusCreated},
		{"over the limit", 101, false, http.StatusRequestEntityTooLarge},
		{"over the limit, chunked", 101, true, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &orders{}
			s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{MaxRequestBody: 100})
			body := strings.Repeat("a", tt.size)
			var rd io.Reader = strings.NewReader(body)
			if tt.chunked {
				rd = io.MultiReader(rd) // hides the length
			}
			r := httptest.NewRequest("POST", "/orders", rd)
			r.Header.Set("Idempotency-Key", "k")
			w := httptest.NewRecorder()
			s.handler.ServeHTTP(w, r)
			if tt.wantStatus == http.StatusRequestEntityTooLarge {
				problemOf(t, w, tt.wantStatus)
				if h.runs.Load() != 0 {
					t.Errorf("handler ran for a body over the limit")
				}
				return
			}
			if w.Code != tt.wantStatus || !strings.Contains(w.Body.String(), body) {
				t.Fatalf("status %d, body %q; want %d with the full request body echoed", w.Code, w.Body, tt.wantStatus)
			}
		})
	}
}

// An outer http.MaxBytesReader's limit is a 413 too.
func TestMiddlewareOuterBodyLimit(t *testing.T) {
	h := &orders{}
	s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{})
	r := httptest.NewRequest("POST", "/orders", io.MultiReader(strings.NewReader(strings.Repeat("a", 100))))
	r.Header.Set("Idempotency-Key", "k")
	w := httptest.NewRecorder()
	r.Body = http.MaxBytesReader(w, r.Body, 50)
	s.handler.ServeHTTP(w, r)
	problemOf(t, w, http.StatusRequestEntityTooLarge)
	if h.runs.Load() != 0 {
		t.Errorf("handler ran for a body over the outer limit")
	}
}

func TestMiddlewareStoredBodyLimit(t *testing.T) {
	big := strings.Repeat("b", 1000)
	h := &orders{body: big}
	s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{MaxStoredBody: 999})
	if w := s.do(post("k", "x")); w.Body.String() != big {
		t.Fatalf("first response body has %d bytes, want all %d", w.Body.Len(), len(big))
	}
	w := s.do(post("k", "x"))
	if w.Code != http.StatusCreated || w.Body.Len() != 0 || w.Header().Get("Location") != "/orders/1" ||
		w.Header().Get("Content-Length") != "0" || w.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay of an oversized response: %d, %d body bytes, headers %v; want 201, Location, empty body", w.Code, w.Body.Len(), w.Header())
	}
	if h.runs.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", h.runs.Load())
	}
	// At the limit, the body is kept.
	s2 := newServer(t, &orders{body: big}, idempotency.Config{}, idempotency.HTTPConfig{MaxStoredBody: 1000})
	s2.do(post("k", "x"))
	if w := s2.do(post("k", "x")); w.Body.String() != big {
		t.Fatalf("replay at the limit has %d bytes, want %d", w.Body.Len(), len(big))
	}
}

func TestMiddlewareStoreOutage(t *testing.T) {
	tests := []struct {
		name       string
		failOpen   bool
		wantStatus int
		wantRuns   int64
		reason     string
	}{
		{"fail closed", false, http.StatusServiceUnavailable, 0, "fail-closed"},
		{"fail open", true, http.StatusCreated, 1, "fail-open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &orders{}
			s := newServer(t, h, idempotency.Config{FailOpen: tt.failOpen}, idempotency.HTTPConfig{})
			s.store.failClaim.Store(true)
			w := s.do(post("k", "x"))
			if tt.wantStatus == http.StatusServiceUnavailable {
				problemOf(t, w, tt.wantStatus)
			} else if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d", w.Code, tt.wantStatus)
			}
			if h.runs.Load() != tt.wantRuns {
				t.Errorf("handler ran %d times, want %d", h.runs.Load(), tt.wantRuns)
			}
			if n := s.obs.count(bulwark.EventStoreError, tt.reason); n != 1 {
				t.Errorf("%d store-error events with reason %q, want 1", n, tt.reason)
			}
			// Once the store is back, the key works as usual.
			s.store.failClaim.Store(false)
			s.do(post("k", "x"))
			if w := s.do(post("k", "x")); w.Header().Get("Idempotent-Replayed") != "true" {
				t.Errorf("after the outage: no replay")
			}
		})
	}
}

// A stored response that cannot be decoded answers 500 and sets none of its
// headers.
func TestMiddlewareCorruptRecord(t *testing.T) {
	tests := []struct {
		name   string
		mangle func([]byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"other kind", func(b []byte) []byte { return append([]byte{'v'}, b[1:]...) }},
		{"cut in the status", func(b []byte) []byte { return b[:3] }},
		{"cut in a header", func(b []byte) []byte { return b[:12] }},
		{"header count too high", func(b []byte) []byte { c := bytes.Clone(b); c[4] = 100; return c }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &orders{}
			s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{})
			s.store.mangle = tt.mangle
			s.do(post("k", "x"))
			w := s.do(post("k", "x"))
			problemOf(t, w, http.StatusInternalServerError)
			if loc := w.Header().Get("Location"); loc != "" {
				t.Errorf("corrupt replay set Location %q", loc)
			}
			if n := s.obs.count(bulwark.EventStoreError, "corrupt"); n != 1 {
				t.Errorf("%d corrupt events, want 1", n)
			}
		})
	}
}

func TestMiddlewarePanicReleases(t *testing.T) {
	var panicked atomic.Bool
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !panicked.Swap(true) {
			panic(http.ErrAbortHandler)
		}
		w.WriteHeader(http.StatusCreated)
	})
	s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{})
	func() {
		defer func() {
			if r := recover(); r != http.ErrAbortHandler {
				t.Fatalf("recover() = %v, want the handler's panic", r)
			}
		}()
		s.do(post("k", "x"))
	}()
	if w := s.do(post("k", "x")); w.Code != http.StatusCreated || w.Header().Get("Idempotent-Replayed") != "" {
		t.Fatalf("after a panic: %d, replayed %q; want a fresh 201", w.Code, w.Header().Get("Idempotent-Replayed"))
	}
}

func TestMiddlewareClientGoneWhileWaiting(t *testing.T) {
	h := &orders{block: make(chan struct{}), start: make(chan struct{})}
	s := newServer(t, h, idempotency.Config{Wait: time.Hour}, idempotency.HTTPConfig{})
	first := make(chan struct{})
	go func() { s.do(post("k", "x")); close(first) }()
	<-h.start
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequest("POST", "/orders", strings.NewReader("x")).WithContext(ctx)
	r.Header.Set("Idempotency-Key", "k")
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { s.handler.ServeHTTP(w, r); close(done) }()
	require.NoError(t, s.clk.BlockUntil(t.Context(), 2)) // the renewer's and the waiting duplicate's
	cancel()
	<-done
	if w.Body.Len() != 0 || w.Code != http.StatusOK {
		t.Errorf("answer to a departed client: %d %q, want nothing written", w.Code, w.Body)
	}
	close(h.block)
	<-first
}

// The handler may flush; the recorder passes it through.
func TestMiddlewareFlush(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part1 ")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush through the middleware: %v", err)
		}
		w.(http.Flusher).Flush()
		io.WriteString(w, "part2")
	})
	s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{})
	w := s.do(post("k", "x"))
	if !w.Flushed || w.Body.String() != "part1 part2" {
		t.Fatalf("flushed %v, body %q; want flushed, part1 part2", w.Flushed, w.Body)
	}
	if w := s.do(post("k", "x")); w.Body.String() != "part1 part2" {
		t.Fatalf("replay body %q, want part1 part2", w.Body)
	}
}

// Through a real server and client on loopback.
func TestMiddlewareOverHTTP(t *testing.T) {
	h := &orders{}
	s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{
		Methods: []string{"POST", "PUT"},
		Route:   func(r *http.Request) string { return "orders" },
	})
	srv := httptest.NewServer(s.handler)
	defer srv.Close()
	send := func(method, path, key, body string) (*http.Response, string) {
		t.Helper()
		r, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		r.Header.Set("Idempotency-Key", key)
		resp, err := srv.Client().Do(r)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(b)
	}
	first, body1 := send("PUT", "/orders/1", "k", `{"qty":1}`)
	again, body2 := send("PUT", "/orders/1", "k", `{"qty":1}`)
	if first.StatusCode != 201 || again.StatusCode != 201 || body1 != body2 || h.runs.Load() != 1 {
		t.Fatalf("PUT twice: %d %q, then %d %q, %d runs; want one run replayed", first.StatusCode, body1, again.StatusCode, body2, h.runs.Load())
	}
	if again.Header.Get("Idempotent-Replayed") != "true" || again.Header.Get("Location") != first.Header.Get("Location") ||
		again.ContentLength != int64(len(body1)) {
		t.Errorf("replay headers %v, want Idempotent-Replayed, the first Location and Content-Length %d", again.Header, len(body1))
	}
	// Route maps every path to one scope: the same key on another path is
	// the same key with another payload.
	if resp, _ := send("PUT", "/orders/2", "k", `{"qty":1}`); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("same key, same route, other path: %d, want 422", resp.StatusCode)
	}
}

// Informational statuses pass through; the final status is the one stored,
// and a superfluous WriteHeader changes nothing.
func TestMiddlewareStatusSequence(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusAccepted)
		w.WriteHeader(http.StatusInternalServerError) // ignored by net/http
		io.WriteString(w, "queued")
	})
	s := newServer(t, h, idempotency.Config{}, idempotency.HTTPConfig{})
	srv := httptest.NewServer(s.handler)
	defer srv.Close()
	for i, wantReplayed := range []string{"", "true"} {
		r, err := http.NewRequestWithContext(t.Context(), "POST", srv.URL, strings.NewReader("x"))
		require.NoError(t, err)
		r.Header.Set("Idempotency-Key", "k")
		resp, err := srv.Client().Do(r)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || string(body) != "queued" || resp.Header.Get("Idempotent-Replayed") != wantReplayed {
			t.Fatalf("request %d: %d %q, replayed %q; want 202 queued, replayed %q", i, resp.StatusCode, body, resp.Header.Get("Idempotent-Replayed"), wantReplayed)
		}
	}
}
