package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

func TestRollingReplacementUnderLoad(t *testing.T) {
	olds := []*backend{newBackend(t, "old1", 0), newBackend(t, "old2", 0), newBackend(t, "old3", 0)}
	// The new backends' health checks hang until released: they stay
	// pending (probed, with no verdict yet) through the whole deploy, the
	// case where counting them against the panic threshold would tip the
	// balancer into panic mode.
	gate := make(chan struct{})
	var news []*backend
	for _, name := range []string{"new1", "new2", "new3"} {
		b := &backend{name: name}
		b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/readyz" {
				select {
				case <-gate:
				case <-r.Context().Done():
				}
				return
			}
			b.ServeHTTP(w, r)
		}))
		b.addr = b.srv.Listener.Addr().String()
		t.Cleanup(b.srv.Close)
		news = append(news, b)
	}
	var eps []bulwark.Endpoint
	for _, b := range olds {
		eps = append(eps, bulwark.Endpoint{Addr: b.addr})
	}
	clk := bulwarktest.NewClock(time.Time{})
	ev := events{ch: make(chan bulwark.Event, 1024)}
	var panics atomic.Int64
	obs := bulwark.Observers(ev, bulwark.ObserverFunc(func(e bulwark.Event) {
		if e.Kind == bulwark.EventStateChange && e.Component == bulwark.ComponentBalancer && e.To == "panic" {
			panics.Add(1)
		}
	}))
	p, err := New(Config{
		Backends: eps, Algorithm: balancer.LeastRequest,
		RetryDelay: func(int) time.Duration { return 0 }, Clock: clk, Observer: obs, Logger: quietLogger(),
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
	ev.waitHealthy(t, clk, 0, olds...)
	front := httptest.NewServer(p.Handler())
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()

	// GETs from 4 clients until the end; progress ticks once per answer.
	stop := make(chan struct{})
	progress := make(chan struct{}, 1024)
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				code, _, err := get(client, front.URL+"/item")
				if err != nil || code != http.StatusOK {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, struct {
						code int
						err  error
					}{code, err})
				}
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	answers := func(n int) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for range n {
			select {
			case <-progress:
			case <-deadline:
				t.Fatalf("the load made no progress for 10 s")
			}
		}
	}

	// The deploy: each old backend is replaced by a new one in one Update,
	// as an endpoints controller does, and is killed at once with requests
	// in flight.
	answers(100)
	cur := slices.Clone(eps)
	for i, old := range olds {
		cur = slices.DeleteFunc(cur, func(ep bulwark.Endpoint) bool { return ep.Addr == old.addr })
		cur = append(cur, bulwark.Endpoint{Addr: news[i].addr})
		if err := p.Balancer().Update(slices.Clone(cur)); err != nil {
			t.Fatal(err)
		}
		old.kill()
		answers(100)
	}
	// The new backends' checks pass: they are healthy, and share the load.
	close(gate)
	ev.waitHealthy(t, clk, 0, news...)
	before := make([]int64, len(news))
	for i, b := range news {
		before[i] = b.hits.Load()
	}
	answers(300)
	close(stop)
	wg.Wait()

	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d GETs failed during the rolling replacement (first: %v); want 0", n, sent.Load(), firstErr.Load())
	}
	if n := panics.Load(); n != 0 {
		t.Errorf("the balancer entered panic mode %d times during the rolling replacement; want never", n)
	}
	for i, b := range news {
		if n := b.hits.Load() - before[i]; n == 0 {
			t.Errorf("%s took no request once healthy", b.name)
		}
	}
}
