package proxy

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/examples/internal/telemetry"
)

// BenchmarkThroughput compares the proxy with a bare httputil.ReverseProxy
// that round-robins over the same three loopback backends, in one run: bare;
// the proxy without telemetry (bulwark); with the telemetry Observer only
// (observer); with the otelhttp middleware only (middleware); and as
// cmd/proxy ships it, with both (shipped). Each op is one GET through the
// proxy from a parallel client; compare ns/op (the inverse of throughput), or
// on a busy machine cpu-ns/op, between the sub-benchmarks.
func BenchmarkThroughput(b *testing.B) {
	var eps []bulwark.Endpoint
	var urls []*url.URL
	for range 3 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hello from the backend\n")
		}))
		defer srv.Close()
		u, _ := url.Parse(srv.URL)
		eps = append(eps, bulwark.Endpoint{Addr: u.Host})
		urls = append(urls, u)
	}
	upstream := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256}
	defer upstream.CloseIdleConnections()

	var rr atomic.Uint64
	bare := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(urls[rr.Add(1)%uint64(len(urls))])
			r.SetXForwarded()
		},
		Transport:  upstream,
		BufferPool: bufferPool{},
	}
	p, err := New(Config{Backends: eps, Algorithm: balancer.RoundRobin, Transport: upstream, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	tel, err := telemetry.New("proxy", io.Discard, slog.LevelInfo)
	if err != nil {
		b.Fatal(err)
	}
	defer tel.Close(context.Background())
	shipped, err := New(Config{Backends: eps, Algorithm: balancer.RoundRobin, Transport: upstream, Observer: tel.Observer, Logger: tel.Logger})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", tel.MetricsHandler())
	mux.Handle("/", tel.Middleware(shipped.Handler()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, p := range []*Proxy{p, shipped} {
		if err := p.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer p.Close()
	}

	for _, tt := range []struct {
		name string
		h    http.Handler
	}{
		{"bare", bare}, {"bulwark", p.Handler()}, {"observer", shipped.Handler()},
		{"middleware", tel.Middleware(p.Handler())}, {"shipped", mux},
	} {
		b.Run(tt.name, func(b *testing.B) {
			front := httptest.NewServer(tt.h)
			defer front.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			b.SetParallelism(8)
			cpu := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(front.URL + "/item")
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			if cpu > 0 {
				// The process's CPU time per op: client, backends and
				// proxy, on a machine where wall time also counts the
				// waits for a core.
				b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
			}
		})
	}
}
