package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark/examples/orderservice"
)

// stats is what the clients saw.
type stats struct {
	requests       atomic.Int64
	idemErrors     atomic.Int64 // GETs and keyed creates that failed (5xx, transport error, lost order)
	createConflict atomic.Int64 // 409 in flight on a create, waited out as the protocol says
	payRefused     atomic.Int64 // pay answered 5xx while the payment provider was down
	raceLost       atomic.Int64 // 409/412 on a transition that lost a race
	duplicates     atomic.Int64 // creates resent with a key already used

	mu      sync.Mutex        // guards the fields below
	keys    map[string]string // idempotency key → order id
	pending map[string][]byte // keys whose create never got its answer → body
	orders  []string
	samples []string // the first few failures, for the report
	split   []string // keys that answered with two different orders
}

func (s *stats) fail(format string, args ...any) {
	s.idemErrors.Add(1)
	s.mu.Lock()
	if len(s.samples) < 5 {
		s.samples = append(s.samples, fmt.Sprintf(format, args...))
	}
	s.mu.Unlock()
}

// client is one simulated user of the API, behind the proxy.
type client struct {
	http *http.Client
	base string
	rng  *rand.Rand
	st   *stats
}

func (c *client) do(ctx context.Context, method, path string, body []byte, hdr map[string]string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c.st.requests.Add(1)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// create posts an order under key until it gets its answer: a 409 (the first
// request with the key is still running) is waited out for its Retry-After;
// anything else that is not 201 is a failure the client saw.
func (c *client) create(ctx context.Context, key string, body []byte) {
	for attempt := 0; attempt < 8 && ctx.Err() == nil; attempt++ {
		code, hdr, b, err := c.do(ctx, http.MethodPost, "/orders", body, map[string]string{"Idempotency-Key": key})
		switch {
		case ctx.Err() != nil:
		case err != nil:
			c.st.fail("POST /orders key %s: %v", key, err)
		case code == http.StatusCreated:
			var o orderservice.Order
			if err := json.Unmarshal(b, &o); err != nil {
				c.st.fail("POST /orders key %s: body %q: %v", key, b, err)
				return
			}
			c.st.mu.Lock()
			if prev, ok := c.st.keys[key]; ok && prev != o.ID {
				c.st.split = append(c.st.split, fmt.Sprintf("%s → %s and %s", key, prev, o.ID))
			} else if !ok {
				c.st.keys[key] = o.ID
				c.st.orders = append(c.st.orders, o.ID)
			}
			delete(c.st.pending, key)
			c.st.mu.Unlock()
			return
		case code == http.StatusConflict:
			c.st.createConflict.Add(1)
			wait, _ := strconv.Atoi(hdr.Get("Retry-After"))
			sleep(ctx, time.Duration(max(wait, 0))*time.Second+50*time.Millisecond)
			continue
		default:
			c.st.fail("POST /orders key %s: %d %s", key, code, bytes.TrimSpace(b))
		}
		sleep(ctx, 100*time.Millisecond)
	}
	c.st.mu.Lock()
	if _, ok := c.st.keys[key]; !ok {
		c.st.pending[key] = body
	}
	c.st.mu.Unlock()
}

func (c *client) get(ctx context.Context, id string) (orderservice.Order, string, bool) {
	code, hdr, b, err := c.do(ctx, http.MethodGet, "/orders/"+id, nil, nil)
	switch {
	case ctx.Err() != nil:
		return orderservice.Order{}, "", false
	case err != nil:
		c.st.fail("GET /orders/%s: %v", id, err)
		return orderservice.Order{}, "", false
	case code != http.StatusOK:
		c.st.fail("GET /orders/%s: %d %s", id, code, bytes.TrimSpace(b))
		return orderservice.Order{}, "", false
	}
	var o orderservice.Order
	if err := json.Unmarshal(b, &o); err != nil {
		c.st.fail("GET /orders/%s: %v", id, err)
		return o, "", false
	}
	return o, hdr.Get("ETag"), true
}

func (c *client) transition(ctx context.Context, id, action string) {
	_, etag, ok := c.get(ctx, id)
	if !ok {
		return
	}
	code, _, _, err := c.do(ctx, http.MethodPost, "/orders/"+id+"/"+action, nil, map[string]string{"If-Match": etag})
	switch {
	case ctx.Err() != nil, err != nil:
		// A transition is not idempotent without a key: the client may not
		// know whether it happened, and finds out with its next GET.
	case code == http.StatusConflict || code == http.StatusPreconditionFailed:
		c.st.raceLost.Add(1)
	case code >= 500 && action == "pay":
		c.st.payRefused.Add(1)
	}
}

func (c *client) list(ctx context.Context, customer string) {
	code, _, b, err := c.do(ctx, http.MethodGet, "/orders?customer="+customer, nil, nil)
	switch {
	case ctx.Err() != nil:
	case err != nil:
		c.st.fail("GET /orders?customer=%s: %v", customer, err)
	case code != http.StatusOK:
		c.st.fail("GET /orders?customer=%s: %d %s", customer, code, bytes.TrimSpace(b))
	}
}

// work runs one client until ctx ends.
func (c *client) work(ctx context.Context, id int) {
	n := 0
	for ctx.Err() == nil {
		n++
		customer := "cust-" + strconv.Itoa(c.rng.IntN(40))
		switch r := c.rng.Float64(); {
		case r < 0.30:
			key := fmt.Sprintf("c%d-%d", id, n)
			body, _ := json.Marshal(orderservice.NewOrderRequest{Customer: customer, Currency: "EUR",
				Items: []orderservice.Item{{SKU: "sku-" + strconv.Itoa(c.rng.IntN(100)), Quantity: 1 + c.rng.IntN(3), PriceCents: 500 + int64(c.rng.IntN(5000))}}})
			if c.rng.Float64() < 0.25 {
				// A duplicate burst: the same request twice at once, as a
				// client that timed out and retried too eagerly sends it.
				c.st.duplicates.Add(1)
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { defer wg.Done(); c.create(ctx, key, body) }()
				c.create(ctx, key, body)
				wg.Wait()
			} else {
				c.create(ctx, key, body)
			}
			if c.rng.Float64() < 0.1 {
				c.st.duplicates.Add(1)
				c.create(ctx, key, body) // and later once more: a replay
			}
		case r < 0.60:
			if id := c.someOrder(); id != "" {
				c.get(ctx, id)
			}
		case r < 0.85:
			if id := c.someOrder(); id != "" {
				c.transition(ctx, id, []string{"pay", "pay", "ship", "cancel"}[c.rng.IntN(4)])
			}
		default:
			c.list(ctx, customer)
		}
	}
}

func (c *client) someOrder() string {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	if len(c.st.orders) == 0 {
		return ""
	}
	return c.st.orders[c.rng.IntN(len(c.st.orders))]
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
