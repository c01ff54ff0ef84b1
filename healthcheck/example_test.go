package healthcheck_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
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

func (l listener) EjectionChanged(ep bulwark.Endpoint, ejected bool) {}

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

// Wiring /livez, /readyz and /startupz, and draining on SIGTERM: readiness
// fails at once, so that load balancers stop sending new requests while the
// server finishes the ones in flight, and only then does the server shut
// down.
func Example_readinessDrain() {
	svc, err := healthcheck.NewService(healthcheck.ServiceConfig{
		ServiceID: "orders",
		Version:   "1",
		Ready: []healthcheck.Check{
			{Name: "postgres", Type: "datastore", Timeout: time.Second, Run: func(ctx context.Context) error {
				return nil // db.PingContext(ctx)
			}},
			{Name: "recommendations", Type: "component", Optional: true, Run: func(ctx context.Context) error {
				return fmt.Errorf("recommendations: 503")
			}},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("GET /livez", svc.Livez())
	mux.Handle("GET /readyz", svc.Readyz())
	mux.Handle("GET /startupz", svc.Startupz())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{Handler: mux}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	svc.MarkStarted() // initialization is done

	get := func(path string) string {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		var body struct { // application/health+json
			Status string
			Notes  []string
			Checks map[string][]struct{ Status string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return err.Error()
		}
		out := fmt.Sprintf("%s %d %s", path, resp.StatusCode, body.Status)
		for _, k := range slices.Sorted(maps.Keys(body.Checks)) {
			out += fmt.Sprintf(" %s=%s", k, body.Checks[k][0].Status)
		}
		for _, n := range body.Notes {
			out += " (" + n + ")"
		}
		return out
	}
	fmt.Println(get("/readyz"))

	sigterm := make(chan os.Signal, 1)
	signal.Notify(sigterm, syscall.SIGTERM)
	defer signal.Stop(sigterm)
	syscall.Kill(os.Getpid(), syscall.SIGTERM) // what the kubelet sends
	<-sigterm

	svc.Drain()
	fmt.Println(get("/readyz")) // the server still serves, but is not ready
	fmt.Println(get("/livez"))  // and is alive: no restart
	// In production, wait here for the load balancers to notice, a few of
	// their probe periods (time.Sleep(10 * time.Second)), then shut down.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("shutdown:", srv.Shutdown(ctx), <-served)
	// Output:
	// /readyz 200 warn postgres:responseTime=pass recommendations:responseTime=warn
	// /readyz 503 fail (draining: shutting down)
	// /livez 200 pass
	// shutdown: <nil> http: Server closed
}

// An OutlierDetector fed with call outcomes ejects a backend after five
// failures in a row, and brings it back when its ejection time ends.
func ExampleOutlierDetector() {
	clk := bulwarktest.NewClock(time.Time{})
	od, err := healthcheck.NewOutlierDetector(healthcheck.OutlierConfig{
		MaxEjectionPercent: 50,
		Clock:              clk,
		Observer: bulwark.ObserverFunc(func(e bulwark.Event) {
			fmt.Println(e.Kind, e.Endpoint.Addr, e.Reason, e.Delay)
		}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	a, b := bulwark.Endpoint{Addr: "10.0.0.1:80"}, bulwark.Endpoint{Addr: "10.0.0.2:80"}
	for range 5 {
		od.Record(a, bulwark.Success, false)
		od.Record(b, bulwark.Failure, true) // e.g. a 503
	}
	fmt.Println("b ejected:", od.Ejected(b))
	clk.Advance(30 * time.Second)
	od.EvaluateAt(clk.Now()) // what the goroutine of Start does every Interval
	fmt.Println("b ejected:", od.Ejected(b))
	// Output:
	// ejected 10.0.0.2:80 consecutive_failures 30s
	// b ejected: true
	// unejected 10.0.0.2:80 expired 0s
	// b ejected: false
}
