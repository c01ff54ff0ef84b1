package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/bulwark-go/bulwark"
)

// newBenchTelemetry returns the services' telemetry as shipped, with span
// export off (the default).
func newBenchTelemetry(b *testing.B) *Telemetry {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	b.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tel, err := New("bench", io.Discard, slog.LevelInfo)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tel.Close(context.Background()) })
	return tel
}

// discardWriter is a ResponseWriter that keeps nothing, so that a benchmark
// measures the handler chain and not a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkMiddleware measures what Middleware adds to one request served in
// process: bare is a mux with one route, telemetry the same mux behind
// Middleware (the HTTP server metrics; with span export off, the default,
// no span).
func BenchmarkMiddleware(b *testing.B) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "{}")
	})
	tel := newBenchTelemetry(b)
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{
		{"bare", mux},
		{"telemetry", tel.Middleware(mux)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/orders/42", nil)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				bc.h.ServeHTTP(w, r)
			}
		})
	}
}

// okTransport answers every request at once, so that a benchmark measures
// the client side alone.
type okTransport struct{}

func (okTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

// BenchmarkTransport measures what Transport adds to one client request: bare
// is a RoundTripper that answers at once, telemetry the same behind Transport
// (a client span, not recorded, the traceparent header, the HTTP client
// metrics).
func BenchmarkTransport(b *testing.B) {
	tel := newBenchTelemetry(b)
	for _, bc := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"bare", okTransport{}},
		{"telemetry", tel.Transport(okTransport{})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://orders.internal/orders/42", nil)
				resp, err := bc.rt.RoundTrip(r)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		})
	}
}

// BenchmarkLoopback puts the two in proportion: one real request over
// loopback to a server, bare or with Middleware, from a client, bare or with
// Transport.
func BenchmarkLoopback(b *testing.B) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "{}")
	})
	tel := newBenchTelemetry(b)
	for _, bc := range []struct {
		name string
		h    http.Handler
		rt   func(http.RoundTripper) http.RoundTripper
	}{
		{"bare", mux, func(rt http.RoundTripper) http.RoundTripper { return rt }},
		{"telemetry", tel.Middleware(mux), tel.Transport},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := httptest.NewServer(bc.h)
			defer srv.Close()
			base := &http.Transport{MaxIdleConnsPerHost: 4}
			defer base.CloseIdleConnections()
			client := &http.Client{Transport: bc.rt(base)}
			url := srv.URL + "/orders/42"
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// scrape serves tel's /metrics once, as Prometheus would: a collection, after
// which otelbulwark holds counts until the next one.
func scrape(b *testing.B, tel *Telemetry) {
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		b.Fatalf("/metrics: status %d", rec.Code)
	}
}

// BenchmarkObserver measures the services' Observer (otelbulwark into the
// Prometheus exporter's SDK, scraped once, and SlogObserver at INFO) on the
// events of a request, cycling through requestEvents, with the request's
// context.
func BenchmarkObserver(b *testing.B) {
	tel := newBenchTelemetry(b)
	scrape(b, tel)
	events := requestEvents()
	ctx, span := tel.tracers.Tracer("bench").Start(context.Background(), "request")
	defer span.End()
	obs := tel.Observer.(bulwark.ContextObserver)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		obs.ObserveContext(ctx, events[i])
		if i++; i == len(events) {
			i = 0
		}
	}
}

// BenchmarkObserverParallel is BenchmarkObserver from parallel goroutines,
// which record on the same series as a proxy's requests do.
func BenchmarkObserverParallel(b *testing.B) {
	tel := newBenchTelemetry(b)
	scrape(b, tel)
	events := requestEvents()
	ctx, span := tel.tracers.Tracer("bench").Start(context.Background(), "request")
	defer span.End()
	obs := tel.Observer.(bulwark.ContextObserver)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			obs.ObserveContext(ctx, events[i])
			if i++; i == len(events) {
				i = 0
			}
		}
	})
}
