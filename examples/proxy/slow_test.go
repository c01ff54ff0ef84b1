package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
)

// workClock times the slow backend of TestSlowBackendGetsLittleLeastRequestTraffic
// in answers of the fast ones rather than in seconds, so that the ratio of
// their speeds does not depend on how loaded the machine is.
type workClock struct {
	mu     sync.Mutex
	cond   sync.Cond
	served int // answers of the fast backends so far
	held   int // requests the slow backend holds
	active int // clients still sending
}

// fastDone counts one answer of a fast backend.
func (w *workClock) fastDone() {
	w.mu.Lock()
	w.served++
	w.cond.Broadcast()
	w.mu.Unlock()
}

// hold waits until the fast backends have answered n more requests, or until
// every client still sending waits here (no one is left to make progress).
func (w *workClock) hold(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	until := w.served + n
	w.held++
	for w.served < until && w.held < w.active {
		w.cond.Wait()
	}
	w.held--
	w.cond.Broadcast()
}

// clientDone counts a client that stopped sending.
func (w *workClock) clientDone() {
	w.mu.Lock()
	w.active--
	w.cond.Broadcast()
	w.mu.Unlock()
}

func TestSlowBackendGetsLittleLeastRequestTraffic(t *testing.T) {
	// Nine fast backends and one that answers a request only once the fast
	// ones have answered 90 more: at equal concurrency each fast backend
	// answers ten requests while the slow one answers one. Least-request
	// keeps about as many calls in flight on each, so each gets a share of
	// the traffic in proportion to its speed: the slow one about 1/91, and
	// 2.0–2.2 % as measured (ties between equal counts go either way), with
	// or without -race, loaded or not, since no time is involved. That is
	// about 63 of 3000 requests, with a standard deviation near 8: the 5 %
	// bound (150) is ten of them away, while round robin, which ignores
	// load, gives it 10 %.
	const clients, requests = 16, 3000
	work := &workClock{active: clients}
	work.cond.L = &work.mu
	slow := &backend{name: "slow"}
	slow.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			work.hold(90)
		}
		slow.ServeHTTP(w, r)
	}))
	slow.addr = slow.srv.Listener.Addr().String()
	t.Cleanup(slow.srv.Close)
	backends := []*backend{slow}
	eps := []bulwark.Endpoint{{Addr: slow.addr}}
	for _, name := range []string{"f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9"} {
		b := &backend{name: name}
		b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.ServeHTTP(w, r)
			if r.URL.Path != "/readyz" {
				work.fastDone()
			}
		}))
		b.addr = b.srv.Listener.Addr().String()
		t.Cleanup(b.srv.Close)
		backends = append(backends, b)
		eps = append(eps, bulwark.Endpoint{Addr: b.addr})
	}
	p, err := New(Config{Backends: eps, Algorithm: balancer.LeastRequest, Logger: quietLogger()})
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
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer work.clientDone()
			for next.Add(1) <= requests {
				if code, _, err := get(client, front.URL+"/x"); err != nil || code != http.StatusOK {
					t.Errorf("GET = %d, %v", code, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var total int64
	for _, b := range backends {
		total += b.hits.Load()
	}
	share := float64(slow.hits.Load()) / float64(total)
	t.Logf("slow backend share: %.2f%% of %d", 100*share, total)
	if share >= 0.05 {
		t.Errorf("the 10x slower backend got %.1f%% of least-request traffic, want < 5%%", 100*share)
	}
}
