package breaker_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/retry"
)

// upstream is a RoundTripper that answers each host with a status, counting
// the requests it gets.
type upstream struct {
	mu     sync.Mutex
	status map[string]int
	hits   map[string]int
}

func (u *upstream) RoundTrip(r *http.Request) (*http.Response, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.hits[r.URL.Host]++
	code := u.status[r.URL.Host]
	if code == 0 {
		return nil, errors.New("connection refused")
	}
	return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader("x")), Request: r}, nil
}

type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

// Each host has its own breaker; an open one fails the request at once, with
// its RetryAfter, without sending it and with the body closed. 5xx and
// transport errors are failures, other answers successes.
func TestTransport(t *testing.T) {
	g, clk := newGroup(t, breaker.GroupConfig{Breaker: breaker.Config{ConsecutiveFailures: 2, OpenDuration: 10 * time.Second}})
	up := &upstream{status: map[string]int{"bad:80": 500, "ok:80": 200, "busy:80": 429}, hits: map[string]int{}}
	tr := &breaker.Transport{Group: g, Base: up}
	get := func(host string) (*http.Response, error) {
		body := &closeCounter{Reader: strings.NewReader("payload")}
		req, _ := http.NewRequest("POST", "http://"+host+"/", body)
		req.Body = body
		resp, err := tr.RoundTrip(req)
		if resp != nil {
			resp.Body.Close()
		}
		if errors.Is(err, breaker.ErrOpen) && body.closed == 0 {
			t.Errorf("RoundTrip(%s) = %v and left the request body open", host, err)
		}
		return resp, err
	}
	for range 3 {
		if _, err := get("ok:80"); err != nil {
			t.Fatalf("RoundTrip(ok) = %v", err)
		}
		if _, err := get("busy:80"); err != nil {
			t.Fatalf("RoundTrip(busy) = %v: a 429 is not a failure of the host", err)
		}
	}
	for range 2 {
		if resp, err := get("bad:80"); err != nil || resp.StatusCode != 500 {
			t.Fatalf("RoundTrip(bad) = %v, %v, want the 500 itself", resp, err)
		}
	}
	clk.Advance(4 * time.Second)
	_, err := get("bad:80")
	var oe *breaker.OpenError
	if !errors.As(err, &oe) || oe.RetryAfter() != 6*time.Second || oe.Name != "bad:80" {
		t.Fatalf("RoundTrip(bad) after two 500s = %v, want an *OpenError for bad:80 with RetryAfter 6s", err)
	}
	if up.hits["bad:80"] != 2 {
		t.Errorf("bad:80 got %d requests, want 2: the open breaker sent none", up.hits["bad:80"])
	}
	if _, err := get("ok:80"); err != nil {
		t.Errorf("RoundTrip(ok) = %v while bad:80 is open, want nil: hosts do not share a breaker", err)
	}
	if _, err := get("down:80"); err == nil {
		t.Fatal("RoundTrip(down) = nil error, want the transport's")
	}
	if _, err := get("down:80"); errors.Is(err, breaker.ErrOpen) {
		t.Fatal("RoundTrip(down) refused after one failure, want a second try")
	}
	if _, err := get("down:80"); !errors.Is(err, breaker.ErrOpen) {
		t.Errorf("RoundTrip(down) after two transport errors = %v, want ErrOpen", err)
	}
}

func TestTransportKey(t *testing.T) {
	g, _ := newGroup(t, breaker.GroupConfig{Breaker: breaker.Config{ConsecutiveFailures: 1}})
	up := &upstream{status: map[string]int{"a:80": 503, "b:80": 200}, hits: map[string]int{}}
	tr := &breaker.Transport{Group: g, Base: up, Key: func(*http.Request) string { return "shared" }}
	for _, host := range []string{"a:80", "b:80"} {
		req, _ := http.NewRequest("GET", "http://"+host+"/", nil)
		resp, err := tr.RoundTrip(req)
		if host == "b:80" {
			if !errors.Is(err, breaker.ErrOpen) {
				t.Errorf("RoundTrip(b) after a's 503 under one key = %v, %v, want ErrOpen", resp, err)
			}
			continue
		}
		resp.Body.Close()
	}
	if g.Peek("shared") == nil || g.Len() != 1 {
		t.Errorf("group has %d breakers, want the one of key \"shared\"", g.Len())
	}
}

func TestTransportWithoutGroup(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://example.test/", nil)
	if resp, err := (&breaker.Transport{}).RoundTrip(req); err == nil || resp != nil {
		t.Errorf("RoundTrip with no Group = %v, %v, want an error", resp, err)
	}
}

// A retry.Transport over a breaker.Transport: retries while the host fails,
// then, once its breaker is open, fails at once without waiting for it.
func TestRetryOverTransportFailsFastWhenOpen(t *testing.T) {
	g, clk := newGroup(t, breaker.GroupConfig{Breaker: breaker.Config{ConsecutiveFailures: 2, OpenDuration: 10 * time.Second}})
	up := &upstream{status: map[string]int{"api:80": 503}, hits: map[string]int{}}
	p, err := retry.New(retry.Config{MaxAttempts: 5, Clock: clk, Delay: func(int, time.Duration, error) time.Duration { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &retry.Transport{Base: &breaker.Transport{Group: g, Base: up}, Policy: p}}
	resp, err := client.Get("http://api:80/")
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("Get = %v, %v, want the last 503: the breaker opened after two", resp, err)
	}
	resp.Body.Close()
	if up.hits["api:80"] != 2 {
		t.Errorf("api got %d requests, want 2", up.hits["api:80"])
	}
	start := clk.Now()
	_, err = client.Get("http://api:80/")
	if !errors.Is(err, breaker.ErrOpen) || clk.Since(start) != 0 || clk.Timers() != 0 {
		t.Errorf("Get with the breaker open = %v after %v, want ErrOpen at once", err, clk.Since(start))
	}
}
