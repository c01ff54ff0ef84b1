package healthz_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/bulwark-go/bulwark/healthz"
)

// Wiring /livez, /readyz and /startupz, and draining on SIGTERM: readiness
// fails at once, so that load balancers stop sending new requests while the
// server finishes the ones in flight, and only then does the server shut
// down.
func Example_readinessDrain() {
	svc, err := healthz.New(healthz.Config{
		ServiceID: "orders",
		Version:   "1",
		Ready: []healthz.Check{
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
