package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backend is an upstream server that answers with its name after delay.
type backend struct {
	name  string
	srv   *httptest.Server
	addr  string
	delay time.Duration
	hits  atomic.Int64
	fail  atomic.Int32 // status to answer with instead of 200, if set
	mu    sync.Mutex
	saw   map[string]int    // requests seen, by X-Test-Id
	body  map[string]string // the body of the last one, by X-Test-Id
}

// seen returns how many times the backend saw the request with X-Test-Id id,
// and the body it had the last time.
func (b *backend) seen(id string) (int, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.saw[id], b.body[id]
}

func newBackend(t *testing.T, name string, delay time.Duration) *backend {
	b := &backend{name: name, delay: delay}
	b.srv = httptest.NewServer(b)
	u, _ := url.Parse(b.srv.URL)
	b.addr = u.Host
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/readyz" {
		return
	}
	b.hits.Add(1)
	body, _ := io.ReadAll(r.Body)
	if id := r.Header.Get("X-Test-Id"); id != "" {
		b.mu.Lock()
		if b.saw == nil {
			b.saw, b.body = map[string]int{}, map[string]string{}
		}
		b.saw[id]++
		b.body[id] = string(body)
		b.mu.Unlock()
	}
	if b.delay > 0 {
		time.Sleep(b.delay) // the backend's own service time: the workload, not a wait in the test
	}
	if code := b.fail.Load(); code != 0 {
		w.WriteHeader(int(code))
		return
	}
	_, _ = io.WriteString(w, b.name)
}

// kill closes the backend's listener and connections: it refuses connections.
func (b *backend) kill() {
	b.srv.CloseClientConnections()
	b.srv.Close()
}

// restore serves again on the same address.
func (b *backend) restore(t *testing.T) {
	l, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatalf("listening again on %s: %v", b.addr, err)
	}
	b.srv = httptest.NewUnstartedServer(b)
	b.srv.Listener.Close()
	b.srv.Listener = l
	b.srv.Start()
}

// counting counts the attempts the proxy sends to each backend.
type counting struct {
	base *http.Transport
	mu   sync.Mutex
	hits map[string]int
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.hits[r.URL.Host]++
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

func (c *counting) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hits
	c.hits = map[string]int{}
	return h
}

// events collects the components' events for the test to wait on.
type events struct{ ch chan bulwark.Event }

func (e events) Observe(ev bulwark.Event) {
	switch ev.Kind {
	case bulwark.EventEjected, bulwark.EventUnejected, bulwark.EventStateChange,
		bulwark.EventEndpointAdded, bulwark.EventEndpointRemoved:
		select {
		case e.ch <- ev:
		default:
		}
	}
}

// waitFor waits, in real time but at most 10 s, for an event that matches,
// advancing the fake clock by step before each look when step is positive,
// and returns it. The events before it are dropped.
func (e events) waitFor(t *testing.T, clk *bulwarktest.Clock, step time.Duration, what string, match func(bulwark.Event) bool) bulwark.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if step > 0 {
			clk.Advance(step)
		}
		select {
		case ev := <-e.ch:
			if match(ev) {
				return ev
			}
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no event %s within 10 s", what)
		}
	}
}

// waitPickable waits, in real time but at most 10 s, until the balancer's
// snapshot holds addr among the endpoints it picks: a Tried makes each round
// of picks visit every one of them before any comes again.
func waitPickable(t *testing.T, lb *balancer.Balancer, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var tried balancer.Tried
		for range 8 {
			pk, err := lb.Pick("", &tried)
			if err != nil {
				t.Fatalf("Pick: %v", err)
			}
			got := pk.Endpoint().Addr
			pk.Done(balancer.Result{})
			if got == addr {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the balancer did not pick %s within 10 s", addr)
		}
		time.Sleep(time.Millisecond) // waiting for the balancer's goroutine to publish, not for time logic
	}
}

// waitEach waits, as waitFor does, for an event that matches about each of
// bs, in any order.
func (e events) waitEach(t *testing.T, clk *bulwarktest.Clock, step time.Duration, what string, match func(bulwark.Event) bool, bs ...*backend) {
	t.Helper()
	left := map[string]bool{}
	for _, b := range bs {
		left[b.addr] = true
	}
	for len(left) > 0 {
		got := e.waitFor(t, clk, step, fmt.Sprintf("%s for %d more backends", what, len(left)), func(e bulwark.Event) bool {
			return left[e.Endpoint.Addr] && match(e)
		})
		delete(left, got.Endpoint.Addr)
	}
}

