package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
)

// newTestTelemetry returns a Telemetry with span export on or off; with it
// on, spans go to an endpoint that is never reached (Close is not waited for).
func newTestTelemetry(t *testing.T, export bool) *Telemetry {
	t.Helper()
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	if export {
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	} else {
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	}
	tel, err := New("orders", io.Discard, slog.LevelInfo)
	require.NoError(t, err)
	require.Equal(t, export, tel.exporting)
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // nothing listens: do not wait for the exporter
		_ = tel.Close(ctx)
	})
	return tel
}

var durationCount = regexp.MustCompile(`(?m)^http_server_request_duration_seconds_count\{(.*)\} (\d+)$`)

// serverSeries scrapes tel's /metrics and returns the series of
// http.server.request.duration: their labels, but the scope's, sorted, with
// their counts.
func serverSeries(t *testing.T, tel *Telemetry) map[string]string {
	t.Helper()
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	series := map[string]string{}
	for _, m := range durationCount.FindAllStringSubmatch(rec.Body.String(), -1) {
		var labels []string
		for l := range strings.SplitSeq(m[1], ",") {
			if !strings.HasPrefix(l, "otel_scope_") {
				labels = append(labels, l)
			}
		}
		slices.Sort(labels)
		series[strings.Join(labels, ",")] = m[2]
	}
	return series
}

// TestMiddlewareMetrics checks the series of http.server.request.duration,
// with span export off and on: one measurement a request, by method, route,
// status, scheme and protocol; no server.address or server.port (the Host
// header does not split series); the final status, not an informational one;
// 200 for a handler that writes nothing; and, with export on, a recorded
// span in the handler's context, and with it off none, nor a trace id for a
// request without a traceparent.
func TestMiddlewareMetrics(t *testing.T) {
	for _, export := range []bool{false, true} {
		name := "export off"
		if export {
			name = "export on"
		}
		t.Run(name, func(t *testing.T) {
			tel := newTestTelemetry(t, export)
			var recording, traced []bool
			mux := http.NewServeMux()
			mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
				recording = append(recording, trace.SpanFromContext(r.Context()).IsRecording())
				traced = append(traced, trace.SpanContextFromContext(r.Context()).IsValid())
				_, _ = io.WriteString(w, "{}")
			})
			mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusEarlyHints)
				w.WriteHeader(http.StatusCreated)
				w.WriteHeader(http.StatusInternalServerError) // superfluous: ignored
			})
			mux.HandleFunc("DELETE /orders/{id}", func(http.ResponseWriter, *http.Request) {})
			h := tel.Middleware(mux)
			for _, req := range []struct{ method, host, path string }{
				{"GET", "a.example", "/orders/1"},
				{"GET", "b.example:8080", "/orders/2"},
				{"POST", "a.example", "/orders"},
				{"DELETE", "a.example", "/orders/3"},
				{"BREW", "a.example", "/pot"},
			} {
				r := httptest.NewRequest(req.method, "http://"+req.host+req.path, nil)
				h.ServeHTTP(httptest.NewRecorder(), r)
			}
			proto := `network_protocol_name="http",network_protocol_version="1.1"`
			want := map[string]string{
				`http_request_method="GET",http_response_status_code="200",http_route="/orders/{id}",` + proto + `,url_scheme="http"`:    "2",
				`http_request_method="POST",http_response_status_code="201",http_route="/orders",` + proto + `,url_scheme="http"`:        "1",
				`http_request_method="DELETE",http_response_status_code="200",http_route="/orders/{id}",` + proto + `,url_scheme="http"`: "1",
				`http_request_method="_OTHER",http_response_status_code="404",` + proto + `,url_scheme="http"`:                           "1",
			}
			require.Equal(t, want, serverSeries(t, tel))
			require.Equal(t, []bool{export, export}, recording, "spans recorded")
			require.Equal(t, []bool{export, export}, traced, "trace ids for requests without a traceparent")
		})
	}
}

// TestMiddlewareResponseWriter checks that a handler behind Middleware still
// reaches what the server's ResponseWriter offers: http.Flusher by type
// assertion, and hijacking through http.ResponseController, which a reverse
// proxy needs for an upgraded connection.
func TestMiddlewareResponseWriter(t *testing.T) {
	tel := newTestTelemetry(t, false)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /flush", func(w http.ResponseWriter, r *http.Request) {
		f, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "not a Flusher", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "flushed")
		f.Flush()
	})
	mux.HandleFunc("GET /hijack", func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		_ = brw.Flush()
	})
	srv := httptest.NewServer(tel.Middleware(mux))
	defer srv.Close()
	for _, path := range []string{"/flush", "/hijack"} {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
		require.Equal(t, strings.TrimPrefix(path, "/")+"ed", string(body))
	}
}

// TestMiddlewareAllocs bounds what Middleware allocates per request, with
// span export off, once its attribute sets are cached: the status recorder;
// with a traceparent, also the caller's span context, its context and the
// request that carries it. (otelhttp's handler allocates about 30 times.)
func TestMiddlewareAllocs(t *testing.T) {
	tel := newTestTelemetry(t, false)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	h := tel.Middleware(mux)
	r := httptest.NewRequest(http.MethodGet, "/orders/42", nil)
	w := &discardWriter{h: http.Header{}}
	h.ServeHTTP(w, r) // cache the attribute set
	bare := testing.AllocsPerRun(200, func() { mux.ServeHTTP(w, r) })
	with := testing.AllocsPerRun(200, func() { h.ServeHTTP(w, r) })
	if with-bare > 1 {
		t.Errorf("Middleware allocates %v times a request, want <= 1 (the handler alone: %v)", with-bare, bare)
	}
	r.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	withParent := testing.AllocsPerRun(200, func() { h.ServeHTTP(w, r) })
	if withParent-bare > 4 {
		t.Errorf("Middleware allocates %v times a request with a traceparent, want <= 4 (the handler alone: %v)", withParent-bare, bare)
	}
}
