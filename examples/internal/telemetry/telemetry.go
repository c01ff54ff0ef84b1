// Package telemetry wires the examples' observability: bulwark events to
// OpenTelemetry metrics (otelbulwark) and to logs (bulwark.SlogObserver);
// metrics served in the Prometheus text format; the semantic-convention HTTP
// metrics http.server.request.duration and http.client.request.duration;
// server and client spans by otelhttp, with W3C trace-context propagation,
// exported by OTLP/HTTP when an endpoint is configured; and slog logs that
// carry the trace id.
//
// Span export is off by default. It is on when OTEL_EXPORTER_OTLP_ENDPOINT
// (such as http://localhost:4318) or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
// set; the other standard OTEL_EXPORTER_OTLP_* variables (headers, timeout,
// compression, protocol) and OTEL_TRACES_SAMPLER apply, and
// OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true turn it off again.
// With export off no span is recorded, and Middleware does not run otelhttp,
// whose fixed cost (about 30 allocations a request, whatever its providers)
// would be a large share of a proxied request's: it records the same
// http.server.request.duration series itself, and a request that carries a
// traceparent keeps its trace id, which its logs carry and outgoing requests
// through Transport propagate. A request without one gets no trace id on the
// server side (it would name no trace anyone could find); Transport still
// gives an outgoing request one, so that the services it calls can tie their
// logs together.
package telemetry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/otelbulwark"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// closeTimeout bounds Close when its context has no deadline, so that an
// unreachable OTLP endpoint cannot hold a shutdown for the exporter's retries.
const closeTimeout = 5 * time.Second

// Telemetry is one service's observability. Use New; Close releases it. A
// Telemetry is safe for concurrent use.
type Telemetry struct {
	// Observer records bulwark events as metrics and logs them; pass it to
	// every component's Config (it is nil-safe to compose with others).
	Observer bulwark.Observer
	// Metrics is the otelbulwark Observer inside Observer: register the
	// service's limits and throttles with it (RegisterLimit,
	// RegisterThrottle) for their in-flight, queue and probability gauges.
	Metrics *otelbulwark.Observer
	// Logger writes structured logs; use it with a request's context to
	// get its trace id.
	Logger *slog.Logger

	registry  *prometheus.Registry
	meters    *sdkmetric.MeterProvider
	tracers   *sdktrace.TracerProvider
	prop      propagation.TraceContext
	server    *serverMetrics
	exporting bool // spans go to an OTLP endpoint
}

// New builds the telemetry of the service named service (the service.name
// resource attribute, unless OTEL_SERVICE_NAME says otherwise). Logs go to w
// in JSON at level; bulwark events are logged at the levels of
// bulwark.SlogObserver. Spans are exported as the package documentation
// says.
func New(service string, w io.Writer, level slog.Level) (*Telemetry, error) {
	ctx := context.Background()
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res),
		sdkmetric.WithView(dropBodySizes))
	obs, err := otelbulwark.New(otelbulwark.WithMeterProvider(mp))
	if err != nil {
		return nil, fmt.Errorf("telemetry: otelbulwark: %w", err)
	}

	server, err := newServerMetrics(mp)
	if err != nil {
		return nil, fmt.Errorf("telemetry: server metrics: %w", err)
	}

	t := &Telemetry{Metrics: obs, registry: reg, meters: mp, prop: propagation.TraceContext{}, server: server}
	if t.exporting = tracesExported(os.Getenv); t.exporting {
		spans, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP trace exporter: %w", err)
		}
		// The sampler comes from OTEL_TRACES_SAMPLER; by default every
		// request that its caller did not decline to sample.
		t.tracers = sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithBatcher(spans))
	} else {
		// Nothing would collect a recorded span: record none. Spans still
		// get ids, for the logs and for propagation.
		t.tracers = sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithSampler(sdktrace.NeverSample()))
	}
	t.Logger = slog.New(traceHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})}).With("service", service)
	t.Observer = bulwark.Observers(obs, bulwark.SlogObserver(t.Logger))
	if t.exporting {
		t.Logger.Info("exporting spans by OTLP/HTTP", "endpoint",
			cmp.Or(os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")))
	}
	return t, nil
}

// dropBodySizes drops the request and response body-size histograms that
// otelhttp's Transport records beside the durations: no dashboard reads them,
// and each costs a histogram record per request.
func dropBodySizes(i sdkmetric.Instrument) (sdkmetric.Stream, bool) {
	switch i.Name {
	case "http.client.request.body.size", "http.client.response.body.size":
		return sdkmetric.Stream{Aggregation: sdkmetric.AggregationDrop{}}, true
	}
	return sdkmetric.Stream{}, false
}

// tracesExported reports whether the environment asks for spans to be
// exported by OTLP: an endpoint is set, and neither the SDK nor the traces
// exporter is turned off.
func tracesExported(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") ||
		strings.EqualFold(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")), "none") {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

// MetricsHandler serves /metrics in the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Middleware records http.server.request.duration for each request, by
// method, route (the mux's pattern), status, scheme and protocol, and
// continues an incoming traceparent. With span export on, otelhttp gives the
// request a recorded server span, named after the method and route; with it
// off, otelhttp is not used and the request's context carries only the
// incoming trace context, if any (see the package documentation). The
// histogram is recorded here in both cases, with the attributes otelhttp
// gives it but server.address and server.port (opt-in in the semantic
// conventions, and taken from the Host header, which the client chooses), and
// with the request's context, so that the SDK can attach a recorded span to
// it as an exemplar.
func (t *Telemetry) Middleware(next http.Handler) http.Handler {
	h := &serverHandler{next: next, metrics: t.server, prop: t.prop}
	if !t.exporting {
		h.extract = true
		return h
	}
	return otelhttp.NewHandler(h, "server", otelhttp.WithTracerProvider(t.tracers),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()), otelhttp.WithPropagators(t.prop))
}

// Transport returns base (http.DefaultTransport if nil) with a client span
// for each request, the trace context injected into its headers, and
// http.client.request.duration recorded, with otelhttp.
func (t *Telemetry) Transport(base http.RoundTripper) http.RoundTripper {
	return otelhttp.NewTransport(base,
		otelhttp.WithTracerProvider(t.tracers), otelhttp.WithMeterProvider(t.meters), otelhttp.WithPropagators(t.prop))
}

// Close flushes and releases the providers: the spans not exported yet are
// sent. Without a deadline in ctx, it gives up after 5 seconds.
func (t *Telemetry) Close(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, closeTimeout)
		defer cancel()
	}
	return errors.Join(t.tracers.Shutdown(ctx), t.meters.Shutdown(ctx))
}

// traceHandler adds trace_id and span_id to records logged with a context
// that carries a span. Logs stay JSON lines on the writer, for any log
// shipper; the OpenTelemetry slog bridge (otelslog, which sends records to an
// OTLP log exporter) is not used.
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
