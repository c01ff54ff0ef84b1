package otelbulwark_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
)

// TestObserveConcurrentSafe races picks and calls on shared endpoints, state
// changes and collections, then checks that every pick met its call and that
// no count was lost or counted twice.
func TestObserveConcurrentSafe(t *testing.T) {
	o, r := newObserver(t)
	const (
		goroutines = 8
		rounds     = 500
		endpoints  = 4
	)
	eps := make([]bulwark.Endpoint, endpoints)
	for i := range eps {
		eps[i] = bulwark.Endpoint{Addr: fmt.Sprintf("10.0.0.%d:80", i+1)}
	}
	var wg, collector sync.WaitGroup
	done := make(chan struct{})
	collector.Go(func() {
		// Collections all along, so that counts are held in the Observer
		// and taken while others are added.
		for {
			collect(t, r)
			select {
			case <-done:
				return
			default:
			}
		}
	})
	for g := range goroutines {
		wg.Go(func() {
			for i := range rounds {
				ep := eps[(g+i)%endpoints]
				o.Observe(bulwark.Event{Kind: bulwark.EventPick, Component: "balancer", Name: "lb", Endpoint: ep})
				o.Observe(bulwark.Event{Kind: bulwark.EventCall, Component: "balancer", Name: "lb", Endpoint: ep, Latency: time.Millisecond})
				if i%50 == 0 {
					from, to := "closed", "open"
					if (g+i/50)%2 == 1 {
						from, to = to, from
					}
					o.Observe(bulwark.Event{Kind: bulwark.EventStateChange, Component: "breaker", Name: fmt.Sprint("b", g%2), From: from, To: to})
					o.Observe(bulwark.Event{Kind: bulwark.EventEjected, Component: "outlier", Name: "od", Endpoint: ep})
					o.Observe(bulwark.Event{Kind: bulwark.EventEndpointRemoved, Component: "outlier", Name: "od", Endpoint: ep})
				}
			}
		})
	}
	wg.Wait()
	close(done)
	collector.Wait()

	got := collect(t, r)
	var picks, calls int64
	for attrs, p := range got["bulwark.balancer.inflight"] {
		if p.value != 0 {
			t.Errorf("bulwark.balancer.inflight{%s} = %d, want 0", attrs, p.value)
		}
	}
	for _, p := range got["bulwark.balancer.picks"] {
		picks += p.value
	}
	for _, p := range got["bulwark.balancer.calls"] {
		calls += p.value
	}
	if want := int64(goroutines * rounds); picks != want || calls != want {
		t.Errorf("picks, calls = %d, %d, want %d each", picks, calls, want)
	}
	for _, name := range []string{"b0", "b1"} {
		ones := 0
		for attrs, p := range got["bulwark.breaker.state"] {
			if p.value == 1 && sortAttrs(attrs) == attrs && containsAttr(attrs, "bulwark.name="+name) {
				ones++
			}
		}
		if ones != 1 {
			t.Errorf("breaker %s is in %d states at once, want 1: %v", name, ones, got["bulwark.breaker.state"])
		}
	}
}

func containsAttr(attrs, kv string) bool {
	for _, a := range splitAttrs(attrs) {
		if a == kv {
			return true
		}
	}
	return false
}
