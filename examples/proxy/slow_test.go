package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
)

func TestSlowBackendGetsLittleLeastRequestTraffic(t *testing.T) {
	// Nine backends that answer in 5 ms and one in 50 ms (long enough that
	// the proxy's own time, inflated by the race detector, stays small
	// beside them). Least-request
	// keeps about as many calls in flight on each, so each gets a share of
	// the traffic in proportion to its speed: the slow one about 1/91.
	slow := newBackend(t, "slow", 50*time.Millisecond)
	backends := []*backend{slow}
	eps := []bulwark.Endpoint{{Addr: slow.addr}}
	for _, name := range []string{"f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9"} {
		b := newBackend(t, name, 5*time.Millisecond)
		backends = append(backends, b)
		eps = append(eps, bulwark.Endpoint{Addr: b.addr})
	}
	p, err := New(Config{
		Backends:  eps,
		Algorithm: balancer.LeastRequest, Logger: quietLogger(),
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
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= 3000 {
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
