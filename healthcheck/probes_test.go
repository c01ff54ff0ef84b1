package healthcheck

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
)

func backend(t *testing.T) (bulwark.Endpoint, func() *http.Request) {
	t.Helper()
	var (
		mu   sync.Mutex
		last *http.Request
	)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		last = r
		mu.Unlock()
		io.WriteString(w, "status: green\n")
	})
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "broken", http.StatusInternalServerError)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/healthz", http.StatusFound)
	})
	mux.HandleFunc("/teapot", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return bulwark.Endpoint{Addr: strings.TrimPrefix(srv.URL, "http://")}, func() *http.Request {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

func TestHTTPProbe(t *testing.T) {
	e, last := backend(t)
	tests := []struct {
		name    string
		cfg     HTTPConfig
		wantErr string // a substring of the error; empty for success
	}{
		{"passes", HTTPConfig{Path: "/healthz"}, ""},
		{"body matches", HTTPConfig{Path: "/healthz", Body: regexp.MustCompile(`status: (green|yellow)`)}, ""},
		{"body does not match", HTTPConfig{Path: "/healthz", Body: regexp.MustCompile(`red`)}, "body does not match"},
		{"status 500", HTTPConfig{Path: "/broken"}, "status 500, want 200–299"},
		{"500 expected", HTTPConfig{Path: "/broken", Expected: []StatusRange{{500, 500}}}, ""},
		{"redirect not followed", HTTPConfig{Path: "/moved"}, "status 302"},
		{"several ranges", HTTPConfig{Path: "/teapot", Expected: []StatusRange{{200, 299}, {418, 418}}}, ""},
		{"not found", HTTPConfig{Path: "/missing"}, "status 404, want 200–299"},
		{"HEAD", HTTPConfig{Path: "/healthz", Method: http.MethodHead}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := HTTP(tt.cfg)
			if err != nil {
				t.Fatalf("HTTP(%+v) = %v", tt.cfg, err)
			}
			err = p(context.Background(), e)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("probe(%s) = %v, want nil", tt.cfg.Path, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("probe(%s) = %v, want an error containing %q", tt.cfg.Path, err, tt.wantErr)
			}
		})
	}
	p, err := HTTP(HTTPConfig{Path: "/healthz?full=1", Host: "api.internal", Header: http.Header{"X-Probe": {"bulwark"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p(context.Background(), e); err != nil {
		t.Fatalf("probe = %v", err)
	}
	r := last()
	if r.Host != "api.internal" || r.Header.Get("X-Probe") != "bulwark" || r.URL.RawQuery != "full=1" || r.Method != "GET" {
		t.Errorf("request: Host %q, X-Probe %q, query %q, method %s; want api.internal, bulwark, full=1, GET",
			r.Host, r.Header.Get("X-Probe"), r.URL.RawQuery, r.Method)
	}
}

func TestHTTPProbeCanceled(t *testing.T) {
	arrived := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done()
	}))
	defer srv.Close()
	p, err := HTTP(HTTPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	if err := p(ctx, bulwark.Endpoint{Addr: strings.TrimPrefix(srv.URL, "http://")}); !errors.Is(err, context.Canceled) {
		t.Errorf("probe with its ctx canceled mid-request = %v, want context.Canceled", err)
	}
}

func TestHTTPErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  HTTPConfig
	}{
		{"relative path", HTTPConfig{Path: "healthz"}},
		{"bad method", HTTPConfig{Method: "GET /x"}},
		{"bad scheme", HTTPConfig{Scheme: "ftp"}},
		{"inverted range", HTTPConfig{Expected: []StatusRange{{299, 200}}}},
		{"range beyond 599", HTTPConfig{Expected: []StatusRange{{200, 600}}}},
		{"range below 100", HTTPConfig{Expected: []StatusRange{{0, 200}}}},
		{"negative body limit", HTTPConfig{MaxBodyBytes: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := HTTP(tt.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("HTTP(%+v) = %v, want an error wrapping ErrInvalidConfig", tt.cfg, err)
			}
		})
	}
}

// tcpServer serves each connection with serve until closed.
func tcpServer(t *testing.T, serve func(net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln
}

func TestTCPProbe(t *testing.T) {
	pong := tcpServer(t, func(c net.Conn) {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line == "PING\n" {
			io.WriteString(c, "+PONG\r\n")
		} else {
			io.WriteString(c, "-ERR\r\n")
		}
	})
	accepted := make(chan struct{}, 1)
	silent := tcpServer(t, func(c net.Conn) {
		accepted <- struct{}{}
		io.Copy(io.Discard, c)
	})
	addr := func(ln net.Listener) bulwark.Endpoint { return bulwark.Endpoint{Addr: ln.Addr().String()} }
	tests := []struct {
		name    string
		cfg     TCPConfig
		ep      bulwark.Endpoint
		wantErr string
	}{
		{"connect", TCPConfig{}, addr(pong), ""},
		{"send and expect", TCPConfig{Send: []byte("PING\n"), Expect: []byte("+PONG")}, addr(pong), ""},
		{"wrong answer", TCPConfig{Send: []byte("HELLO\n"), Expect: []byte("+PONG")}, addr(pong), `"+PONG" not received`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := TCP(tt.cfg)(context.Background(), tt.ep)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("probe = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("probe = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	// A server that never answers: the probe ends with its ctx.
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error)
	go func() { done <- TCP(TCPConfig{Send: []byte("PING\n"), Expect: []byte("+PONG")})(ctx, addr(silent)) }()
	<-accepted
	cancel(context.DeadlineExceeded)
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("probe of a silent server after its ctx ended = %v, want context.DeadlineExceeded", err)
	}
}

func TestCheckerTCPListenerGoesAway(t *testing.T) {
	ln := tcpServer(t, func(net.Conn) {})
	e := bulwark.Endpoint{Addr: ln.Addr().String()}
	f := newChecker(t, Config{Rise: 1, Fall: 2, Timeout: 5 * time.Second, Probe: TCP(TCPConfig{})}, e)
	if got := f.state(t, e); got != Healthy {
		t.Fatalf("State with the listener up = %v, want healthy", got)
	}
	ln.Close()
	f.step(t, time.Second)
	if got := f.state(t, e); got != Healthy {
		t.Fatalf("State after one failure with Fall 2 = %v, want healthy", got)
	}
	f.step(t, time.Second)
	if got := f.state(t, e); got != Unhealthy {
		t.Errorf("State after the listener went away = %v, want unhealthy", got)
	}
	if got, want := f.rec.lines(), []string{"health " + e.Addr + " true", "health " + e.Addr + " false"}; !equalStrings(got, want) {
		t.Errorf("Listener got %q, want %q", got, want)
	}
	probes := f.rec.eventsOf(bulwark.EventProbe)
	if last := probes[len(probes)-1]; last.Err == nil || !strings.Contains(last.Err.Error(), "refused") {
		t.Errorf("last probe error = %v, want connection refused", last.Err)
	}
}

func TestCheckerHTTPBackends(t *testing.T) {
	var mu sync.Mutex
	down := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	p, err := HTTP(HTTPConfig{Path: "/healthz"})
	if err != nil {
		t.Fatal(err)
	}
	e := bulwark.Endpoint{Addr: strings.TrimPrefix(srv.URL, "http://")}
	f := newChecker(t, Config{Rise: 2, Fall: 1, Probe: p}, e)
	if got := f.state(t, e); got != Healthy {
		t.Fatalf("State = %v, want healthy", got)
	}
	mu.Lock()
	down = true
	mu.Unlock()
	f.step(t, time.Second)
	if got := f.state(t, e); got != Unhealthy {
		t.Errorf("State after a 503 = %v, want unhealthy", got)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	f.step(t, time.Second)
	if got := f.state(t, e); got != Unhealthy {
		t.Errorf("State after one success with Rise 2 = %v, want unhealthy", got)
	}
	f.step(t, time.Second)
	if got := f.state(t, e); got != Healthy {
		t.Errorf("State after two successes = %v, want healthy", got)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
