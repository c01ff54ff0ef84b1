package orderservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// call sends a request as the caller with apiKey (none if empty), with the
// extra headers in hdr, and a JSON Content-Type for a body unless hdr has
// one (nil for none).
func call(t *testing.T, h *harness, method, path, apiKey string, hdr http.Header, body []byte) (int, http.Header, []byte) {
	t.Helper()
	if hdr == nil {
		hdr = http.Header{}
	}
	if apiKey != "" {
		hdr.Set("Authorization", "Bearer "+apiKey)
	}
	if _, ok := hdr["Content-Type"]; !ok && body != nil { // a nil value: none at all
		hdr.Set("Content-Type", "application/json")
	}
	return send(t, method, h.srv.URL+path, hdr, body)
}

func keyed(key string) http.Header { return http.Header{"Idempotency-Key": {key}} }

func decodeOrder(t *testing.T, b []byte) Order {
	t.Helper()
	var o Order
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatalf("decode order %q: %v", b, err)
	}
	return o
}

func decodeProblem(t *testing.T, hdr http.Header, b []byte) problemDetails {
	t.Helper()
	if ct := hdr.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type of a problem = %q, want application/problem+json", ct)
	}
	var p problemDetails
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("decode problem %q: %v", b, err)
	}
	if p.RequestID == "" || p.RequestID != hdr.Get("X-Request-Id") {
		t.Errorf("problem %s has request id %q, X-Request-Id %q: want the same, not empty", b, p.RequestID, hdr.Get("X-Request-Id"))
	}
	return p
}

func TestRequestsWithoutAValidKeyAre401(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	_, pay := newPayments(t)
	h := newHarness(t, repo, nil, "orders", pay)
	cases := []struct {
		name  string
		auth  []string
		error bool // the challenge says invalid_token
	}{
		{"no Authorization", nil, false},
		{"unknown key", []string{"Bearer unknown-key-0123456789"}, true},
		{"a key of tenant a's key's prefix", []string{"Bearer " + keyA[:len(keyA)-1]}, true},
		{"Basic scheme", []string{"Basic " + keyA}, true},
		{"no scheme", []string{keyA}, true},
		{"two Authorization fields", []string{"Bearer " + keyA, "Bearer " + keyB}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, r := range []struct{ method, path string }{
				{http.MethodPost, "/orders"}, {http.MethodGet, "/orders/1-x"},
				{http.MethodPost, "/orders/1-x/pay"}, {http.MethodGet, "/orders?customer=ann"},
			} {
				hdr := http.Header{"Authorization": c.auth, "Idempotency-Key": {"k"}, "Content-Type": {"application/json"}}
				code, rh, b := send(t, r.method, h.srv.URL+r.path, hdr, orderBody("ann", 1))
				if code != http.StatusUnauthorized {
					t.Errorf("%s %s = %d %s, want 401", r.method, r.path, code, b)
					continue
				}
				decodeProblem(t, rh, b)
				want := `Bearer realm="orders"`
				if c.error {
					want += `, error="invalid_token"`
				}
				if got := rh.Get("WWW-Authenticate"); got != want {
					t.Errorf("%s %s: WWW-Authenticate %q, want %q", r.method, r.path, got, want)
				}
			}
		})
	}
	if n, _ := repo.Count(context.Background()); n != 0 {
		t.Errorf("unauthenticated requests made %d orders", n)
	}
	for _, path := range []string{"/livez", "/readyz", "/startupz"} {
		if code, _, _ := send(t, http.MethodGet, h.srv.URL+path, http.Header{}, nil); code != http.StatusOK {
			t.Errorf("GET %s without a key = %d, want 200: health needs no key", path, code)
		}
	}
}

func TestNewRefusesBadAPIKeys(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	for name, keys := range map[string]map[string]string{
		"none":              nil,
		"short key":         {"short": "acme"},
		"key with a space":  {"a key with spaces in it": "acme"},
		"empty tenant":      {keyA: ""},
		"control in tenant": {keyA: "ac\x00me"},
	} {
		if _, err := New(Config{Repository: repo, PaymentURL: "http://127.0.0.1:1", APIKeys: keys}); err == nil {
			t.Errorf("New with API keys %s = nil error, want one", name)
		}
	}
}

