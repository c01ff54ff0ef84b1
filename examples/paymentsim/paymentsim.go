// Package paymentsim is a fake payment provider for the examples and the
// tour: an HTTP API that charges an amount once per Idempotency-Key, like
// Stripe's, and that can be told to fail, slow down or go away, so that the
// order service's retries and circuit breaker have something to do.
//
//	POST /charges                          charge (Idempotency-Key required)
//	GET  /charges?limit=&starting_after=   every charge made, oldest first
//
// The listing lets anyone audit the charges from outside: two charges for
// one order are a double charge ([FetchCharges] reads it all). [New] returns
// a [Provider], an http.Handler that [Provider.SetFault] makes misbehave
// (a [Fault]); command paymentsim (cmd/paymentsim) serves one on its own.
package paymentsim

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault is the trouble the provider is in.
type Fault struct {
	// FailRate is the share of requests, in [0, 1], answered 503 without
	// charging.
	FailRate float64
	// Latency is added to every request.
	Latency time.Duration
	// Decline answers every charge 402 Payment Required, without charging.
	Decline bool
}

// Charge is one payment.
type Charge struct {
	ID          string `json:"id"`
	OrderID     string `json:"order_id"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
}

// ChargeList is a page of the listing of charges, oldest first.
type ChargeList struct {
	Data []Charge `json:"data"`
	// HasMore reports that more charges follow the last of Data: ask
	// again with starting_after set to its ID.
	HasMore bool `json:"has_more"`
}

// Provider is the fake payment API. It is safe for concurrent use. Use New.
type Provider struct {
	mu       sync.Mutex // guards the fields below
	fault    Fault
	rng      *rand.Rand
	byKey    map[string]Charge // Idempotency-Key → charge
	byOrder  map[string]int    // order id → charges made for it
	charges  []Charge          // in the order they were made; charges[i].ID is "ch_<i+1>"
	requests int
	failures int
}

// New returns a healthy provider whose random failures follow seed.
func New(seed uint64) *Provider {
	return &Provider{
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		byKey:   make(map[string]Charge),
		byOrder: make(map[string]int),
	}
}

// SetFault changes the provider's trouble; the zero Fault is healthy.
func (p *Provider) SetFault(f Fault) {
	p.mu.Lock()
	p.fault = f
	p.mu.Unlock()
}

// Stats reports requests seen, requests failed on purpose, distinct charges,
// and the largest number of charges any one order received (1 when every
// order was charged at most once).
func (p *Provider) Stats() (requests, failures, charges, maxPerOrder int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.byOrder {
		maxPerOrder = max(maxPerOrder, n)
	}
	return p.requests, p.failures, len(p.byKey), maxPerOrder
}

// ServeHTTP serves POST /charges and GET /charges.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/charges" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodPost:
		p.charge(w, r)
	case http.MethodGet, http.MethodHead:
		p.list(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// Limits of a page of the listing.
const (
	defaultPage = 100
	maxPage     = 1000
)

// list serves GET /charges: up to limit charges (default 100, at most 1000)
// after the charge named by starting_after, oldest first.
func (p *Provider) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPage {
			http.Error(w, fmt.Sprintf("limit must be 1 to %d", maxPage), http.StatusBadRequest)
			return
		}
		limit = n
	}
	start := 0
	if v := q.Get("starting_after"); v != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(v, "ch_"))
		if !strings.HasPrefix(v, "ch_") || err != nil || n < 1 {
			http.Error(w, "starting_after must be a charge id", http.StatusBadRequest)
			return
		}
		start = n
	}
	p.mu.Lock()
	start = min(start, len(p.charges))
	end := min(start+limit, len(p.charges))
	page := ChargeList{Data: append([]Charge{}, p.charges[start:end]...), HasMore: end < len(p.charges)}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(page)
}

// charge serves POST /charges.
func (p *Provider) charge(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		http.Error(w, "Idempotency-Key required", http.StatusBadRequest)
		return
	}
	var req Charge
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil || req.OrderID == "" || req.AmountCents < 0 {
		http.Error(w, "bad charge", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.requests++
	f := p.fault
	fail := f.FailRate > 0 && p.rng.Float64() < f.FailRate
	if fail {
		p.failures++
	}
	p.mu.Unlock()
	if f.Latency > 0 {
		select {
		case <-time.After(f.Latency):
		case <-r.Context().Done():
			return
		}
	}
	if f.Decline {
		http.Error(w, "card declined", http.StatusPaymentRequired)
		return
	}
	if fail {
		w.Header().Set("Retry-After", "0")
		http.Error(w, "payment provider unavailable", http.StatusServiceUnavailable)
		return
	}
	p.mu.Lock()
	c, ok := p.byKey[key]
	if !ok {
		c = Charge{ID: fmt.Sprintf("ch_%d", len(p.charges)+1), OrderID: req.OrderID, AmountCents: req.AmountCents, Currency: req.Currency}
		p.byKey[key] = c
		p.byOrder[req.OrderID]++
		p.charges = append(p.charges, c)
	}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if ok {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	_ = json.NewEncoder(w).Encode(c)
}

// FetchCharges reads the whole listing of the provider at baseURL through its
// HTTP API, page by page, as an auditor outside the provider would. It
// returns an error for a transport failure or an answer other than 200.
func FetchCharges(ctx context.Context, client *http.Client, baseURL string) ([]Charge, error) {
	if client == nil {
		client = http.DefaultClient
	}
	var all []Charge
	after := ""
	for {
		u := strings.TrimRight(baseURL, "/") + "/charges?limit=" + strconv.Itoa(maxPage)
		if after != "" {
			u += "&starting_after=" + url.QueryEscape(after)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		var page ChargeList
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("paymentsim: GET /charges: %s", resp.Status)
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("paymentsim: GET /charges: %w", err)
		}
		all = append(all, page.Data...)
		if !page.HasMore || len(page.Data) == 0 {
			return all, nil
		}
		after = page.Data[len(page.Data)-1].ID
	}
}
