package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

func TestReplayable(t *testing.T) {
	withKey := func(r *http.Request) *http.Request { r.Header.Set("Idempotency-Key", "k1"); return r }
	noGetBody := func(r *http.Request) *http.Request { r.GetBody = nil; return r }
	req := func(method string, body string) *http.Request {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		r, err := http.NewRequest(method, "http://example.test/", rd)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	cases := []struct {
		name string
		req  *http.Request
		want bool
	}{
		{"GET", req("GET", ""), true},
		{"HEAD", req("HEAD", ""), true},
		{"PUT with body", req("PUT", "x"), true},
		{"DELETE", req("DELETE", ""), true},
		{"OPTIONS", req("OPTIONS", ""), true},
		{"POST", req("POST", "x"), false},
		{"PATCH", req("PATCH", "x"), false},
		{"POST with key", withKey(req("POST", "x")), true},
		{"POST with X-Idempotency-Key", func() *http.Request { r := req("POST", "x"); r.Header.Set("X-Idempotency-Key", "k"); return r }(), true},
		{"GET with an unrewindable body", noGetBody(req("GET", "x")), false},
		{"POST with key, unrewindable body", noGetBody(withKey(req("POST", "x"))), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Replayable(tc.req); got != tc.want {
				t.Errorf("Replayable(%s %v) = %v, want %v", tc.req.Method, tc.req.Header, got, tc.want)
			}
		})
	}
}

// script is a RoundTripper that answers from a list, recording what it saw.
type script struct {
	mu      sync.Mutex
	answers []func(*http.Request) (*http.Response, error)
	bodies  []string
	at      []time.Duration
	clk     *bulwarktest.Clock
	start   time.Time
	closed  []*trackedBody
}

type trackedBody struct {
	io.Reader
	closed bool
}

func (b *trackedBody) Close() error { b.closed = true; return nil }

func (s *script) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var body string
	if r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		body = string(b)
	}
	s.bodies = append(s.bodies, body)
	s.at = append(s.at, s.clk.Since(s.start))
	next := s.answers[0]
	if len(s.answers) > 1 {
		s.answers = s.answers[1:]
	}
	resp, err := next(r)
	if resp != nil {
		tb := &trackedBody{Reader: resp.Body}
		resp.Body = tb
		s.closed = append(s.closed, tb)
	}
	return resp, err
}

func status(code int, retryAfter string) func(*http.Request) (*http.Response, error) {
	return func(r *http.Request) (*http.Response, error) {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader(strconv.Itoa(code))), Request: r}, nil
	}
}

func fail(err error) func(*http.Request) (*http.Response, error) {
	return func(*http.Request) (*http.Response, error) { return nil, err }
}

func TestTransport(t *testing.T) {
	errConn := errors.New("connection refused")
	cases := []struct {
		name       string
		method     string
		key        string
		answers    []func(*http.Request) (*http.Response, error)
		wantStatus int // 0: an error
		wantCalls  int
		wantAt     []time.Duration
	}{
		{"success", "GET", "", []func(*http.Request) (*http.Response, error){status(200, "")}, 200, 1, []time.Duration{0}},
		{"503 with Retry-After then 200", "PUT", "",
			[]func(*http.Request) (*http.Response, error){status(503, "3"), status(200, "")}, 200, 2, []time.Duration{0, 3 * time.Second}},
		{"connection error then 200", "GET", "",
			[]func(*http.Request) (*http.Response, error){fail(errConn), status(200, "")}, 200, 2, []time.Duration{0, 100 * time.Millisecond}},
		{"exhausted returns the last response", "GET", "",
			[]func(*http.Request) (*http.Response, error){status(502, ""), status(504, ""), status(429, "1")}, 429, 3,
			[]time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond}},
		{"404 is not retried", "GET", "", []func(*http.Request) (*http.Response, error){status(404, "")}, 404, 1, []time.Duration{0}},
		{"POST is not retried", "POST", "", []func(*http.Request) (*http.Response, error){status(503, "")}, 503, 1, []time.Duration{0}},
		{"POST with Idempotency-Key is", "POST", "key-1",
			[]func(*http.Request) (*http.Response, error){status(503, ""), status(201, "")}, 201, 2, []time.Duration{0, 100 * time.Millisecond}},
		{"connection errors exhausted", "GET", "", []func(*http.Request) (*http.Response, error){fail(errConn)}, 0, 3,
			[]time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond}},
		{"Retry-After beyond the cap returns the response", "GET", "",
			[]func(*http.Request) (*http.Response, error){status(503, "3600")}, 503, 1, []time.Duration{0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := bulwarktest.NewClock(time.Time{})
			rec := newRecorder()
			s := &script{answers: tc.answers, clk: clk, start: clk.Now()}
			p := mustNew(t, Config{Clock: clk, Observer: rec, Backoff: Backoff{Base: 100 * time.Millisecond, Jitter: NoJitter}})
			client := &http.Client{Transport: &Transport{Base: s, Policy: p}}
			req, err := http.NewRequest(tc.method, "http://example.test/orders", strings.NewReader("payload"))
			if err != nil {
				t.Fatal(err)
			}
			if tc.key != "" {
				req.Header.Set("Idempotency-Key", tc.key)
			}
			var resp *http.Response
			err = drive(t, clk, rec, func() error {
				var err error
				resp, err = client.Do(req)
				return err
			})
			if tc.wantStatus == 0 {
				if err == nil || !errors.Is(err, errConn) {
					t.Errorf("Do = %v, %v, want an error wrapping %v", resp, err, errConn)
				}
			} else {
				if err != nil {
					t.Fatalf("Do = %v, want status %d", err, tc.wantStatus)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.wantStatus || string(b) != strconv.Itoa(tc.wantStatus) {
					t.Errorf("Do = %d %q, want %d", resp.StatusCode, b, tc.wantStatus)
				}
			}
			if len(s.bodies) != tc.wantCalls || fmt.Sprint(s.at) != fmt.Sprint(tc.wantAt) {
				t.Errorf("attempts at %v, want %v", s.at, tc.wantAt)
			}
			for i, b := range s.bodies {
				if b != "payload" {
					t.Errorf("attempt %d sent body %q, want %q (rewound)", i+1, b, "payload")
				}
			}
			for i, b := range s.closed {
				if !b.closed {
					t.Errorf("response body %d of %d not closed", i+1, len(s.closed))
				}
			}
		})
	}
}