// TestTenantsDoNotShareKeysOrOrders is issue 14's check: client B, with
// another tenant's API key, reusing client A's idempotency key gets its own
// fresh order (no replay of A's, no 422 about A's body), and cannot read,
// change or list A's orders: they are not found.
func TestTenantsDoNotShareKeysOrOrders(t *testing.T) {
	repoUnderTest(t, func(t *testing.T, repo Repository) {
		_, pay := newPayments(t)
		h := newHarness(t, repo, nil, "orders", pay)
		code, _, b := call(t, h, http.MethodPost, "/orders", keyA, keyed("shared"), orderBody("ann", 1))
		if code != http.StatusCreated {
			t.Fatalf("A's create = %d %s", code, b)
		}
		a := decodeOrder(t, b)

		for _, body := range [][]byte{orderBody("bob", 2), orderBody("ann", 1)} { // another body, then A's
			code, hdr, b := call(t, h, http.MethodPost, "/orders", keyB, keyed("shared"), body)
			if code != http.StatusCreated || hdr.Get("Idempotent-Replayed") != "" {
				t.Fatalf("B's create with A's key = %d (replayed %q) %s, want 201 from a run of its own", code, hdr.Get("Idempotent-Replayed"), b)
			}
			o := decodeOrder(t, b)
			if o.ID == a.ID || o.Tenant != "tenant-b" {
				t.Errorf("B's create with A's key answered order %s of tenant %q; A's is %s", o.ID, o.Tenant, a.ID)
			}
			// B's retry is a replay of B's own answer.
			code, hdr, b = call(t, h, http.MethodPost, "/orders", keyB, keyed("shared"), body)
			if code != http.StatusCreated || hdr.Get("Idempotent-Replayed") != "true" || decodeOrder(t, b).ID != o.ID {
				t.Errorf("B's retry = %d (replayed %q) %s, want its own order %s replayed", code, hdr.Get("Idempotent-Replayed"), b, o.ID)
			}
			if bytes.Equal(body, orderBody("bob", 2)) {
				// The second round reuses the key with A's body: a key is
				// B's own now, so that is B's 422.
				code, _, _ := call(t, h, http.MethodPost, "/orders", keyB, keyed("shared"), orderBody("ann", 1))
				if code != http.StatusUnprocessableEntity {
					t.Errorf("B reusing its own key with another body = %d, want 422", code)
				}
				break
			}
		}

		notFound := func(what string, code int, hdr http.Header, b []byte) problemDetails {
			t.Helper()
			if code != http.StatusNotFound {
				t.Errorf("%s = %d %s, want 404", what, code, b)
				return problemDetails{}
			}
			return decodeProblem(t, hdr, b)
		}
		code, hdr, b := call(t, h, http.MethodGet, "/orders/"+a.ID, keyB, nil, nil)
		other := notFound("B's GET of A's order", code, hdr, b)
		code, hdr, b = call(t, h, http.MethodGet, "/orders/"+a.ID[:2]+"000000000000000000000000", keyB, nil, nil)
		missing := notFound("GET of a missing order", code, hdr, b)
		if other.Title != missing.Title || other.Detail != missing.Detail {
			t.Errorf("B's GET of A's order says %q/%q, a missing order %q/%q: want the same, so that existence does not leak",
				other.Title, other.Detail, missing.Title, missing.Detail)
		}
		for _, action := range []string{"pay", "ship", "cancel"} {
			code, hdr, b := call(t, h, http.MethodPost, "/orders/"+a.ID+"/"+action, keyB, http.Header{"If-Match": {`"v1"`}}, nil)
			notFound("B's "+action+" of A's order", code, hdr, b)
		}
		if code, _, b := call(t, h, http.MethodGet, "/orders/"+a.ID, keyA, nil, nil); code != http.StatusOK || decodeOrder(t, b).State != Created {
			t.Errorf("A's GET of its order after B's attempts = %d %s, want 200 and still created", code, b)
		}

		if err := h.svc.ReadModel().Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		list := func(apiKey string) Listing {
			code, _, b := call(t, h, http.MethodGet, "/orders?customer=ann", apiKey, nil, nil)
			var l Listing
			if code != http.StatusOK || json.Unmarshal(b, &l) != nil {
				t.Fatalf("listing = %d %s", code, b)
			}
			return l
		}
		if l := list(keyA); len(l.Orders) != 1 || l.Orders[0].ID != a.ID {
			t.Errorf("A's listing of ann = %+v, want A's one order", l.Orders)
		}
		for _, o := range list(keyB).Orders {
			if o.Tenant != "tenant-b" {
				t.Errorf("B's listing of ann holds order %s of tenant %q", o.ID, o.Tenant)
			}
		}
	})
}