// waitHealthy waits, as waitFor does, until the checker has found each of bs
// healthy, in any order.
func (e events) waitHealthy(t *testing.T, clk *bulwarktest.Clock, step time.Duration, bs ...*backend) {
	t.Helper()
	e.waitEach(t, clk, step, "healthy", func(e bulwark.Event) bool {
		return e.Kind == bulwark.EventStateChange && e.Component == bulwark.ComponentHealthCheck && e.To == "healthy"
	}, bs...)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func get(client *http.Client, url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestBackendKilledMidLoad(t *testing.T) {
	bs := []*backend{newBackend(t, "a", 0), newBackend(t, "b", 0), newBackend(t, "c", 0)}
	var eps []bulwark.Endpoint
	for i, b := range bs {
		eps = append(eps, bulwark.Endpoint{Addr: b.addr, Zone: []string{"z1", "z1", "z2"}[i]})
	}
	clk := bulwarktest.NewClock(time.Time{})
	ev := events{ch: make(chan bulwark.Event, 1024)}
	count := &counting{base: &http.Transport{MaxIdleConnsPerHost: 64}, hits: map[string]int{}}
	defer count.base.CloseIdleConnections()
	p, err := New(Config{
		Backends: eps, Algorithm: balancer.LeastRequest, CheckInterval: time.Second,
		RetryDelay: func(int) time.Duration { return 0 }, Transport: count,
		Clock: clk, Observer: ev, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	front := httptest.NewServer(p.Handler())
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()

	// Load from 4 clients; kill b after the first 300 requests.
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent.Add(1) <= 900 {
				code, _, err := get(client, front.URL+"/item")
				if err != nil || code != http.StatusOK {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, struct {
						code int
						err  error
					}{code, err})
				}
				if sent.Load() == 300 {
					bs[1].kill()
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of 900 GETs failed through the proxy while a backend died (first: %v); want 0", n, firstErr.Load())
	}
	// Passive detection ejected it during the load, before any check ran.
	ev.waitFor(t, clk, 0, "ejected b", func(e bulwark.Event) bool {
		return e.Kind == bulwark.EventEjected && e.Endpoint.Addr == bs[1].addr
	})
	// And the active check marks it unhealthy within one interval.
	start := clk.Now()
	ev.waitFor(t, clk, 250*time.Millisecond, "b unhealthy", func(e bulwark.Event) bool {
		return e.Kind == bulwark.EventStateChange && e.Component == bulwark.ComponentHealthCheck &&
			e.Endpoint.Addr == bs[1].addr && e.To == "unhealthy"
	})
	if took := clk.Since(start); took > 2*time.Second {
		t.Errorf("the checker took %v to mark the dead backend unhealthy, want within its Fall of 2 probes (~1.25 s)", took)
	}
	count.take()
	for i := 0; i < 200; i++ {
		if code, _, err := get(client, front.URL+"/item"); err != nil || code != http.StatusOK {
			t.Fatalf("GET after the ejection = %d, %v", code, err)
		}
	}
	if n := count.take()[bs[1].addr]; n != 0 {
		t.Errorf("the dead backend still got %d attempts after its ejection, want 0", n)
	}

	// Bring it back: healthy after Rise probes, back after its ejection time,
	// then it takes traffic again.
	bs[1].restore(t)
	ev.waitFor(t, clk, 250*time.Millisecond, "b healthy again", func(e bulwark.Event) bool {
		return e.Kind == bulwark.EventStateChange && e.Component == bulwark.ComponentHealthCheck &&
			e.Endpoint.Addr == bs[1].addr && e.To == "healthy"
	})
	ev.waitFor(t, clk, time.Second, "b unejected", func(e bulwark.Event) bool {
		return e.Kind == bulwark.EventUnejected && e.Endpoint.Addr == bs[1].addr
	})
	// The unejection reaches the picks when the balancer's own goroutine
	// publishes it, and the slow-start ramp begins then: wait for that
	// before moving the clock past the ramp, or the ramp would begin after
	// the jump and stand still at a twentieth of the weight.
	waitPickable(t, p.Balancer(), bs[1].addr)
	clk.Advance(6 * time.Second) // past the slow-start ramp
	before := bs[1].hits.Load()
	for i := 0; i < 300; i++ {
		if code, _, err := get(client, front.URL+"/item"); err != nil || code != http.StatusOK {
			t.Fatalf("GET after the restore = %d, %v", code, err)
		}
	}
	if n := bs[1].hits.Load() - before; n < 30 {
		t.Errorf("the restored backend got %d of 300 requests, want a fair share (>= 30)", n)
	}
}

func TestRetriesOnlyReplayableRequests(t *testing.T) {
	bad, good := newBackend(t, "bad", 0), newBackend(t, "good", 0)
	bad.fail.Store(http.StatusServiceUnavailable)
	badEp := bulwark.Endpoint{Addr: bad.addr}
	clk := bulwarktest.NewClock(time.Time{})
	// Not started: nothing probes the backends, so both stay pending and
	// take the calls (the balancer picks pending endpoints when none is
	// eligible), and the test drives the outlier detector itself. Random
	// picks, so that no schedule can keep one kind of POST off the failing
	// backend.
	p, err := New(Config{
		Backends: []bulwark.Endpoint{badEp, {Addr: good.addr}}, Algorithm: balancer.Random,
		RetryDelay: func(int) time.Duration { return 0 }, Clock: clk, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	front := httptest.NewServer(p.Handler())
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	post := func(id, key string) int {
		req, _ := http.NewRequest(http.MethodPost, front.URL+"/orders", strings.NewReader(`{"n":1}`))
		req.Header.Set("X-Test-Id", id)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Which backend a POST meets is up to the balancer: post until enough
	// of each kind met the failing one. Its failures get it ejected, and
	// trip its breaker, after a few: then move the clock past both, so that
	// it takes calls again.
	const want = 5
	var keylessOnBad, keyedOnBad int
	for i := 0; keylessOnBad < want || keyedOnBad < want; i++ {
		if i == 500 {
			t.Fatalf("after %d POSTs of each kind, %d without a key and %d with one met the failing backend; want %d of each",
				i, keylessOnBad, keyedOnBad, want)
		}
		if br := p.breakers.Peek(bad.addr); p.outliers.Ejected(badEp) || (br != nil && br.State() != breaker.Closed) {
			clk.Advance(3 * time.Minute) // past the longest ejection and open time
			p.outliers.EvaluateAt(clk.Now())
		}

		id := fmt.Sprintf("plain-%d", i)
		code := post(id, "")
		onBad, _ := bad.seen(id)
		onGood, _ := good.seen(id)
		if onBad > 0 {
			keylessOnBad++
			if code != http.StatusServiceUnavailable || onBad != 1 || onGood != 0 {
				t.Fatalf("a POST without Idempotency-Key met the failing backend %d times and the good one %d times, and got %d; "+
					"want once, never and 503: it must not be sent again once sent", onBad, onGood, code)
			}
		} else if code != http.StatusOK || onGood != 1 {
			t.Fatalf("a POST without Idempotency-Key met the good backend %d times and got %d; want once and 200", onGood, code)
		}

		id = fmt.Sprintf("keyed-%d", i)
		code = post(id, "key-"+id)
		onBad, _ = bad.seen(id)
		onGood, body := good.seen(id)
		if onBad > 0 {
			keyedOnBad++
		}
		if code != http.StatusOK || onGood != 1 || onBad > 1 || body != `{"n":1}` {
			t.Fatalf("a POST with an Idempotency-Key met the failing backend %d times and the good one %d times, with body %q, and got %d; "+
				`want at most once, once with {"n":1} and 200: it is replayable, and a retry goes to the other backend`, onBad, onGood, body, code)
		}
	}
}

func TestReadinessFollowsTheMembers(t *testing.T) {
	first, second := newBackend(t, "first", 0), newBackend(t, "second", 0)
	dead := newBackend(t, "dead", 0)
	dead.kill()
	// A backend whose health check does not answer until the test ends.
	probed, gate := make(chan struct{}, 1), make(chan struct{})
	pending := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case probed <- struct{}{}:
		default:
		}
		select {
		case <-gate:
		case <-r.Context().Done():
		}
	}))
	defer pending.Close()
	defer close(gate)
	clk := bulwarktest.NewClock(time.Time{})
	ev := events{ch: make(chan bulwark.Event, 1024)}
	p, err := New(Config{Backends: []bulwark.Endpoint{{Addr: first.addr}}, Clock: clk, Observer: ev, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	front := httptest.NewServer(p.Handler())
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	ready := func() int {
		t.Helper()
		clk.Advance(300 * time.Millisecond) // past the cached result of the check, within a probe's timeout
		code, _, err := get(client, front.URL+"/readyz")
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	health := func(b *backend, to string) func(bulwark.Event) bool {
		return func(e bulwark.Event) bool {
			return e.Kind == bulwark.EventStateChange && e.Component == bulwark.ComponentHealthCheck &&
				e.Endpoint.Addr == b.addr && e.To == to
		}
	}
	ev.waitFor(t, clk, 100*time.Millisecond, "first healthy", health(first, "healthy"))
	if code := ready(); code != http.StatusOK {
		t.Fatalf("/readyz with a healthy backend = %d, want 200", code)
	}
	// The fleet is replaced by one dead backend: not ready once it is
	// found down.
	if err := p.Balancer().Update([]bulwark.Endpoint{{Addr: dead.addr}}); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, clk, 100*time.Millisecond, "dead unhealthy", health(dead, "unhealthy"))
	if code := ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the one backend down = %d, want 503", code)
	}
	// Then by one not probed yet (pending), which the balancer sends
	// requests to while no backend is healthy: ready.
	if err := p.Balancer().Update([]bulwark.Endpoint{{Addr: pending.Listener.Addr().String()}}); err != nil {
		t.Fatal(err)
	}
	<-probed
	if code := ready(); code != http.StatusOK {
		t.Fatalf("/readyz with the one backend pending = %d, want 200", code)
	}
	// Then by a healthy one that was not in the configured list: ready.
	if err := p.Balancer().Update([]bulwark.Endpoint{{Addr: second.addr}}); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, clk, 100*time.Millisecond, "second healthy", health(second, "healthy"))
	if code := ready(); code != http.StatusOK {
		t.Fatalf("/readyz with a healthy backend from Update = %d, want 200", code)
	}
}

func TestDrainFlipsReadinessThenWaits(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			return
		}
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	}))
	defer slow.Close()
	u, _ := url.Parse(slow.URL)
	p, err := New(Config{Backends: []bulwark.Endpoint{{Addr: u.Host}}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	front := httptest.NewServer(p.Handler())
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	if code, _, _ := get(client, front.URL+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before drain = %d, want 200", code)
	}
	result := make(chan string, 1)
	go func() { _, body, _ := get(client, front.URL+"/slow"); result <- body }()
	<-entered
	drained := make(chan error, 1)
	go func() { drained <- p.Drain(context.Background()) }()
	// Readiness is off at once, while the request is still in flight.
	ev := events{ch: make(chan bulwark.Event)}
	_ = ev
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _, _ := get(client, front.URL+"/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after Drain = %d, want 503", code)
		}
		time.Sleep(time.Millisecond) // waiting for Drain's goroutine to be scheduled, not for time logic
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while a request was in flight", err)
	default:
	}
	close(release)
	if body := <-result; body != "done" {
		t.Errorf("in-flight request got %q, want it to finish", body)
	}
	if err := <-drained; err != nil {
		t.Errorf("Drain = %v", err)
	}
}

func TestLargeBodyOfUnknownLengthIsSentOnce(t *testing.T) {
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got.Store(n)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	p, err := New(Config{Backends: []bulwark.Endpoint{{Addr: u.Host}}, MaxBufferedBody: 1024, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	front := httptest.NewServer(p.Handler())
	defer front.Close()
	body := strings.Repeat("x", 4096)
	// An io.Reader that is not a *strings.Reader: the client sends it
	// chunked, with no Content-Length.
	req, _ := http.NewRequest(http.MethodPut, front.URL+"/blob", io.MultiReader(strings.NewReader(body)))
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || got.Load() != int64(len(body)) {
		t.Errorf("PUT of %d chunked bytes over the buffer limit = %d, backend read %d bytes; want 200 and all of it", len(body), resp.StatusCode, got.Load())
	}
}
