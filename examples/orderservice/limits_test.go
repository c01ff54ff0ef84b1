package orderservice

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/ratelimit"
)

// gateRepo holds every Get and Summary until release is closed, and tells
// entered when one is held, so that a test fills a limit with requests
// that stay in flight as long as it wants.
type gateRepo struct {
	Repository
	entered chan string // the method held
	release chan struct{}
}

func newGateRepo(t *testing.T) *gateRepo {
	r, err := NewMemoryRepository(4)
	if err != nil {
		t.Fatal(err)
	}
	return &gateRepo{Repository: r, entered: make(chan string, 64), release: make(chan struct{})}
}

func (g *gateRepo) hold(ctx context.Context, method string) error {
	g.entered <- method
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gateRepo) Get(ctx context.Context, id string) (Order, error) {
	if err := g.hold(ctx, "Get"); err != nil {
		return Order{}, err
	}
	return g.Repository.Get(ctx, id)
}

func (g *gateRepo) Summary(ctx context.Context, tenant string) ([]SummaryRow, error) {
	if err := g.hold(ctx, "Summary"); err != nil {
		return nil, err
	}
	return g.Repository.Summary(ctx, tenant)
}

// answer is a response, or admitted when the gate got the request instead.
type answer struct {
	code     int
	hdr      http.Header
	body     []byte
	admitted bool
}

// refused sends a request that the test expects a limit to refuse: if the
// gate gets it instead, it was admitted (and the gate holds it until the
// test releases the others).
func refused(t *testing.T, h *harness, g *gateRepo, path, apiKey string) answer {
	t.Helper()
	out := make(chan answer, 1)
	go func() {
		code, hdr, body := call(t, h, http.MethodGet, path, apiKey, nil, nil)
		out <- answer{code: code, hdr: hdr, body: body}
	}()
	select {
	case a := <-out:
		return a
	case <-g.entered:
		go func() { <-out }()
		return answer{admitted: true}
	}
}

// limitProblem decodes the problem of a refusal by a limit, which package
// limit or ratelimit writes (without the service's request_id).
func limitProblem(t *testing.T, hdr http.Header, b []byte) problemDetails {
	t.Helper()
	if ct := hdr.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type of a refusal = %q, want application/problem+json", ct)
	}
	if hdr.Get("X-Request-Id") == "" {
		t.Errorf("a refusal has no X-Request-Id")
	}
	var p problemDetails
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("decode problem %q: %v", b, err)
	}
	return p
}

// inFlight sends a request that the gate will hold, and returns a channel
// that gets its status once it is answered. A request answered at once (a
// limit refused it) fails the test.
func inFlight(t *testing.T, h *harness, g *gateRepo, path, apiKey string) <-chan int {
	t.Helper()
	out := make(chan int, 1)
	go func() {
		code, _, _ := call(t, h, http.MethodGet, path, apiKey, nil, nil)
		out <- code
	}()
	select {
	case <-g.entered:
	case code := <-out:
		t.Errorf("GET %s = %d at once, want it admitted and held", path, code)
		out <- code
	}
	return out
}

