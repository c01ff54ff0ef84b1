package balancer_test

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
)

// attempts is a minimal retrying Policy for these tests: up to n attempts,
// none after a permanent error, and it records each wait it is asked for (a
// RetryAfter above zero).
type attempts struct {
	n      int
	mu     sync.Mutex
	waits  []time.Duration
	errors []error
}

func (a *attempts) Do(ctx context.Context, op func(context.Context) error) error {
	var err error
	for i := 0; i < a.n; i++ {
		if err = op(ctx); err == nil || bulwark.IsPermanent(err) {
			return err
		}
		a.mu.Lock()
		a.errors = append(a.errors, err)
		var ra interface{ RetryAfter() time.Duration }
		if errors.As(err, &ra) && ra.RetryAfter() > 0 {
			a.waits = append(a.waits, ra.RetryAfter())
		}
		a.mu.Unlock()
	}
	return err
}

// backend is an httptest server that answers with status and counts its
// requests and their bodies.
type backend struct {
	srv    *httptest.Server
	mu     sync.Mutex
	status int
	header http.Header
	hits   int
	bodies []string
}

func newBackend(t *testing.T, status int) *backend {
	b := &backend{status: status}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.hits++
		b.bodies = append(b.bodies, string(body))
		status := b.status
		for k, v := range b.header {
			w.Header()[k] = v
		}
		b.mu.Unlock()
		w.WriteHeader(status)
		_, _ = io.WriteString(w, r.Host+" "+http.StatusText(status))
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) addr() string {
	u, _ := url.Parse(b.srv.URL)
	return u.Host
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits
}

func TestTransport(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		body       string
		header     http.Header
		statuses   []int // of the three backends, in endpoint order
		wantStatus int
		wantHits   int // requests served in all
	}{
		{"GET goes through", "GET", "", nil, []int{200, 200, 200}, 200, 1},
		{"GET retried on another endpoint", "GET", "", nil, []int{503, 503, 200}, 200, -1},
		{"GET gets the last response when all fail", "GET", "", nil, []int{502, 503, 504}, -1, 3},
		{"POST without a key is not retried", "POST", "order", nil, []int{503, 503, 503}, 503, 1},
		{"POST with an Idempotency-Key is retried", "POST", "order", http.Header{"Idempotency-Key": {"k1"}}, []int{503, 503, 200}, 200, -1},
		{"a 500 is not retried", "GET", "", nil, []int{500, 500, 500}, 500, 1},
		{"a 404 is not retried", "GET", "", nil, []int{404, 404, 404}, 404, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var backends []*backend
			var eps []bulwark.Endpoint
			for _, s := range tt.statuses {
				b := newBackend(t, s)
				backends = append(backends, b)
				eps = append(eps, bulwark.Endpoint{Addr: b.addr()})
			}
			lb := mustNew(t, balancer.Config{Endpoints: eps})
			policy := &attempts{n: 3}
			tr := &balancer.Transport{Balancer: lb, Policy: policy}
			client := &http.Client{Transport: tr}
			req, err := http.NewRequest(tt.method, "http://orders.internal/v1/orders", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header[k] = v
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("Do(%s) = %v, want a response", tt.name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.HasPrefix(string(body), "orders.internal ") {
				t.Errorf("backend saw Host %q, want orders.internal kept", body)
			}
			if tt.wantStatus > 0 && resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			hits := 0
			for _, b := range backends {
				hits += b.count()
				if b.count() > 1 {
					t.Errorf("backend %s got %d attempts, want each attempt on a different endpoint", b.addr(), b.count())
				}
				for _, got := range b.bodies {
					if got != tt.body {
						t.Errorf("backend got body %q, want %q (rewound)", got, tt.body)
					}
				}
			}
			if tt.wantHits > 0 && hits != tt.wantHits {
				t.Errorf("attempts = %d, want %d", hits, tt.wantHits)
			}
			if tt.wantStatus == 200 && tt.statuses[0] != 200 && backends[2].count() != 1 {
				t.Errorf("the healthy backend got %d requests, want 1", backends[2].count())
			}
		})
	}
}

