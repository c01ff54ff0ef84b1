package orderservice

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/examples/paymentsim"
	"github.com/bulwark-go/bulwark/idempotency"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type harness struct {
	svc  *Service
	srv  *httptest.Server
	repo Repository
}

// The API keys of the tests' two tenants.
const (
	keyA = "tenant-a-key-0123456789"
	keyB = "tenant-b-key-0123456789"
)

var testKeys = map[string]string{keyA: "tenant-a", keyB: "tenant-b"}

func newHarness(t *testing.T, repo Repository, store idempotency.Store, name string, payments *httptest.Server) *harness {
	t.Helper()
	return newHarnessConfig(t, Config{
		Name: name, Repository: repo, Partitions: 4, IdempotencyStore: store, PaymentURL: payments.URL,
	})
}

func newHarnessConfig(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.APIKeys == nil {
		cfg.APIKeys = testKeys
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	repo := cfg.Repository
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc.Start(context.Background())
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(func() { srv.Close(); _ = svc.Close() })
	return &harness{svc: svc, srv: srv, repo: repo}
}

func newPayments(t *testing.T) (*paymentsim.Provider, *httptest.Server) {
	p := paymentsim.New(1)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv
}

func orderBody(customer string, qty int) []byte {
	b, _ := json.Marshal(NewOrderRequest{Customer: customer, Currency: "EUR", Items: []Item{{SKU: "book", Quantity: qty, PriceCents: 1500}}})
	return b
}

func post(t *testing.T, url, key, ifMatch string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	hdr := http.Header{"Authorization": {"Bearer " + keyA}}
	if body != nil {
		hdr.Set("Content-Type", "application/json")
	}
	if key != "" {
		hdr.Set("Idempotency-Key", key)
	}
	if ifMatch != "" {
		hdr.Set("If-Match", ifMatch)
	}
	return send(t, http.MethodPost, url, hdr, body)
}

// send sends a request with exactly the headers in hdr.
func send(t *testing.T, method, url string, hdr http.Header, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, nil, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// duplicateStorm sends n concurrent creates spread over keys idempotency
// keys, round robin over urls, and returns the count of each status.
func duplicateStorm(t *testing.T, urls []string, n, keys int) map[int]int {
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			k := i % keys
			code, _, _ := post(t, urls[i%len(urls)]+"/orders", fmt.Sprintf("storm-%d", k), "", orderBody(fmt.Sprintf("cust-%d", k), 1))
			mu.Lock()
			statuses[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return statuses
}

func TestDuplicateStormCreatesOneOrderPerKey(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	_, pay := newPayments(t)
	// 64 requests of one tenant at once are more than its share of a
	// Limiter: the storm is about keys, so nothing is shed (overload_test.go
	// is about shedding).
	h := newHarnessConfig(t, Config{Name: "orders-a", Repository: repo, Partitions: 4, PaymentURL: pay.URL, NoShedding: true})
	statuses := duplicateStorm(t, []string{h.srv.URL}, 1000, 100)
	if n, _ := repo.Count(context.Background()); n != 100 {
		t.Errorf("orders after 1000 requests over 100 keys = %d, want 100 (statuses %v)", n, statuses)
	}
	for code := range statuses {
		if code != http.StatusCreated && code != http.StatusConflict {
			t.Errorf("status %d seen %d times; want only 201 (first or replay) and 409 (in flight)", code, statuses[code])
		}
	}
}

func TestReusedKeyWithAnotherBodyIs422(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	_, pay := newPayments(t)
	h := newHarness(t, repo, nil, "orders", pay)
	if code, _, b := post(t, h.srv.URL+"/orders", "k1", "", orderBody("ann", 1)); code != http.StatusCreated {
		t.Fatalf("first create = %d %s", code, b)
	}
	code, hdr, first := post(t, h.srv.URL+"/orders", "k1", "", orderBody("ann", 1))
	if code != http.StatusCreated || hdr.Get("Idempotent-Replayed") != "true" {
		t.Errorf("same key, same body = %d replayed=%q, want 201 replayed", code, hdr.Get("Idempotent-Replayed"))
	}
	if code, _, b := post(t, h.srv.URL+"/orders", "k1", "", orderBody("ann", 2)); code != http.StatusUnprocessableEntity {
		t.Errorf("same key, other body = %d %s, want 422", code, b)
	}
	if code, _, _ := post(t, h.srv.URL+"/orders", "", "", orderBody("ann", 1)); code != http.StatusBadRequest {
		t.Errorf("create without a key = %d, want 400", code)
	}
	var o Order
	if err := json.Unmarshal(first, &o); err != nil || o.Customer != "ann" || o.State != Created {
		t.Errorf("replayed body = %s (%v)", first, err)
	}
	if n, _ := repo.Count(context.Background()); n != 1 {
		t.Errorf("orders = %d, want 1", n)
	}
}

func createOrder(t *testing.T, h *harness, key string) Order {
	t.Helper()
	code, _, b := post(t, h.srv.URL+"/orders", key, "", orderBody("bea", 1))
	if code != http.StatusCreated {
		t.Fatalf("create = %d %s", code, b)
	}
	var o Order
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestConcurrentPayAndCancelOneWins(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	payments, pay := newPayments(t)
	h := newHarness(t, repo, nil, "orders", pay)
	for round := 0; round < 20; round++ {
		o := createOrder(t, h, fmt.Sprintf("race-%d", round))
		var wg sync.WaitGroup
		codes := make([]int, 2)
		for i, action := range []string{"pay", "cancel"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i], _, _ = post(t, h.srv.URL+"/orders/"+o.ID+"/"+action, "", `"v1"`, nil)
			}()
		}
		wg.Wait()
		wins, refused := 0, 0
		for _, c := range codes {
			switch c {
			case http.StatusOK:
				wins++
			case http.StatusConflict, http.StatusPreconditionFailed:
				refused++
			}
		}
		if wins != 1 || refused != 1 {
			t.Fatalf("round %d: pay and cancel answered %v, want one 200 and one 409/412", round, codes)
		}
	}
	if _, _, _, maxPerOrder := payments.Stats(); maxPerOrder > 1 {
		t.Errorf("an order was charged %d times", maxPerOrder)
	}
}

func TestTransitionsFollowTheStateMachine(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	_, pay := newPayments(t)
	h := newHarness(t, repo, nil, "orders", pay)
	o := createOrder(t, h, "sm")
	steps := []struct {
		action, ifMatch string
		want            int
	}{
		{"ship", "", http.StatusConflict},              // not paid yet
		{"pay", `"v9"`, http.StatusPreconditionFailed}, // stale ETag
		{"pay", `"v1"`, http.StatusOK},
		{"pay", "", http.StatusConflict}, // already paid
		{"ship", "", http.StatusOK},
		{"cancel", "", http.StatusConflict}, // shipped orders stay shipped
		{"refund", "", http.StatusNotFound},
	}
	for _, s := range steps {
		if code, _, b := post(t, h.srv.URL+"/orders/"+o.ID+"/"+s.action, "", s.ifMatch, nil); code != s.want {
			t.Errorf("%s (If-Match %s) = %d %s, want %d", s.action, s.ifMatch, code, b, s.want)
		}
	}
	code, hdr, b := send(t, http.MethodGet, h.srv.URL+"/orders/"+o.ID, http.Header{"Authorization": {"Bearer " + keyA}}, nil)
	var got Order
	_ = json.Unmarshal(b, &got)
	if code != http.StatusOK || got.State != Shipped || got.PaymentID == "" || hdr.Get("ETag") != etag(got) {
		t.Errorf("final order = %d %+v (ETag %s), want shipped with a payment id", code, got, hdr.Get("ETag"))
	}
}

func TestPaymentOutageLeavesPaymentPending(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	payments, pay := newPayments(t)
	h := newHarness(t, repo, nil, "orders", pay)
	o := createOrder(t, h, "outage")
	payments.SetFault(paymentsim.Fault{FailRate: 1})
	if code, _, b := post(t, h.srv.URL+"/orders/"+o.ID+"/pay", "", "", nil); code < 500 {
		t.Fatalf("pay during an outage = %d %s, want 5xx", code, b)
	}
	// The provider may have charged before failing: the payment stays
	// pending, and neither ship nor cancel may move the order.
	got, _ := repo.Get(context.Background(), o.ID)
	if got.State != Paid || got.PaymentID != "" {
		t.Errorf("order after a failed payment is %s with payment %q, want paid with the payment pending", got.State, got.PaymentID)
	}
	if code, _, _ := post(t, h.srv.URL+"/orders/"+o.ID+"/cancel", "", "", nil); code != http.StatusConflict {
		t.Errorf("cancel of a pending payment = %d, want 409", code)
	}
	payments.SetFault(paymentsim.Fault{})
	if code, _, b := post(t, h.srv.URL+"/orders/"+o.ID+"/pay", "", "", nil); code != http.StatusOK {
		t.Errorf("pay after recovery = %d %s, want 200", code, b)
	}
	got, _ = repo.Get(context.Background(), o.ID)
	if got.State != Paid || got.PaymentID == "" {
		t.Errorf("order after the resumed payment is %s with payment %q, want paid with a payment id", got.State, got.PaymentID)
	}
}

func TestDeclinedPaymentGoesBackToCreated(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	payments, pay := newPayments(t)
	h := newHarness(t, repo, nil, "orders", pay)
	payments.SetFault(paymentsim.Fault{Decline: true})
	for _, pending := range []bool{false, true} {
		o := createOrder(t, h, fmt.Sprintf("declined-%v", pending))
		if pending { // left pending by an earlier, unclear failure
			stuck := o
			stuck.State, stuck.Version = Paid, 2
			if err := repo.Update(context.Background(), stuck); err != nil {
				t.Fatal(err)
			}
		}
		if code, _, b := post(t, h.srv.URL+"/orders/"+o.ID+"/pay", "", "", nil); code != http.StatusPaymentRequired {
			t.Errorf("pay, declined (pending %v) = %d %s, want 402", pending, code, b)
		}
		got, _ := repo.Get(context.Background(), o.ID)
		if got.State != Created {
			t.Errorf("order after a decline (pending %v) is %s, want created again", pending, got.State)
		}
		if code, _, _ := post(t, h.srv.URL+"/orders/"+o.ID+"/cancel", "", "", nil); code != http.StatusOK {
			t.Errorf("cancel after a decline (pending %v) = %d, want 200", pending, code)
		}
	}
}

func TestPendingPaymentBlocksCancelAndResumes(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	payments, pay := newPayments(t)
	h := newHarness(t, repo, nil, "orders", pay)

	// A cancel while the charge is in flight is refused: the order would be
	// cancelled and charged.
	o := createOrder(t, h, "pending")
	payments.SetFault(paymentsim.Fault{Latency: 300 * time.Millisecond})
	before, _, _, _ := payments.Stats()
	done := make(chan int, 1)
	go func() { code, _, _ := post(t, h.srv.URL+"/orders/"+o.ID+"/pay", "", "", nil); done <- code }()
	for n, _, _, _ := payments.Stats(); n == before; n, _, _, _ = payments.Stats() {
		runtime.Gosched() // until the charge reaches the provider
	}
	if code, _, b := post(t, h.srv.URL+"/orders/"+o.ID+"/cancel", "", "", nil); code != http.StatusConflict {
		t.Errorf("cancel during a pending payment = %d %s, want 409", code, b)
	}
	if code := <-done; code != http.StatusOK {
		t.Fatalf("pay = %d, want 200", code)
	}
	got, _ := repo.Get(context.Background(), o.ID)
	if got.State != Paid || got.PaymentID == "" {
		t.Errorf("order after pay = %s with payment %q, want paid with a payment id", got.State, got.PaymentID)
	}

	// An instance that died between the two steps left a pending payment:
	// pay resumes it, and the provider charges once.
	payments.SetFault(paymentsim.Fault{})
	o2 := createOrder(t, h, "stuck")
	stuck := o2
	stuck.State, stuck.Version = Paid, 2
	if err := repo.Update(context.Background(), stuck); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if code, _, b := post(t, h.srv.URL+"/orders/"+o2.ID+"/pay", "", "", nil); code != http.StatusOK && i == 0 {
			t.Fatalf("pay of a pending order = %d %s, want 200", code, b)
		}
	}
	got, _ = repo.Get(context.Background(), o2.ID)
	if got.State != Paid || got.PaymentID == "" {
		t.Errorf("resumed order = %s with payment %q, want paid with a payment id", got.State, got.PaymentID)
	}
	if _, _, _, maxPer := payments.Stats(); maxPer != 1 {
		t.Errorf("an order was charged %d times, want once", maxPer)
	}
}