func TestReportsAreShedBeforeCriticalRequests(t *testing.T) {
	g := newGateRepo(t)
	_, pay := newPayments(t)
	// A limit of 10 that does not move while nothing completes: normal
	// requests may hold 7 slots (headroom 0.3), sheddable ones 4, critical
	// ones all 10. No tenant bound.
	lim, err := limit.New(limit.Config{InitialLimit: 10, Headroom: DefaultHeadroom, TenantShare: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessConfig(t, Config{Repository: g, Partitions: 4, PaymentURL: pay.URL, Limiter: lim})
	var held []<-chan int
	for range 4 {
		held = append(held, inFlight(t, h, g, "/reports/summary", keyA))
	}
	// (No Retry-After: the limiter has measured nothing yet.)
	if a := refused(t, h, g, "/reports/summary", keyA); a.code != http.StatusServiceUnavailable {
		t.Errorf("a fifth report with 4 in flight = %d %s (admitted: %v), want 503", a.code, a.body, a.admitted)
	} else if p := limitProblem(t, a.hdr, a.body); !strings.Contains(p.Detail, "sheddable") {
		t.Errorf("refusal detail %q, want it to name the sheddable criticality", p.Detail)
	}
	// Critical reads take the rest of the limit: six more.
	for range 6 {
		held = append(held, inFlight(t, h, g, "/orders/0-missing", keyA))
	}
	if a := refused(t, h, g, "/orders/0-missing", keyA); a.code != http.StatusServiceUnavailable {
		t.Errorf("a critical read with the whole limit in flight = %d %s (admitted: %v), want 503", a.code, a.body, a.admitted)
	}
	// The health endpoints are never shed.
	for _, path := range []string{"/livez", "/readyz"} {
		if code, _, body := call(t, h, http.MethodGet, path, "", nil, nil); code != http.StatusOK {
			t.Errorf("GET %s with the whole limit in flight = %d %s, want 200", path, code, body)
		}
	}
	close(g.release)
	for i, c := range held {
		if code := <-c; code != http.StatusOK && code != http.StatusNotFound {
			t.Errorf("held request %d = %d, want 200 or 404", i, code)
		}
	}
}

func TestTenantOverItsShareIs429(t *testing.T) {
	g := newGateRepo(t)
	_, pay := newPayments(t)
	// A limit of 4, of which a tenant may hold half.
	lim, err := limit.New(limit.Config{InitialLimit: 4, TenantShare: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessConfig(t, Config{Repository: g, Partitions: 4, PaymentURL: pay.URL, Limiter: lim})
	held := []<-chan int{inFlight(t, h, g, "/orders/0-a", keyA), inFlight(t, h, g, "/orders/0-b", keyA)}
	if a := refused(t, h, g, "/orders/0-c", keyA); a.code != http.StatusTooManyRequests {
		t.Errorf("tenant-a's third read with two in flight = %d %s (admitted: %v), want 429", a.code, a.body, a.admitted)
	} else if p := limitProblem(t, a.hdr, a.body); !strings.Contains(p.Detail, "tenant") {
		t.Errorf("refusal detail %q, want it to say the tenant is over its share", p.Detail)
	}
	held = append(held, inFlight(t, h, g, "/orders/0-d", keyB)) // the other tenant is served
	close(g.release)
	for i, c := range held {
		if code := <-c; code != http.StatusNotFound {
			t.Errorf("held request %d = %d, want 404 (no such order)", i, code)
		}
	}
}

func TestRateLimitPerTenant(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	_, pay := newPayments(t)
	clk := bulwarktest.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) // the buckets never refill
	h := newHarnessConfig(t, Config{Repository: repo, Partitions: 4, PaymentURL: pay.URL,
		RateLimit: ratelimit.Config{Rate: 2, Period: time.Minute, Clock: clk}})
	for i := range 2 {
		code, hdr, body := call(t, h, http.MethodGet, "/orders?customer=ann", keyA, nil, nil)
		if code != http.StatusOK {
			t.Fatalf("request %d of tenant-a = %d %s, want 200", i+1, code, body)
		}
		if got, want := hdr.Get("RateLimit-Policy"), `"tenant";q=2;w=60`; got != want {
			t.Errorf("RateLimit-Policy = %q, want %q", got, want)
		}
		if got, want := hdr.Get("RateLimit"), `"tenant";r=`+strconv.Itoa(1-i); !strings.HasPrefix(got, want) {
			t.Errorf("RateLimit of request %d = %q, want it to start with %q", i+1, got, want)
		}
	}
	code, hdr, body := call(t, h, http.MethodGet, "/orders?customer=ann", keyA, nil, nil)
	if code != http.StatusTooManyRequests {
		t.Fatalf("third request of tenant-a = %d %s, want 429", code, body)
	}
	if ra, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || ra < 1 || ra > 30 {
		t.Errorf("Retry-After = %q, want the 30 s until the next token", hdr.Get("Retry-After"))
	}
	limitProblem(t, hdr, body)
	if code, _, body := call(t, h, http.MethodGet, "/orders?customer=ann", keyB, nil, nil); code != http.StatusOK {
		t.Errorf("tenant-b's first request = %d %s, want 200: each tenant has its own limit", code, body)
	}
	if code, _, _ := call(t, h, http.MethodGet, "/orders?customer=ann", "", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("a request without a key = %d, want 401 before any limit", code)
	}
}

func TestReportSummary(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	_, pay := newPayments(t)
	h := newHarness(t, repo, nil, "orders", pay)
	createOrder(t, h, "r1")
	o := createOrder(t, h, "r2")
	if code, _, b := post(t, h.srv.URL+"/orders/"+o.ID+"/cancel", "", "", nil); code != http.StatusOK {
		t.Fatalf("cancel = %d %s", code, b)
	}
	get := func(apiKey string) Report {
		t.Helper()
		code, _, body := call(t, h, http.MethodGet, "/reports/summary", apiKey, nil, nil)
		if code != http.StatusOK {
			t.Fatalf("GET /reports/summary = %d %s", code, body)
		}
		var r Report
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := get(keyA)
	want := []SummaryRow{{State: Cancelled, Currency: "EUR", Orders: 1, AmountCents: 1500}, {State: Created, Currency: "EUR", Orders: 1, AmountCents: 1500}}
	if r.Tenant != "tenant-a" || r.Orders != 2 || len(r.Rows) != 2 || r.Rows[0] != want[0] || r.Rows[1] != want[1] {
		t.Errorf("tenant-a's report = %+v, want 2 orders: %+v", r, want)
	}
	if r := get(keyB); r.Orders != 0 || len(r.Rows) != 0 {
		t.Errorf("tenant-b's report = %+v, want no orders: another tenant's are not counted", r)
	}
}

func TestSlowReportIs503(t *testing.T) {
	g := newGateRepo(t)
	defer close(g.release)
	_, pay := newPayments(t)
	clk := bulwarktest.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	h := newHarnessConfig(t, Config{Repository: g, Partitions: 4, PaymentURL: pay.URL, Clock: clk, ReportTimeout: 5 * time.Second})
	var wg sync.WaitGroup
	var code int
	var hdr http.Header
	wg.Add(1)
	go func() { defer wg.Done(); code, hdr, _ = call(t, h, http.MethodGet, "/reports/summary", keyA, nil, nil) }()
	<-g.entered // its timeout's timer is set
	clk.Advance(5 * time.Second)
	wg.Wait()
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "1" {
		t.Errorf("a report past ReportTimeout = %d (Retry-After %q), want 503 with Retry-After 1", code, hdr.Get("Retry-After"))
	}
}

func TestShedCreateLeavesItsKeyFree(t *testing.T) {
	g := newGateRepo(t)
	_, pay := newPayments(t)
	lim, err := limit.New(limit.Config{InitialLimit: 2, TenantShare: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessConfig(t, Config{Repository: g, Partitions: 4, PaymentURL: pay.URL, Limiter: lim})
	held := []<-chan int{inFlight(t, h, g, "/orders/0-a", keyA), inFlight(t, h, g, "/orders/0-b", keyA)}
	if code, hdr, body := call(t, h, http.MethodPost, "/orders", keyA, keyed("shed-1"), orderBody("ann", 1)); code != http.StatusServiceUnavailable {
		t.Fatalf("a create with the limit full = %d %s, want 503", code, body)
	} else {
		limitProblem(t, hdr, body)
	}
	close(g.release)
	for _, c := range held {
		<-c
	}
	// Refused before the idempotency middleware: its key was never
	// claimed, and the same request, sent again, makes the order.
	code, hdr, body := call(t, h, http.MethodPost, "/orders", keyA, keyed("shed-1"), orderBody("ann", 1))
	if code != http.StatusCreated || hdr.Get("Idempotent-Replayed") != "" {
		t.Fatalf("the shed create sent again = %d (replayed %q) %s, want 201, not a replay", code, hdr.Get("Idempotent-Replayed"), body)
	}
	if n, _ := g.Count(context.Background()); n != 1 {
		t.Errorf("orders = %d, want 1", n)
	}
}
