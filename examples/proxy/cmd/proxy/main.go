// Command proxy runs the example reverse proxy.
//
//	go run ./examples/proxy/cmd/proxy -listen :8080 \
//	    -backends 127.0.0.1:9001/a,127.0.0.1:9002/a,127.0.0.1:9003/b -zone a -algorithm peak_ewma
//
// Or, with the backends from DNS, an SRV name (the records give the ports)
// or a host name whose A and AAAA records are used with -dns-port:
//
//	go run ./examples/proxy/cmd/proxy -dns _http._tcp.orders.internal -dns-server 10.0.0.2
//
// It serves the proxied traffic, /livez, /readyz, /startupz and /metrics. On
// SIGINT or SIGTERM it drains: readiness fails at once, it waits -drain-delay
// for load balancers to notice, then lets the requests in flight finish.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/discovery"
	"github.com/bulwark-go/bulwark/examples/internal/telemetry"
	"github.com/bulwark-go/bulwark/examples/proxy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	backends := flag.String("backends", "", "backends, comma-separated host:port[/zone[/weight]] (required without -dns)")
	dnsName := flag.String("dns", "", "DNS name of the backends, re-resolved at its TTL: an SRV name, or a host name with -dns-port")
	dnsPort := flag.Int("dns-port", 0, "port of the backends found by -dns as A/AAAA records; 0 looks -dns up as SRV")
	dnsServers := flag.String("dns-server", "", "DNS servers to ask, comma-separated host[:port] (default: those of /etc/resolv.conf)")
	algorithm := flag.String("algorithm", "least_request", "round_robin, least_request, peak_ewma, consistent_hash or random")
	zone := flag.String("zone", "", "the proxy's own zone, preferred while healthy")
	hashHeader := flag.String("hash-header", "", "header whose value keys consistent_hash (e.g. X-Customer-Id)")
	hashCookie := flag.String("hash-cookie", "", "cookie whose value keys consistent_hash when the header is absent")
	checkPath := flag.String("check-path", "/readyz", "path of the backends' health check")
	checkInterval := flag.Duration("check-interval", time.Second, "time between health checks of a backend")
	attempts := flag.Int("attempts", 3, "tries of a replayable request, the first included")
	endpointLimit := flag.String("endpoint-limit", "256", "requests in flight per backend: a fixed number, off, adaptive (at most 256) or adaptive:N")
	drainDelay := flag.Duration("drain-delay", 5*time.Second, "how long readiness fails before shutdown starts")
	verbose := flag.Bool("v", false, "debug logs")
	flag.Parse()

	if *backends == "" && *dnsName == "" {
		return errors.New("-backends or -dns is required")
	}
	var eps []bulwark.Endpoint
	var resolver discovery.Resolver
	if *backends != "" {
		var err error
		if eps, err = proxy.ParseBackends(*backends); err != nil {
			return err
		}
	}
	if *dnsName != "" {
		cfg := discovery.DNSConfig{Name: *dnsName, SRV: *dnsPort == 0, Port: *dnsPort}
		if *dnsServers != "" {
			cfg.Servers = strings.Split(*dnsServers, ",")
		}
		dns, err := discovery.NewDNS(cfg)
		if err != nil {
			return err
		}
		resolver = dns
	}
	algo, err := proxy.ParseAlgorithm(*algorithm)
	if err != nil {
		return err
	}
	limitPerBackend, adaptiveLimit, err := proxy.ParseEndpointLimit(*endpointLimit)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	tel, err := telemetry.New("proxy", os.Stderr, level)
	if err != nil {
		return err
	}
	p, err := proxy.New(proxy.Config{
		Backends: eps, Resolver: resolver, Algorithm: algo, Zone: *zone, HashHeader: *hashHeader, HashCookie: *hashCookie,
		CheckPath: *checkPath, CheckInterval: *checkInterval, MaxAttempts: *attempts, EndpointLimit: limitPerBackend, AdaptiveEndpointLimit: adaptiveLimit,
		Observer: tel.Observer, Logger: tel.Logger,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := p.Start(context.Background()); err != nil {
		return err
	}
	defer p.Close()

	srv := &http.Server{Addr: *listen, Handler: withMetrics(tel, p.Handler()), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	tel.Logger.Info("proxy serving", "listen", *listen, "backends", len(eps), "dns", *dnsName, "algorithm", algo.String())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	tel.Logger.Info("draining", "delay", drainDelay.String())
	drainCtx, cancel := context.WithTimeout(context.Background(), *drainDelay+30*time.Second)
	defer cancel()
	go func() { _ = p.Drain(drainCtx) }()
	time.Sleep(*drainDelay) // load balancers notice the failing readiness
	if err := srv.Shutdown(drainCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return tel.Close(context.Background())
}

// withMetrics serves /metrics from tel, and every other path from h (the
// proxy, with its /livez, /readyz and /startupz) behind tel's Middleware. It
// tests the path rather than putting a ServeMux in front of h's own, which
// would route each proxied request twice, at a cost (about 2 allocations)
// the proxy's throughput shows.
func withMetrics(tel *telemetry.Telemetry, h http.Handler) http.Handler {
	metrics, proxied := tel.MetricsHandler(), tel.Middleware(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			metrics.ServeHTTP(w, r)
			return
		}
		proxied.ServeHTTP(w, r)
	})
}
