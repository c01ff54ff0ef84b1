package balancer_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/healthcheck"
	"github.com/bulwark-go/bulwark/retry"
)

// signalling tells the test of the checker's health changes, which the
// checker reports to the balancer before it tells its Listener.
type signalling struct {
	changes chan string
}

// waitFor waits for every change of want, in any order, failing the test
// after a real-time guard that only a hung checker would reach.
func (s *signalling) waitFor(t *testing.T, want ...string) {
	t.Helper()
	left := map[string]bool{}
	for _, w := range want {
		left[w] = true
	}
	for len(left) > 0 {
		select {
		case got := <-s.changes:
			delete(left, got)
		case <-time.After(10 * time.Second):
			t.Fatalf("no %v from the checker", left)
		}
	}
}

func (s *signalling) HealthChanged(ep bulwark.Endpoint, healthy bool) {
	if healthy {
		s.changes <- "healthy " + ep.Addr
	} else {
		s.changes <- "unhealthy " + ep.Addr
	}
}

func (s *signalling) EjectionChanged(bulwark.Endpoint, bool) {}

// countingTransport counts the attempts per host.
type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	hits map[string]int
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.hits[req.URL.Host]++
	c.mu.Unlock()
	return c.base.RoundTrip(req)
}

func (c *countingTransport) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hits
	c.hits = map[string]int{}
	return h
}

func TestEndToEndBackendKilled(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var srvs []*httptest.Server
	var eps []bulwark.Endpoint
	for range 3 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "ok")
		}))
		defer srv.Close()
		u, _ := url.Parse(srv.URL)
		srvs = append(srvs, srv)
		eps = append(eps, bulwark.Endpoint{Addr: u.Host, Zone: "z"})
	}
	clk := bulwarktest.NewClock(time.Time{})
	// The balancer owns the set; the detector and the checker follow it,
	// and judge which endpoints can take calls.
	listener := signalling{changes: make(chan string, 16)}
	detector, err := healthcheck.NewOutlierDetector(healthcheck.OutlierConfig{
		Rules: healthcheck.ConsecutiveGatewayFailures, AlwaysEjectOne: true, Clock: clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer detector.Close()
	probeTransport := &http.Transport{}
	defer probeTransport.CloseIdleConnections()
	probe, err := healthcheck.HTTP(healthcheck.HTTPConfig{Path: "/health", Transport: probeTransport})
	if err != nil {
		t.Fatal(err)
	}
	const interval = 5 * time.Second
	hc, err := healthcheck.New(healthcheck.Config{Probe: probe, Interval: interval, Fall: 1, Listener: &listener, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	lb := mustNew(t, balancer.Config{Algorithm: balancer.LeastRequest, Endpoints: eps, Clock: clk,
		Followers: []balancer.Follower{hc, detector}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := hc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	listener.waitFor(t, "healthy "+eps[0].Addr, "healthy "+eps[1].Addr, "healthy "+eps[2].Addr) // the first probes are done

	base := &http.Transport{}
	defer base.CloseIdleConnections()
	counts := &countingTransport{base: base, hits: map[string]int{}}
	policy, err := retry.New(retry.Config{MaxAttempts: 3, Delay: func(int, time.Duration, error) time.Duration { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &balancer.Transport{Balancer: lb, Base: counts, Policy: policy}}

	// load runs n GETs from 4 goroutines and reports any failure.
	load := func(n int) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range n / 4 {
					resp, err := client.Get("http://shop.internal/cart")
					if err != nil {
						t.Errorf("GET = %v, want no client-visible error", err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						t.Errorf("GET = %s, want 200", resp.Status)
					}
				}
			})
		}
		wg.Wait()
	}

	load(120)
	before := counts.take()
	for _, ep := range eps {
		if before[ep.Addr] == 0 {
			t.Fatalf("attempts before the kill = %v, want every backend used", before)
		}
	}

	// Kill one backend mid-run: GETs keep succeeding, retried elsewhere.
	dead := eps[1]
	var wg sync.WaitGroup
	wg.Go(func() { load(200) })
	srvs[1].Close()
	wg.Wait()

	// Its connect errors (gateway failures) got it ejected already.
	if !detector.Ejected(dead) {
		t.Errorf("the dead backend is not ejected after its connect errors")
	}
	// Within one check interval the checker finds it down too; from then on
	// it gets no traffic.
	if err := clk.BlockUntil(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(interval)
	listener.waitFor(t, "unhealthy "+dead.Addr)
	counts.take()
	load(200)
	after := counts.take()
	if after[dead.Addr] != 0 {
		t.Errorf("attempts on the dead backend after it was found down = %d, want 0 (all: %v)", after[dead.Addr], after)
	}
	if after[eps[0].Addr] == 0 || after[eps[2].Addr] == 0 {
		t.Errorf("attempts after the kill = %v, want both live backends used", after)
	}
}
