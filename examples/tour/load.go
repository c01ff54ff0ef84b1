package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark/examples/orderservice"
)

// stats is what the clients saw.
type stats struct {
	start          time.Time
	requests       atomic.Int64
	idemErrors     atomic.Int64 // GETs and keyed creates that failed (5xx, transport error, lost order)
	createConflict atomic.Int64 // 409 in flight on a create, waited out as the protocol says
	payRefused     atomic.Int64 // pay answered 5xx while the payment provider was down
	raceLost       atomic.Int64 // 409/412 on a transition that lost a race
	duplicates     atomic.Int64 // creates resent with a key already used
	shed           atomic.Int64 // requests refused by a limiter or a rate limit, with Retry-After
	gaveUp         atomic.Int64 // reads given up after being refused three times
	actions        atomic.Int64 // actions begun (an action is one or a few requests)

	mu      sync.Mutex         // guards the fields below
	keys    map[string]string  // idempotency key → order id
	pending map[string]pending // keys whose create never got its answer
	orders  []string           // every order the clients created
	owner   map[string]string  // order id → the API key of its tenant
	samples []string           // the first few failures, for the report
	split   []string           // keys that answered with two different orders
	calls   []call             // every request, for the phases' figures
}

// pending is a create that never got its answer: its tenant's API key and
// its body, to send it again after the run.
type pending struct {
	apiKey string
	body   []byte
}

// call is one request as a client saw it.
type call struct {
	at      time.Duration // since the start of the load
	latency time.Duration
	class   class
	outcome outcome
}

// class is a request's criticality under the order service's DefaultRules.
type class uint8

const (
	critical  class = iota // reads of an order, creates, transitions
	normal                 // listings
	sheddable              // reports
)

// outcome is how a request ended.
type outcome uint8

const (
	ok     outcome = iota // 2xx or 304
	shed                  // refused by a limiter or a rate limit, with Retry-After
	failed                // anything else
	cut                   // unanswered when the load ended: sent, neither answered nor failed
)

func (s *stats) fail(format string, args ...any) {
	s.idemErrors.Add(1)
	s.mu.Lock()
	if len(s.samples) < 5 {
		s.samples = append(s.samples, fmt.Sprintf(format, args...))
	}
	s.mu.Unlock()
}

// client is one simulated user of the API, behind the proxy, acting for one
// tenant.
type client struct {
	http   *http.Client
	base   string
	apiKey string
	rng    *rand.Rand
	st     *stats
}

// answer is a response as a client reads it.
type answer struct {
	code  int
	hdr   http.Header
	body  []byte
	err   error
	after time.Duration // when shed: how long to wait (Retry-After)
}

// shed reports whether the answer is a refusal by the order service's
// Limiter (503, or 429 for a tenant over its share) or its rate limit (429):
// the request did nothing, and may be sent again after Retry-After. Any other
// 5xx is a failure.
func (a answer) shed() bool { return a.after > 0 }

