package healthcheck_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/healthcheck"
)

// listener prints health changes; a balancer would stop or resume picking
// the endpoint.
type listener struct {
	names   map[string]string // addr → name
	changes chan string
}

func (l listener) HealthChanged(ep bulwark.Endpoint, healthy bool) {
	state := "unhealthy"
	if healthy {
		state = "healthy"
	}
	l.changes <- l.names[ep.Addr] + ": " + state
}

// Health-checking three HTTP backends, one of which is down and then
// recovers. The fake clock makes the example deterministic; in production,
// leave Clock nil.
func Example_httpBackends() {
	var cDown atomic.Bool
	cDown.Store(true)
	backends := map[string]http.HandlerFunc{
		"a": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") },
		"b": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") },
		"c": func(w http.ResponseWriter, r *http.Request) {
			if cDown.Load() {
				http.Error(w, "warming up", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok")
		},
	}
	l := listener{names: map[string]string{}, changes: make(chan string, 16)}
	var eps []bulwark.Endpoint
	for _, name := range []string{"a", "b", "c"} {
		srv := httptest.NewServer(backends[name])
		defer srv.Close()
		addr := strings.TrimPrefix(srv.URL, "http://")
		l.names[addr] = name
		eps = append(eps, bulwark.Endpoint{Addr: addr})
	}

	probe, err := healthcheck.HTTP(healthcheck.HTTPConfig{Path: "/healthz"})
	if err != nil {
		fmt.Println(err)
		return
	}
	clk := bulwarktest.NewClock(time.Time{})
	probed := make(chan string, 16) // probes of c, to pace the example
	hc, err := healthcheck.New(healthcheck.Config{
		Probe:             probe,
		Interval:          10 * time.Second,
		UnhealthyInterval: 2 * time.Second, // look again soon at a failing backend
		Timeout:           time.Second,
		Rise:              2, // two successes in a row to come back; a new backend needs one
		Fall:              3,
		Listener:          l,
		Observer: bulwark.ObserverFunc(func(e bulwark.Event) {
			if e.Kind == bulwark.EventProbe && l.names[e.Endpoint.Addr] == "c" {
				probed <- e.Outcome.String()
			}
		}),
		Clock: clk,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := hc.SetEndpoints(eps); err != nil {
		fmt.Println(err)
		return
	}
	if err := hc.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer hc.Close()

	first := []string{<-l.changes, <-l.changes, <-l.changes}
	slices.Sort(first) // the three first probes run concurrently
	fmt.Println(strings.Join(first, "\n"))
	<-probed

	cDown.Store(false)
	clk.Advance(2 * time.Second)
	fmt.Println("c probe:", <-probed)
	clk.Advance(2 * time.Second)
	fmt.Println("c probe:", <-probed)
	fmt.Println(<-l.changes)
	// Output:
	// a: healthy
	// b: healthy
	// c: unhealthy
	// c probe: success
	// c probe: success
	// c: healthy
}