func TestTransportRetryAfter(t *testing.T) {
	b := newBackend(t, http.StatusTooManyRequests)
	b.header = http.Header{"Retry-After": {"2"}}
	other := newBackend(t, http.StatusServiceUnavailable)
	lb := mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: b.addr()}, {Addr: other.addr()}}})
	policy := &attempts{n: 2}
	resp, err := (&http.Client{Transport: &balancer.Transport{Balancer: lb, Policy: policy}}).Get("http://svc/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(policy.waits) != 1 || policy.waits[0] != 2*time.Second {
		t.Errorf("RetryAfter seen by the policy = %v, want [2s] (only the 429 sent one)", policy.waits)
	}
	want := map[string]int{b.addr(): http.StatusTooManyRequests, other.addr(): http.StatusServiceUnavailable}
	for _, err := range policy.errors {
		var se *bulwark.StatusError
		if !errors.As(err, &se) || want[se.Endpoint.Addr] != se.StatusCode {
			t.Errorf("attempt error %v is not a *bulwark.StatusError with the endpoint and its status", err)
		}
	}
}

func TestTransportConnectErrorRetried(t *testing.T) {
	good := newBackend(t, 200)
	dead := newBackend(t, 200)
	deadAddr := dead.addr()
	dead.srv.Close()
	rec := &recorder{}
	lb := mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: deadAddr}, {Addr: good.addr()}}, Followers: []balancer.Follower{rec}})
	client := &http.Client{Transport: &balancer.Transport{Balancer: lb, Policy: &attempts{n: 2}}}
	for range 20 {
		resp, err := client.Get("http://svc/")
		if err != nil {
			t.Fatalf("Get with one dead endpoint = %v, want a retry on the live one", err)
		}
		resp.Body.Close()
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	gw := 0
	for i, o := range rec.out {
		if o == bulwark.Failure && rec.gateway[i] {
			gw++
		}
	}
	if gw == 0 {
		t.Errorf("gateway failures recorded = 0, want the dead endpoint's connect errors")
	}

	// Without a Policy there is one attempt, and its error comes back.
	one := &http.Client{Transport: &balancer.Transport{Balancer: mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: deadAddr}}})}}
	if _, err := one.Get("http://svc/"); err == nil {
		t.Errorf("Get from a dead endpoint without a Policy = nil error, want the connect error")
	}
}

func TestTransportErrors(t *testing.T) {
	empty := mustNew(t, balancer.Config{})
	_, err := (&balancer.Transport{Balancer: empty, Policy: &attempts{n: 3}}).RoundTrip(httptest.NewRequest("GET", "http://svc/", nil))
	if !errors.Is(err, balancer.ErrNoEndpoints) || !bulwark.IsPermanent(err) {
		t.Errorf("RoundTrip with no endpoints = %v, want a permanent ErrNoEndpoints", err)
	}
	_, err = (&balancer.Transport{}).RoundTrip(httptest.NewRequest("GET", "http://svc/", nil))
	if err == nil {
		t.Errorf("RoundTrip with a nil Balancer = nil error, want one")
	}
	// A body that cannot be rewound makes the request single-shot.
	b := newBackend(t, 503)
	c := newBackend(t, 503)
	lb := mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: b.addr()}, {Addr: c.addr()}}})
	req, _ := http.NewRequest("PUT", "http://svc/", io.NopCloser(strings.NewReader("x")))
	resp, err := (&balancer.Transport{Balancer: lb, Policy: &attempts{n: 3}}).RoundTrip(req)
	if err != nil || resp.StatusCode != 503 || b.count()+c.count() != 1 {
		t.Errorf("PUT with an unrewindable body: %v, %v after %d attempts, want the 503 after 1", resp, err, b.count()+c.count())
	}
	if resp != nil {
		resp.Body.Close()
	}
}

func TestTransportHedgedAttemptsConcurrentSafe(t *testing.T) {
	a, b := newBackend(t, 200), newBackend(t, 503)
	lb := mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: a.addr()}, {Addr: b.addr()}}})
	// hedge runs two attempts at once and succeeds if either does.
	hedge := bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- op(ctx) }()
		}
		e1, e2 := <-errs, <-errs
		if e1 == nil || e2 == nil {
			return nil
		}
		return e1
	})
	client := &http.Client{Transport: &balancer.Transport{Balancer: lb, Policy: hedge}}
	for range 20 {
		resp, err := client.Get("http://svc/")
		if err != nil {
			t.Fatalf("hedged GET = %v, want the 200", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("hedged GET = %d %q, want the 200 of the healthy backend", resp.StatusCode, body)
		}
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestTransportClosesBodyWhenNoAttemptRuns(t *testing.T) {
	lb := mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: "127.0.0.1:1"}}})
	refuse := errors.New("budget exhausted")
	tr := &balancer.Transport{Balancer: lb, Policy: bulwark.PolicyFunc(func(context.Context, func(context.Context) error) error { return refuse })}
	body := &closeRecorder{Reader: strings.NewReader("x")}
	req, _ := http.NewRequest("PUT", "http://svc/", body)
	if _, err := tr.RoundTrip(req); !errors.Is(err, refuse) {
		t.Errorf("RoundTrip under a Policy that runs nothing = %v, want its error", err)
	}
	if !body.closed {
		t.Errorf("request body not closed when no attempt ran")
	}
}