// TestCreateRecoversTheOrderOfItsKey covers a run that made its order and
// died before its key was completed: the key is free in the idempotency
// store, but the orders table has the order under it. The retry must answer
// with that order, not make a second.
func TestCreateRecoversTheOrderOfItsKey(t *testing.T) {
	repoUnderTest(t, func(t *testing.T, repo Repository) {
		ctx := context.Background()
		_, pay := newPayments(t)
		h := newHarness(t, repo, nil, "orders", pay)
		var req NewOrderRequest
		_ = json.Unmarshal(orderBody("gus", 3), &req)
		amount, _ := req.validate()
		left := Order{ID: "2-left-by-a-dead-run", Tenant: "tenant-a", IdempotencyKey: "crashed", Customer: req.Customer,
			Items: req.Items, AmountCents: amount, Currency: req.Currency, State: Created, Version: 1, Partition: 2}
		if err := repo.Create(ctx, left); err != nil {
			t.Fatal(err)
		}
		code, hdr, b := call(t, h, http.MethodPost, "/orders", keyA, keyed("crashed"), orderBody("gus", 3))
		if code != http.StatusCreated || decodeOrder(t, b).ID != left.ID || hdr.Get("Location") != "/orders/"+left.ID {
			t.Errorf("retry of a crashed create = %d %s (Location %s), want 201 with order %s", code, b, hdr.Get("Location"), left.ID)
		}
		// A quoted key is the same key.
		code, _, b = call(t, h, http.MethodPost, "/orders", keyA, http.Header{"Idempotency-Key": {`"crashed"`}}, orderBody("gus", 3))
		if code != http.StatusCreated || decodeOrder(t, b).ID != left.ID {
			t.Errorf("retry with the key quoted = %d %s, want 201 with order %s", code, b, left.ID)
		}
		left2 := left
		left2.ID, left2.IdempotencyKey = "3-left-too", "crashed-2"
		if err := repo.Create(ctx, left2); err != nil {
			t.Fatal(err)
		}
		code, hdr, b = call(t, h, http.MethodPost, "/orders", keyA, keyed("crashed-2"), orderBody("gus", 4))
		if code != http.StatusUnprocessableEntity {
			t.Errorf("a crashed create's key reused with another body = %d %s, want 422", code, b)
		} else {
			decodeProblem(t, hdr, b)
		}
		if n, _ := repo.Count(ctx); n != 2 {
			t.Errorf("orders = %d, want the 2 left by the dead runs and no other", n)
		}
	})
}

