// Package paymentsim is a fake payment provider for the examples and the
// tour: an HTTP API that charges an amount once per Idempotency-Key, like
// Stripe's, and that can be told to fail, slow down or go away, so that the
// order service's retries and circuit breaker have something to do.
package paymentsim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
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

// Provider is the fake payment API. It is safe for concurrent use. Use New.
type Provider struct {
	mu       sync.Mutex // guards the fields below
	fault    Fault
	rng      *rand.Rand
	byKey    map[string]Charge // Idempotency-Key → charge
	byOrder  map[string]int    // order id → charges made for it
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

// ServeHTTP serves POST /charges.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/charges" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
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
		c = Charge{ID: fmt.Sprintf("ch_%d", len(p.byKey)+1), OrderID: req.OrderID, AmountCents: req.AmountCents, Currency: req.Currency}
		p.byKey[key] = c
		p.byOrder[req.OrderID]++
	}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if ok {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	_ = json.NewEncoder(w).Encode(c)
}
