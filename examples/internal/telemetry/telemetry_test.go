package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/bulwark-go/bulwark"
)

func TestTracesExported(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
		{"SDK disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "TRUE"}, false},
		{"other variables only", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=b", "OTEL_TRACES_SAMPLER": "always_on"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tracesExported(func(k string) string { return tt.env[k] }); got != tt.want {
				t.Errorf("tracesExported(%v) = %v, want %v", tt.env, got, tt.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the server's and the test's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPropagationWithoutExport checks the default, export-off setup: a
// request sent through Transport carries its trace id to a service behind
// Middleware, whose logs carry it; no span is recorded; both HTTP metrics are
// served, the server's by route.
func TestPropagationWithoutExport(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	var logs syncBuffer
	tel, err := New("orders", &logs, slog.LevelInfo)
	require.NoError(t, err)
	defer tel.Close(context.Background())
	require.False(t, tel.exporting, "export on with no endpoint")

	var recording bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		recording = trace.SpanFromContext(r.Context()).IsRecording()
		tel.Logger.InfoContext(r.Context(), "handled", "id", r.PathValue("id"))
		w.WriteHeader(http.StatusAccepted)
	})
	mux.Handle("GET /metrics", tel.MetricsHandler())
	srv := httptest.NewServer(tel.Middleware(mux))
	defer srv.Close()

	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  trace.SpanID{0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
	})
	ctx := trace.ContextWithSpanContext(context.Background(), parent)
	client := &http.Client{Transport: tel.Transport(nil)}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/orders/42", nil)
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.False(t, recording, "a span was recorded with export off")

	var line struct {
		Msg     string `json:"msg"`
		TraceID string `json:"trace_id"`
		Service string `json:"service"`
	}
	for l := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		require.NoError(t, json.Unmarshal([]byte(l), &line), "log line %q", l)
		if line.Msg == "handled" {
			break
		}
	}
	require.Equal(t, "handled", line.Msg, "logs: %s", logs.String())
	if want := parent.TraceID().String(); line.TraceID != want {
		t.Errorf("the handler's log has trace_id %q, want the caller's %q", line.TraceID, want)
	}
	require.Equal(t, "orders", line.Service)

	resp, err = http.Get(srv.URL + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`http_server_request_duration_seconds_count{`,
		`http_route="/orders/{id}"`,
		`http_client_request_duration_seconds_count{`,
		`target_info{`,
		`service_name="orders"`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestOTLPExport checks that with OTEL_EXPORTER_OTLP_ENDPOINT set, the spans
// of requests reach that endpoint by OTLP/HTTP, with the service's name.
func TestOTLPExport(t *testing.T) {
	var (
		mu   sync.Mutex
		reqs []*coltrace.ExportTraceServiceRequest
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "unexpected "+r.URL.Path+" "+r.Header.Get("Content-Type"), http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		reqs = append(reqs, &req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("OTEL_SERVICE_NAME", "")

	tel, err := New("orders", io.Discard, slog.LevelInfo)
	require.NoError(t, err)
	require.True(t, tel.exporting, "export off with an endpoint set")
	var recording bool
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		recording = trace.SpanFromContext(r.Context()).IsRecording()
		w.WriteHeader(http.StatusCreated)
	})
	srv := httptest.NewServer(tel.Middleware(mux))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/orders", "application/json", strings.NewReader(`{}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.True(t, recording, "the request's span is not recorded")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, tel.Close(ctx), "Close flushes the spans")

	mu.Lock()
	defer mu.Unlock()
	var found []string
	for _, req := range reqs {
		for _, rs := range req.GetResourceSpans() {
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					found = append(found, service+" "+sp.GetName()+" "+sp.GetKind().String())
				}
			}
		}
	}
	require.Contains(t, found, "orders POST /orders SPAN_KIND_SERVER", "spans received by the collector")
}

// TestObserverNoAllocs checks that the Observer the services use (otelbulwark
// and SlogObserver at INFO) allocates nothing for the events of a request once
// their attribute sets are cached, with or without the request's context.
func TestObserverNoAllocs(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tel, err := New("proxy", io.Discard, slog.LevelInfo)
	require.NoError(t, err)
	defer tel.Close(context.Background())
	co, ok := tel.Observer.(bulwark.ContextObserver)
	require.True(t, ok, "the Observer is a ContextObserver")
	ctx, span := tel.tracers.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	for _, e := range requestEvents() {
		for range 3 {
			co.ObserveContext(ctx, e) // warm the caches
		}
		if n := testing.AllocsPerRun(100, func() { tel.Observer.Observe(e) }); n != 0 {
			t.Errorf("Observe(%s of %s) = %v allocs, want 0", e.Kind, e.Component, n)
		}
		if n := testing.AllocsPerRun(100, func() { co.ObserveContext(ctx, e) }); n != 0 {
			t.Errorf("ObserveContext(%s of %s) = %v allocs, want 0", e.Kind, e.Component, n)
		}
	}
}

// requestEvents are the events a proxied request or an order's payment
// emits when things go well, or as well as a retry and a declined card.
func requestEvents() []bulwark.Event {
	ep := bulwark.Endpoint{Addr: "10.0.0.1:8080", Zone: "eu-west-1a"}
	return []bulwark.Event{
		{Kind: bulwark.EventPick, Component: bulwark.ComponentBalancer, Name: "proxy", Endpoint: ep, Reason: "least_request", Attempt: 1},
		{Kind: bulwark.EventCall, Component: bulwark.ComponentBalancer, Name: "proxy", Endpoint: ep, Outcome: bulwark.Success, Latency: 3 * time.Millisecond},
		{Kind: bulwark.EventCall, Component: bulwark.ComponentBreaker, Name: "payments", Outcome: bulwark.Success, Latency: 20 * time.Millisecond},
		{Kind: bulwark.EventRetry, Component: bulwark.ComponentRetry, Name: "payments", Attempt: 2, Delay: 10 * time.Millisecond, Reason: "error"},
		{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry, Name: "payments", Attempt: 1, Reason: "not_retryable"},
		{Kind: bulwark.EventRejected, Component: bulwark.ComponentBreaker, Name: "payments", Reason: "open"},
		{Kind: bulwark.EventClaimed, Component: bulwark.ComponentIdempotency, Name: "orders", Key: "k1"},
		{Kind: bulwark.EventReplayed, Component: bulwark.ComponentIdempotency, Name: "orders", Key: "k1"},
	}
}
