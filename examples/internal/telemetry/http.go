package telemetry

import (
	"context"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/httpconv"
)

// scopeName is the instrumentation scope of the server metrics this package
// records itself.
const scopeName = "github.com/bulwark-go/bulwark/examples/internal/telemetry"

// durationBuckets are the bucket boundaries of http.server.request.duration,
// in seconds: otelhttp's, so that the histogram is the same whichever records
// it.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// maxServerSets bounds the cache of attribute sets. Methods outside the
// standard ones are recorded as _OTHER, routes come from the mux's patterns
// and status codes are three digits, so a service stays far below it; past it
// a new combination is built for each request instead of kept.
const maxServerSets = 1024

// serverMetrics records http.server.request.duration, the histogram that
// otelhttp records, with the attributes otelhttp gives it but
// server.address and server.port (opt-in in the semantic conventions, and
// taken from the Host header, which the client chooses): http.request.method,
// url.scheme, network.protocol.name and version, http.response.status_code
// and http.route. Its attribute sets are built once per combination and
// cached, so that recording a request allocates nothing.
type serverMetrics struct {
	duration metric.Float64Histogram
	read     atomic.Pointer[map[serverKey][]metric.RecordOption]
	mu       sync.Mutex                          // guards dirty
	dirty    map[serverKey][]metric.RecordOption // a superset of *read
}

// serverKey is what the attributes of a request's measurement are made of.
type serverKey struct {
	method string // standardized: a known method or "_OTHER"
	route  string // the mux pattern without its method and host
	proto  string // as the request says, "HTTP/1.1"
	status int
	tls    bool
}

func newServerMetrics(mp metric.MeterProvider) (*serverMetrics, error) {
	d, err := httpconv.NewServerRequestDuration(mp.Meter(scopeName, metric.WithSchemaURL(semconv.SchemaURL)),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, err
	}
	m := &serverMetrics{duration: d.Inst(), dirty: map[serverKey][]metric.RecordOption{}}
	m.read.Store(&map[serverKey][]metric.RecordOption{})
	return m, nil
}

// record records d as the duration of r, answered with status.
func (m *serverMetrics) record(ctx context.Context, r *http.Request, status int, d time.Duration) {
	k := serverKey{method: standardMethod(r.Method), route: route(r.Pattern), proto: r.Proto, status: status, tls: r.TLS != nil}
	opts, ok := (*m.read.Load())[k]
	if !ok {
		opts = m.miss(k)
	}
	m.duration.Record(ctx, d.Seconds(), opts...)
}

// miss returns the options of k, built and cached under mu. They are a slice
// so that Record, which takes them variadically, does not allocate one.
func (m *serverMetrics) miss(k serverKey) []metric.RecordOption {
	m.mu.Lock()
	defer m.mu.Unlock()
	if opts, ok := m.dirty[k]; ok {
		return opts
	}
	opts := []metric.RecordOption{metric.WithAttributeSet(k.attributes())}
	if len(m.dirty) < maxServerSets {
		// The sets are few and found early: publish each at once.
		m.dirty[k] = opts
		read := maps.Clone(m.dirty)
		m.read.Store(&read)
	}
	return opts
}

func (k serverKey) attributes() attribute.Set {
	scheme := "http"
	if k.tls {
		scheme = "https"
	}
	kv := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(k.method),
		semconv.URLScheme(scheme),
		semconv.HTTPResponseStatusCode(k.status),
	}
	if name, version, _ := strings.Cut(k.proto, "/"); name != "" {
		kv = append(kv, semconv.NetworkProtocolName(strings.ToLower(name)))
		if version != "" {
			kv = append(kv, semconv.NetworkProtocolVersion(version))
		}
	}
	if k.route != "" {
		kv = append(kv, semconv.HTTPRoute(k.route))
	}
	return attribute.NewSet(kv...)
}

// standardMethod returns method if it is one of the methods of RFC 9110 and
// RFC 5789, and "_OTHER" otherwise, as the semantic conventions ask.
func standardMethod(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "_OTHER"
}

// route returns the path of a ServeMux pattern, without its method and host:
// "/orders/{id}" for "GET example.com/orders/{id}".
func route(pattern string) string {
	if i := strings.IndexByte(pattern, '/'); i >= 0 {
		return pattern[i:]
	}
	return ""
}

// serverHandler is Middleware's handler: it records each request's duration
// and, with extract (span export off), puts the trace context of an incoming
// traceparent in the request's context.
type serverHandler struct {
	next    http.Handler
	metrics *serverMetrics
	prop    propagation.TraceContext
	extract bool
}

func (h *serverHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.extract {
		if _, ok := r.Header["Traceparent"]; ok {
			r = r.WithContext(h.prop.Extract(r.Context(), headerCarrier(r.Header)))
		}
	}
	if !h.metrics.duration.Enabled(r.Context()) {
		h.next.ServeHTTP(w, r) // a View dropped the histogram
		return
	}
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	h.next.ServeHTTP(sw, r)
	status := sw.status
	if status == 0 {
		status = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	h.metrics.record(r.Context(), r, status, time.Since(start))
}

// headerCarrier is propagation.HeaderCarrier for extraction, without the
// allocation of canonicalizing the propagator's lowercase keys on each Get.
type headerCarrier http.Header

func (c headerCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		key = "Traceparent"
	case "tracestate":
		key = "Tracestate"
	}
	return propagation.HeaderCarrier(c).Get(key)
}

func (c headerCarrier) Set(key, value string) { propagation.HeaderCarrier(c).Set(key, value) }

func (c headerCarrier) Keys() []string { return propagation.HeaderCarrier(c).Keys() }

// statusWriter keeps the status code of a response. Unwrap gives
// http.ResponseController the writer beneath, for Hijack, deadlines and the
// rest; Flush is forwarded for handlers that assert http.Flusher.
type statusWriter struct {
	http.ResponseWriter
	status int // 0 until the header is written
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
