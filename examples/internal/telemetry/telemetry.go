// Package telemetry wires the examples' observability: bulwark events to
// OpenTelemetry metrics (otelbulwark) exported in the Prometheus text format,
// HTTP server metrics, a span per request with W3C trace-context propagation,
// and slog logs that carry the trace id.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/otelbulwark"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Telemetry is one service's observability. Use New; Close releases it.
type Telemetry struct {
	// Observer records bulwark events as metrics; pass it to every
	// component's Config (it is nil-safe to compose with others).
	Observer bulwark.Observer
	// Logger writes structured logs; use it with a request's context to
	// get its trace id.
	Logger *slog.Logger

	registry *prometheus.Registry
	meters   *sdkmetric.MeterProvider
	tracers  *sdktrace.TracerProvider
	tracer   trace.Tracer
	requests metric.Float64Histogram
	prop     propagation.TextMapPropagator
}

// New builds the telemetry of the service named service. Logs go to w in
// JSON at level; events at Info and above are also logged.
func New(service string, w io.Writer, level slog.Level) (*Telemetry, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	obs, err := otelbulwark.New(otelbulwark.WithMeterProvider(mp))
	if err != nil {
		return nil, fmt.Errorf("telemetry: otelbulwark: %w", err)
	}
	requests, err := mp.Meter("github.com/bulwark-go/bulwark/examples").Float64Histogram(
		"http.server.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP server requests."),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
	if err != nil {
		return nil, fmt.Errorf("telemetry: request histogram: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	logger := slog.New(traceHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})}).With("service", service)
	return &Telemetry{
		Observer: bulwark.Observers(obs, bulwark.SlogObserver(logger)),
		Logger:   logger,
		registry: reg,
		meters:   mp,
		tracers:  tp,
		tracer:   tp.Tracer("github.com/bulwark-go/bulwark/examples/" + service),
		requests: requests,
		prop:     propagation.TraceContext{},
	}, nil
}

// MetricsHandler serves /metrics in the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Middleware gives each request a server span (continuing an incoming
// traceparent), records its duration by route and status, and logs 5xx
// answers with the trace id.
func (t *Telemetry) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx := t.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := t.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		inner := r.WithContext(ctx)
		next.ServeHTTP(sw, inner)
		route := inner.Pattern // set by the mux inside next, on the request it was given
		if route == "" {
			route = "unmatched"
		}
		t.requests.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("http.route", route),
			attribute.Int("http.response.status_code", sw.status)))
		if sw.status >= 500 {
			t.Logger.WarnContext(ctx, "request failed", "method", r.Method, "route", route, "status", sw.status)
		}
	})
}

// Inject adds the trace context of ctx to outgoing headers.
func (t *Telemetry) Inject(ctx context.Context, h http.Header) {
	t.prop.Inject(ctx, propagation.HeaderCarrier(h))
}

// Close flushes and releases the providers.
func (t *Telemetry) Close(ctx context.Context) error {
	return errors.Join(t.meters.Shutdown(ctx), t.tracers.Shutdown(ctx))
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// traceHandler adds trace_id and span_id to records logged with a context
// that carries a span.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