// TestTransportBodyOutlivesAttempt: a Policy may end the context of the
// attempt it returns with, as a hedge does when it cancels its attempts; the
// body of the response must still be readable to its end.
func TestTransportBodyOutlivesAttempt(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB: more than any buffer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, big)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	lb := mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: u.Host}}})
	cancelling := bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		actx, cancel := context.WithCancel(ctx)
		defer cancel() // like a hedge: every attempt's ctx ends when Do returns
		return op(actx)
	})
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: &balancer.Transport{Balancer: lb, Base: base, Policy: cancelling}}
	resp, err := client.Get("http://service/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || len(got) != len(big) {
		t.Errorf("read %d bytes of the body, err %v; want all %d after the attempt's ctx ended", len(got), err, len(big))
	}
}

// TestTransportRetriesAnyRequestThatNeverConnected: a POST without an
// Idempotency-Key is not replayable, but when its attempt failed to connect
// nothing was sent, and another endpoint may take it.
func TestTransportRetriesAnyRequestThatNeverConnected(t *testing.T) {
	var got sync.Map
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(string(b), true)
	}))
	defer live.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadAddr := dead.Listener.Addr().String()
	dead.Close() // connections to it are refused
	lu, _ := url.Parse(live.URL)
	lb := mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: deadAddr}, {Addr: lu.Host}}})
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: &balancer.Transport{Balancer: lb, Base: base, Policy: &attempts{n: 3}}}
	for i := range 6 { // round robin: half of them try the dead endpoint first
		body := "order-" + string(rune('a'+i))
		resp, err := client.Post("http://service/orders", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST %d through a dead endpoint = %v, want it sent to the live one", i, err)
		}
		resp.Body.Close()
		if _, ok := got.Load(body); !ok || resp.StatusCode != http.StatusOK {
			t.Errorf("POST %d = %d, live endpoint got the body: %v; want 200 and the body", i, resp.StatusCode, ok)
		}
	}
}

// TestTransportKeepsUpgradedBodyWritable: a 101 Switching Protocols response
// hands over the connection as a writable body, which a proxy relies on; the
// Transport must not hide that, whatever context the attempt ran under.
func TestTransportKeepsUpgradedBodyWritable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_ = brw.Flush()
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	lb := mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: u.Host}}})
	cancelling := bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		actx, cancel := context.WithCancel(ctx)
		defer cancel()
		return op(actx)
	})
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	rt := &balancer.Transport{Balancer: lb, Base: base, Policy: cancelling}
	req, _ := http.NewRequest(http.MethodGet, "http://service/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, ok := resp.Body.(io.ReadWriteCloser); resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		t.Errorf("upgrade = %d with body %T, want 101 with an io.ReadWriteCloser", resp.StatusCode, resp.Body)
	}
}

// A Retry-After too large for a time.Duration asks for the longest wait: a
// retrying policy gives up rather than retry at once, as it would if the
// value were ignored.
func TestTransportOversizedRetryAfter(t *testing.T) {
	b := newBackend(t, http.StatusServiceUnavailable)
	b.header = http.Header{"Retry-After": {"99999999999"}}
	lb := mustNew(t, balancer.Config{Endpoints: []bulwark.Endpoint{{Addr: b.addr()}}})
	policy := &attempts{n: 2}
	resp, err := (&http.Client{Transport: &balancer.Transport{Balancer: lb, Policy: policy}}).Get("http://svc/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(policy.waits) == 0 || policy.waits[0] != math.MaxInt64 {
		t.Errorf("RetryAfter seen by the policy = %v, want the largest Duration first", policy.waits)
	}
}