// TestBadInputIsRefusedWithoutInternalDetail sends what trying the API
// found: every answer is a 4xx problem with a request id, no order is made,
// and nothing of the database's own text reaches the client.
func TestBadInputIsRefusedWithoutInternalDetail(t *testing.T) {
	repoUnderTest(t, func(t *testing.T, repo Repository) {
		_, pay := newPayments(t)
		h := newHarness(t, repo, nil, "orders", pay)
		good := string(orderBody("ann", 1))
		cases := []struct {
			name        string
			contentType string
			body        string
			want        int
		}{
			{"NUL in customer", "application/json", `{"customer":"a\u0000b","currency":"EUR","items":[{"sku":"x","quantity":1,"price_cents":1}]}`, 422},
			{"NUL in sku", "application/json", `{"customer":"ann","currency":"EUR","items":[{"sku":"x\u0000","quantity":1,"price_cents":1}]}`, 422},
			{"NUL in currency", "application/json", `{"customer":"ann","currency":"EU\u0000","items":[{"sku":"x","quantity":1,"price_cents":1}]}`, 422},
			{"control character in customer", "application/json", `{"customer":"a\u001bb","currency":"EUR","items":[{"sku":"x","quantity":1,"price_cents":1}]}`, 422},
			{"invalid UTF-8", "application/json", "{\"customer\":\"a\xffb\",\"currency\":\"EUR\",\"items\":[{\"sku\":\"x\",\"quantity\":1,\"price_cents\":1}]}", 422},
			{"long currency", "application/json", `{"customer":"ann","currency":"` + strings.Repeat("E", 1000) + `","items":[{"sku":"x","quantity":1,"price_cents":1}]}`, 422},
			{"lower-case currency", "application/json", `{"customer":"ann","currency":"eur","items":[{"sku":"x","quantity":1,"price_cents":1}]}`, 422},
			{"long sku", "application/json", `{"customer":"ann","currency":"EUR","items":[{"sku":"` + strings.Repeat("s", 65) + `","quantity":1,"price_cents":1}]}`, 422},
			{"long customer", "application/json", `{"customer":"` + strings.Repeat("c", 129) + `","currency":"EUR","items":[{"sku":"x","quantity":1,"price_cents":1}]}`, 422},
			{"no items", "application/json", `{"customer":"ann","currency":"EUR","items":[]}`, 422},
			{"null", "application/json", `null`, 422},
			{"trailing data", "application/json", good + `x`, 400},
			{"a second JSON value", "application/json", good + good, 400},
			{"a second value after white space", "application/json", good + "\n 7", 400},
			{"unknown field", "application/json", `{"customer":"ann","currency":"EUR","items":[{"sku":"x","quantity":1,"price_cents":1}],"admin":true}`, 400},
			{"wrong type", "application/json", `{"customer":7}`, 400},
			{"truncated", "application/json", good[:20], 400},
			{"empty body", "application/json", ``, 400},
			{"an array", "application/json", `[` + good + `]`, 400},
			{"text/plain", "text/plain", good, 415},
			{"no Content-Type", "-", good, 415},
			{"form", "application/x-www-form-urlencoded", good, 415},
			{"JSON in latin-1", "application/json; charset=iso-8859-1", good, 415},
			{"too large", "application/json", `{"customer":"` + strings.Repeat("c", maxBody) + `"}`, 413},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				key := fmt.Sprintf("bad-%d", i)
				hdr := keyed(key)
				hdr["Content-Type"] = nil
				if c.contentType != "-" {
					hdr.Set("Content-Type", c.contentType)
				}
				code, rh, b := call(t, h, http.MethodPost, "/orders", keyA, hdr, []byte(c.body))
				if code != c.want {
					t.Errorf("POST /orders %s = %d %s, want %d", c.name, code, b, c.want)
				}
				if code == http.StatusUnsupportedMediaType && rh.Get("Accept-Post") != "application/json" {
					t.Errorf("415 with Accept-Post %q, want application/json", rh.Get("Accept-Post"))
				}
				if code != http.StatusRequestEntityTooLarge { // the idempotency middleware's own problem
					decodeProblem(t, rh, b)
				}
				for _, leak := range []string{"SQLSTATE", "ERROR:", "pgx", "0x00", "json:"} {
					if bytes.Contains(b, []byte(leak)) {
						t.Errorf("answer %s holds %q", b, leak)
					}
				}
				// The refusal kept nothing: the corrected request may use the key.
				if code, _, b := call(t, h, http.MethodPost, "/orders", keyA, keyed(key), []byte(good)); code != http.StatusCreated {
					t.Errorf("the good request under the refused one's key = %d %s, want 201", code, b)
				}
			})
		}
		for i, ct := range []string{"application/json; charset=utf-8", "Application/JSON;charset=UTF-8"} {
			hdr := keyed(fmt.Sprintf("ct-%d", i))
			hdr.Set("Content-Type", ct)
			if code, _, b := call(t, h, http.MethodPost, "/orders", keyA, hdr, []byte(good+"\n")); code != http.StatusCreated {
				t.Errorf("POST /orders as %q = %d %s, want 201", ct, code, b)
			}
		}
	})
}

// brokenRepo fails every call with an error whose text must not reach a
// client.
type brokenRepo struct{ Repository }

var errSecret = errors.New(`ERROR: relation "orders" has secret detail (SQLSTATE 42P01)`)

func (brokenRepo) Create(context.Context, Order) error        { return errSecret }
func (brokenRepo) Get(context.Context, string) (Order, error) { return Order{}, errSecret }