func TestTransportAttemptTimeoutLeavesBodyReadable(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	var seen []context.Context
	slowThenFast := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		seen = append(seen, r.Context())
		if len(seen) == 1 {
			<-r.Context().Done()
			return nil, r.Context().Err()
		}
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("ok")), Request: r}, nil
	})
	rec := newRecorder()
	p := mustNew(t, Config{AttemptTimeout: time.Second, Clock: clk, Observer: rec, Backoff: Backoff{Base: time.Millisecond, Jitter: NoJitter}})
	tr := &Transport{Base: slowThenFast, Policy: p}
	req, _ := http.NewRequest("GET", "http://example.test/", nil)
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Errorf("RoundTrip = %v, want 200", err)
		}
		done <- resp
	}()
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second) // the first attempt times out
	e := <-rec.retries
	if !errors.Is(e.Err, ErrAttemptTimeout) {
		t.Errorf("retry cause = %v, want ErrAttemptTimeout", e.Err)
	}
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Millisecond)
	resp := <-done
	if resp == nil {
		return
	}
	clk.Advance(time.Hour) // long after the attempt timeout: the body is still readable
	if err := seen[1].Err(); err != nil {
		t.Errorf("context of the returned response ended with %v before its body was closed", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" || seen[1].Err() == nil {
		t.Errorf("body = %q, context after Close = %v; want \"ok\" and a released context", b, seen[1].Err())
	}
}

func TestTransportWithoutPolicy(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://example.test/", nil)
	if resp, err := (&Transport{}).RoundTrip(req); err == nil || resp != nil {
		t.Errorf("RoundTrip with no Policy = %v, %v, want an error", resp, err)
	}
}

func TestResponseError(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		code       int
		retryAfter string
		want       error
	}{
		{200, "", nil},
		{500, "5", nil},
		{503, "", &bulwark.StatusError{StatusCode: 503}},
		{429, "Sun, 01 Mar 2026 12:00:10 GMT", &bulwark.StatusError{StatusCode: 429, Wait: 10 * time.Second}},
		{502, "garbage", &bulwark.StatusError{StatusCode: 502}},
	}
	for _, tc := range cases {
		resp := &http.Response{StatusCode: tc.code, Header: http.Header{}}
		if tc.retryAfter != "" {
			resp.Header.Set("Retry-After", tc.retryAfter)
		}
		got := ResponseError(resp, now)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("ResponseError(%d, Retry-After %q) = %v, want %v", tc.code, tc.retryAfter, got, tc.want)
		}
	}
	var ra interface{ RetryAfter() time.Duration }
	err := fmt.Errorf("wrapped: %w", &bulwark.StatusError{StatusCode: 503, Wait: time.Second})
	if !errors.As(err, &ra) || ra.RetryAfter() != time.Second {
		t.Errorf("errors.As(%v, RetryAfter) found %v, want a 1s wait", err, ra)
	}
	if bulwark.IsPermanent(err) {
		t.Errorf("IsPermanent(%v) = true, want false", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// With a Hedge as its Policy, the Transport runs attempts at once; the
// winner's body stays readable though the Hedge cancels its attempt's
// context when it returns.
func TestTransportWithHedge(t *testing.T) {
	noLeak(t)
	clk := bulwarktest.NewClock(time.Time{})
	h := mustHedge(t, HedgeConfig{Delay: time.Second, Clock: clk})
	var (
		mu   sync.Mutex
		ctxs []context.Context
	)
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		ctxs = append(ctxs, r.Context())
		n := len(ctxs)
		mu.Unlock()
		if n == 1 { // the slow one: canceled when the hedge wins
			<-r.Context().Done()
			return nil, r.Context().Err()
		}
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("fast")), Request: r}, nil
	})
	go func() {
		_ = clk.BlockUntil(context.Background(), 1)
		clk.Advance(time.Second)
	}()
	req, _ := http.NewRequest("GET", "http://example.test/", nil)
	resp, err := (&Transport{Base: base, Policy: h}).RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip = %v, want the hedge's 200", err)
	}
	if err := ctxs[1].Err(); err != nil {
		t.Errorf("the winner's request context ended (%v) before its body was read", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "fast" || ctxs[1].Err() == nil {
		t.Errorf("body = %q, context after Close = %v; want \"fast\" and a released context", b, ctxs[1].Err())
	}
}

// Any Policy will do: here one that is not a *Policy, and that runs the
// attempt once.
func TestTransportAcceptsAnyPolicy(t *testing.T) {
	var ran int
	once := bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		ran++
		return op(ctx)
	})
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 503, Body: io.NopCloser(strings.NewReader("busy")), Request: r}, nil
	})
	req, _ := http.NewRequest("GET", "http://example.test/", nil)
	resp, err := (&Transport{Base: base, Policy: once}).RoundTrip(req)
	if err != nil || resp.StatusCode != 503 || ran != 1 {
		t.Fatalf("RoundTrip = %v, %v after %d runs, want the 503 after 1", resp, err, ran)
	}
	resp.Body.Close()
}