func (c *client) do(ctx context.Context, cl class, method, path string, body []byte, hdr map[string]string) answer {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c.st.requests.Add(1)
	start := time.Now()
	resp, err := c.http.Do(req)
	var a answer
	if err != nil {
		a.err = err
	} else {
		a.code, a.hdr = resp.StatusCode, resp.Header
		a.body, a.err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	lat := time.Since(start)
	o := failed
	switch {
	case ctx.Err() != nil:
		o = cut // the load ended first: counted as sent, nothing else
	case a.err != nil:
	case a.code < 400:
		o = ok
	case refusal(a.code, a.body):
		o = shed
		c.st.shed.Add(1)
		secs, _ := strconv.Atoi(a.hdr.Get("Retry-After"))
		a.after = time.Duration(max(secs, 1)) * time.Second
	}
	c.st.mu.Lock()
	c.st.calls = append(c.st.calls, call{at: start.Sub(c.st.start), latency: lat, class: cl, outcome: o})
	c.st.mu.Unlock()
	return a
}

// refusal reports whether a response is the refusal of a limit: a 503 or 429
// whose problem comes from package limit's or package ratelimit's
// middleware, which answers before the handler runs, or the proxy's 503
// when every backend was at its concurrency limit (its detail also starts
// "limit: rejected"), sent to no backend.
func refusal(code int, body []byte) bool {
	if code != http.StatusServiceUnavailable && code != http.StatusTooManyRequests {
		return false
	}
	var p struct {
		Detail string `json:"detail"`
	}
	if json.Unmarshal(body, &p) != nil {
		return false
	}
	return strings.HasPrefix(p.Detail, "limit: rejected") || strings.HasPrefix(p.Detail, "rate limit exceeded")
}

// wait sleeps for a refused request's Retry-After, and a little more, so
// that the clients refused together do not all come back at once.
func (c *client) wait(ctx context.Context, a answer) {
	sleep(ctx, a.after+time.Duration(c.rng.IntN(200))*time.Millisecond)
}

// create posts an order under key until it gets its answer: a 409 (the first
// request with the key is still running) is waited out for its Retry-After,
// and so is a refusal by a limit; anything else that is not 201 is a failure
// the client saw.
func (c *client) create(ctx context.Context, key string, body []byte) {
	for attempt := 0; attempt < 8 && ctx.Err() == nil; attempt++ {
		a := c.do(ctx, critical, http.MethodPost, "/orders", body, map[string]string{"Idempotency-Key": key})
		switch {
		case ctx.Err() != nil:
		case a.err != nil:
			c.st.fail("POST /orders key %s: %v", key, a.err)
		case a.code == http.StatusCreated:
			var o orderservice.Order
			if err := json.Unmarshal(a.body, &o); err != nil {
				c.st.fail("POST /orders key %s: body %q: %v", key, a.body, err)
				return
			}
			c.st.mu.Lock()
			if prev, ok := c.st.keys[key]; ok && prev != o.ID {
				c.st.split = append(c.st.split, fmt.Sprintf("%s → %s and %s", key, prev, o.ID))
			} else if !ok {
				c.st.keys[key] = o.ID
				c.st.orders = append(c.st.orders, o.ID)
				c.st.owner[o.ID] = c.apiKey
			}
			delete(c.st.pending, key)
			c.st.mu.Unlock()
			return
		case a.shed():
			c.wait(ctx, a) // the same key again, later: nothing was done
			continue
		case a.code == http.StatusConflict:
			c.st.createConflict.Add(1)
			wait, _ := strconv.Atoi(a.hdr.Get("Retry-After"))
			sleep(ctx, time.Duration(max(wait, 0))*time.Second+50*time.Millisecond)
			continue
		default:
			c.st.fail("POST /orders key %s: %d %s", key, a.code, bytes.TrimSpace(a.body))
		}
		sleep(ctx, 100*time.Millisecond)
	}
	c.st.mu.Lock()
	if _, ok := c.st.keys[key]; !ok {
		c.st.pending[key] = pending{apiKey: c.apiKey, body: body}
	}
	c.st.mu.Unlock()
}

// read GETs path, sent again after Retry-After when a limit refuses it, three
// times at most: a refused read did nothing, and the client gives up on it
// after the third refusal (gaveUp). Any other answer but 200 is a failure the
// client saw.
func (c *client) read(ctx context.Context, cl class, path string) (answer, bool) {
	for attempt := 1; ; attempt++ {
		a := c.do(ctx, cl, http.MethodGet, path, nil, nil)
		switch {
		case ctx.Err() != nil:
			return a, false
		case a.err != nil:
			c.st.fail("GET %s: %v", path, a.err)
			return a, false
		case a.shed() && attempt < 3:
			c.wait(ctx, a)
			continue
		case a.shed():
			c.st.gaveUp.Add(1)
			return a, false
		case a.code != http.StatusOK:
			c.st.fail("GET %s: %d %s", path, a.code, bytes.TrimSpace(a.body))
			return a, false
		}
		return a, true
	}
}

func (c *client) get(ctx context.Context, id string) (orderservice.Order, string, bool) {
	a, ok := c.read(ctx, critical, "/orders/"+id)
	if !ok {
		return orderservice.Order{}, "", false
	}
	var o orderservice.Order
	if err := json.Unmarshal(a.body, &o); err != nil {
		c.st.fail("GET /orders/%s: %v", id, err)
		return o, "", false
	}
	return o, a.hdr.Get("ETag"), true
}

func (c *client) transition(ctx context.Context, id, action string) {
	_, etag, ok := c.get(ctx, id)
	if !ok {
		return
	}
	a := c.do(ctx, critical, http.MethodPost, "/orders/"+id+"/"+action, nil, map[string]string{"If-Match": etag})
	switch {
	case ctx.Err() != nil, a.err != nil:
		// A transition is not idempotent without a key: the client may not
		// know whether it happened, and finds out with its next GET.
	case a.shed():
		// Refused before it ran: the order is as it was.
	case a.code == http.StatusConflict || a.code == http.StatusPreconditionFailed:
		c.st.raceLost.Add(1)
	case a.code >= 500 && action == "pay":
		c.st.payRefused.Add(1)
	}
}

func (c *client) list(ctx context.Context, customer string) {
	c.read(ctx, normal, "/orders?customer="+customer)
}

// report asks for the tenant's report: batch work, which the order service
// sheds first. A refused report is not retried: the batch job runs again
// later.
func (c *client) report(ctx context.Context) {
	a := c.do(ctx, sheddable, http.MethodGet, "/reports/summary", nil, nil)
	switch {
	case ctx.Err() != nil, a.shed():
	case a.err != nil:
		c.st.fail("GET /reports/summary: %v", a.err)
	case a.code == http.StatusServiceUnavailable && a.hdr.Get("Retry-After") != "":
		// The report took longer than the service allows: come back later.
	case a.code != http.StatusOK:
		c.st.fail("GET /reports/summary: %d %s", a.code, bytes.TrimSpace(a.body))
	}
}

// think is the mean time a client waits between two actions.
const think = 20 * time.Millisecond

// work runs one client until ctx ends: actions one after the other, a
// think time apart.
func (c *client) work(ctx context.Context, id int) {
	for n := 1; ctx.Err() == nil; n++ {
		if n > 1 {
			sleep(ctx, time.Duration(c.rng.ExpFloat64()*float64(think)))
		}
		c.act(ctx, fmt.Sprintf("c%d-%d", id, n))
	}
}

// act does one thing a user does: create an order (under key), read one,
// move one on, list a customer's orders, or ask for the tenant's report.
func (c *client) act(ctx context.Context, key string) {
	c.st.actions.Add(1)
	customer := "cust-" + strconv.Itoa(c.rng.IntN(40))
	switch r := c.rng.Float64(); {
	case r < 0.30:
		body, _ := json.Marshal(orderservice.NewOrderRequest{Customer: customer, Currency: "EUR",
			Items: []orderservice.Item{{SKU: "sku-" + strconv.Itoa(c.rng.IntN(100)), Quantity: 1 + c.rng.IntN(3), PriceCents: 500 + int64(c.rng.IntN(5000))}}})
		if c.rng.Float64() < 0.25 {
			// A duplicate burst: the same request twice at once, as a
			// client that timed out and retried too eagerly sends it.
			c.st.duplicates.Add(1)
			var wg sync.WaitGroup
			wg.Add(1)
			twin := &client{http: c.http, base: c.base, apiKey: c.apiKey, rng: rand.New(rand.NewPCG(c.rng.Uint64(), 0)), st: c.st}
			go func() { defer wg.Done(); twin.create(ctx, key, body) }()
			c.create(ctx, key, body)
			wg.Wait()
		} else {
			c.create(ctx, key, body)
		}
		if c.rng.Float64() < 0.1 {
			c.st.duplicates.Add(1)
			c.create(ctx, key, body) // and later once more: a replay
		}
	case r < 0.58:
		if id := c.someOrder(); id != "" {
			c.get(ctx, id)
		}
	case r < 0.83:
		if id := c.someOrder(); id != "" {
			c.transition(ctx, id, []string{"pay", "pay", "ship", "cancel"}[c.rng.IntN(4)])
		}
	case r < 0.95:
		c.list(ctx, customer)
	default:
		c.report(ctx)
	}
}

// someOrder returns an order of the client's tenant (another tenant's would
// be answered 404), or "" if it finds none.
func (c *client) someOrder() string {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	for range 8 {
		if len(c.st.orders) == 0 {
			return ""
		}
		if id := c.st.orders[c.rng.IntN(len(c.st.orders))]; c.st.owner[id] == c.apiKey {
			return id
		}
	}
	return ""
}

// phase sums up the calls sent in [from, to).
type phase struct {
	seconds          float64
	sent, oks, sheds int
	byClass          [3]struct{ sent, shed int }
	p50, p99         time.Duration // of the successful calls
}

func (s *stats) phase(from, to time.Duration) phase {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := phase{seconds: (to - from).Seconds()}
	var lats []time.Duration
	for _, c := range s.calls {
		if c.at < from || c.at >= to {
			continue
		}
		p.sent++
		p.byClass[c.class].sent++
		switch c.outcome {
		case ok:
			p.oks++
			lats = append(lats, c.latency)
		case shed:
			p.sheds++
			p.byClass[c.class].shed++
		}
	}
	slices.Sort(lats)
	if n := len(lats); n > 0 {
		p.p50, p.p99 = lats[n/2], lats[min(n-1, n*99/100)]
	}
	return p
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