type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestInternalErrorsAreLoggedNotSent(t *testing.T) {
	mem, _ := NewMemoryRepository(4)
	_, pay := newPayments(t)
	var logs syncBuffer
	h := newHarnessConfig(t, Config{
		Repository: brokenRepo{mem}, Partitions: 4, PaymentURL: pay.URL,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	for _, r := range []struct {
		method, path string
		hdr          http.Header
		body         []byte
	}{
		{http.MethodPost, "/orders", keyed("k"), orderBody("ann", 1)},
		{http.MethodGet, "/orders/1-x", nil, nil},
		{http.MethodPost, "/orders/1-x/pay", nil, nil},
	} {
		hdr := r.hdr
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set("X-Request-Id", "req-"+strings.ReplaceAll(r.path, "/", "_"))
		code, rh, b := call(t, h, r.method, r.path, keyA, hdr, r.body)
		if code != http.StatusInternalServerError {
			t.Errorf("%s %s with a failing repository = %d %s, want 500", r.method, r.path, code, b)
			continue
		}
		p := decodeProblem(t, rh, b)
		if p.RequestID != hdr.Get("X-Request-Id") {
			t.Errorf("%s %s: request id %q, want the client's %q", r.method, r.path, p.RequestID, hdr.Get("X-Request-Id"))
		}
		if bytes.Contains(b, []byte("secret")) || bytes.Contains(b, []byte("SQLSTATE")) {
			t.Errorf("%s %s sent the error's text: %s", r.method, r.path, b)
		}
		if l := logs.String(); !strings.Contains(l, "secret detail") || !strings.Contains(l, "request_id="+p.RequestID) {
			t.Errorf("%s %s: the log lacks the error or its request id %s:\n%s", r.method, r.path, p.RequestID, l)
		}
	}
	// A request id that is not sane is replaced.
	code, rh, _ := call(t, h, http.MethodGet, "/orders/1-x", keyA, http.Header{"X-Request-Id": {"a b\"c"}}, nil)
	if id := rh.Get("X-Request-Id"); code != http.StatusInternalServerError || id == "" || strings.ContainsAny(id, " \"") {
		t.Errorf("X-Request-Id for a client's bad one = %q (status %d), want a fresh one", id, code)
	}
}

func TestIfMatchListsFollowRFC9110(t *testing.T) {
	repo, _ := NewMemoryRepository(4)
	_, pay := newPayments(t)
	h := newHarness(t, repo, nil, "orders", pay)
	cases := []struct {
		name    string
		ifMatch []string
		want    int
	}{
		{"the current tag", []string{`"v1"`}, 200},
		{"a list holding it", []string{`"v0", "v1"`}, 200},
		{"a list holding it last, no spaces", []string{`"v7","v0","v1"`}, 200},
		{"a list without it", []string{`"v0", "v2"`}, 412},
		{"the tag weak: strong comparison never matches", []string{`W/"v1"`}, 412},
		{"weak and other strong tags", []string{`W/"v1", "v2"`}, 412},
		{"any", []string{`*`}, 200},
		{"two field lines", []string{`"v0"`, `"v1"`}, 200},
		{"empty elements", []string{`, "v1" ,,`}, 200},
		{"a stale tag", []string{`"v9"`}, 412},
		{"a tag of the same prefix", []string{`"v1x"`}, 412},
		{"unquoted", []string{`v1`}, 400},
		{"no comma", []string{`"v0" "v1"`}, 400},
		{"unterminated", []string{`"v1`}, 400},
		{"star in a list", []string{`*, "v1"`}, 400},
	}
	for i, c := range cases {
		o := createOrder(t, h, fmt.Sprintf("im-%d", i))
		code, hdr, b := call(t, h, http.MethodPost, "/orders/"+o.ID+"/cancel", keyA, http.Header{"If-Match": c.ifMatch}, nil)
		if code != c.want {
			t.Errorf("%s: cancel with If-Match %q = %d %s, want %d", c.name, c.ifMatch, code, b, c.want)
			continue
		}
		if code == http.StatusPreconditionFailed && hdr.Get("ETag") != `"v1"` {
			t.Errorf("%s: 412 with ETag %q, want the current \"v1\"", c.name, hdr.Get("ETag"))
		}
		got, _ := repo.Get(context.Background(), o.ID)
		if changed := got.State == Cancelled; changed != (code == http.StatusOK) {
			t.Errorf("%s: answered %d but the order is %s", c.name, code, got.State)
		}
	}

	o := createOrder(t, h, "inm")
	for _, c := range []struct {
		inm  []string
		want int
	}{
		{[]string{`"v1"`}, 304},
		{[]string{`W/"v1"`}, 304}, // weak comparison
		{[]string{`"v0", W/"v1"`}, 304},
		{[]string{`*`}, 304},
		{[]string{`"v0"`}, 200},
		{[]string{`"v0"`, `"v2"`}, 200},
		{[]string{`v1`}, 400},
	} {
		code, _, b := call(t, h, http.MethodGet, "/orders/"+o.ID, keyA, http.Header{"If-None-Match": c.inm}, nil)
		if code != c.want {
			t.Errorf("GET with If-None-Match %q = %d %s, want %d", c.inm, code, b, c.want)
		}
	}
}
