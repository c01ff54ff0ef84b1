package httpx

import (
	"io"
	"math"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
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
		{"empty method", req("", ""), true},
		{"HEAD", req("HEAD", ""), true},
		{"PUT with body", req("PUT", "x"), true},
		{"DELETE", req("DELETE", ""), true},
		{"OPTIONS", req("OPTIONS", ""), true},
		{"TRACE", req("TRACE", ""), true},
		{"POST", req("POST", "x"), false},
		{"POST without body", req("POST", ""), false},
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

func TestRetryableStatus(t *testing.T) {
	for code := 100; code < 600; code++ {
		want := code == 429 || code == 502 || code == 503 || code == 504
		if got := RetryableStatus(code); got != want {
			t.Errorf("RetryableStatus(%d) = %v, want %v", code, got, want)
		}
	}
}

func TestStatusError(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ep := bulwark.Endpoint{Addr: "10.0.0.1:80"}
	resp := func(code int, ra string) *http.Response {
		h := http.Header{}
		if ra != "" {
			h.Set("Retry-After", ra)
		}
		return &http.Response{StatusCode: code, Header: h}
	}
	if err := StatusError(resp(200, "5"), now, ep); err != nil {
		t.Errorf("StatusError(200) = %v, want nil", err)
	}
	if err := StatusError(resp(500, ""), now, ep); err != nil {
		t.Errorf("StatusError(500) = %v, want nil: a 500 is not worth a retry", err)
	}
	err := StatusError(resp(503, "2"), now, ep)
	se, ok := err.(*bulwark.StatusError)
	if !ok || se.StatusCode != 503 || se.Wait != 2*time.Second || se.Endpoint != ep || se.RetryAfter() != 2*time.Second {
		t.Fatalf("StatusError(503, Retry-After: 2) = %#v, want a *bulwark.StatusError with the code, 2s and the endpoint", err)
	}
	if got, want := err.Error(), "HTTP 503 Service Unavailable from 10.0.0.1:80 (retry after 2s)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	err = StatusError(resp(429, "soon"), now, bulwark.Endpoint{})
	if se, ok := err.(*bulwark.StatusError); !ok || se.Wait != 0 || err.Error() != "HTTP 429 Too Many Requests" {
		t.Errorf("StatusError(429, Retry-After: soon) = %v, want a 429 without a wait", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"120", 2 * time.Minute, true},
		{"0", 0, true},
		{"007", 7 * time.Second, true},
		{" 7 ", 7 * time.Second, true},
		{"\t7\t", 7 * time.Second, true},
		{"Sun, 01 Mar 2026 12:00:30 GMT", 30 * time.Second, true}, // IMF-fixdate
		{"Sunday, 01-Mar-26 12:01:00 GMT", time.Minute, true},     // RFC 850
		{"Sun Mar  1 12:00:05 2026", 5 * time.Second, true},       // asctime
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0, true},                // in the past
		{"9223372036", 9223372036 * time.Second, true},            // the largest that fits
		{"9223372037", math.MaxInt64, true},                       // saturates
		{"4294967296", 4294967296 * time.Second, true},            // above 32 bits: not ignored
		{"99999999999999999999", math.MaxInt64, true},             // saturates
		{"Fri, 01 Mar 2420 12:00:00 GMT", math.MaxInt64, true},    // a date beyond a Duration saturates too
		{"", 0, false},
		{"  ", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"5s", 0, false},
		{"+5", 0, false},
		{"99999999999999999999x", 0, false},
		{"1 2", 0, false},
		{"tomorrow", 0, false},
	}
	for _, tc := range cases {
		got, ok := ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("ParseRetryAfter(%q) = %v, %v, want %v, %v", tc.in, got, ok, tc.want, tc.wantOK)
		}
	}
}

// refSeconds is the reference for delay-seconds: the value of a string of
// ASCII digits, saturated at the largest Duration.
func refSeconds(digits string) time.Duration {
	n, _ := new(big.Int).SetString(digits, 10)
	n.Mul(n, big.NewInt(int64(time.Second)))
	if !n.IsInt64() {
		return math.MaxInt64
	}
	return time.Duration(n.Int64())
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "0", "Sun, 01 Mar 2026 12:00:30 GMT", "Sunday, 01-Mar-26 12:01:00 GMT",
		"Sun Mar  1 12:00:05 2026", "99999999999999999999", "9223372037", "", "-1", "1e3", " 3 ", "\t4", "+5"} {
		f.Add(s)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := ParseRetryAfter(v, now)
		if d < 0 || (!ok && d != 0) {
			t.Fatalf("ParseRetryAfter(%q) = %v, %v, want a non-negative wait, zero when not ok", v, d, ok)
		}
		trimmed := strings.Trim(v, " \t")
		digits := trimmed != "" && strings.Trim(trimmed, "0123456789") == ""
		if digits {
			if want := refSeconds(trimmed); !ok || d != want {
				t.Fatalf("ParseRetryAfter(%q) = %v, %v, want %v, true", v, d, ok, want)
			}
			return
		}
		if _, err := http.ParseTime(trimmed); (err == nil) != ok {
			t.Fatalf("ParseRetryAfter(%q) ok = %v, but http.ParseTime says %v", v, ok, err)
		}
		if ok && d > 0 && d < 1<<62 {
			// A date must give the same wait as its own IMF-fixdate.
			back, ok2 := ParseRetryAfter(now.Add(d).UTC().Format(http.TimeFormat), now)
			if !ok2 || back != d.Truncate(time.Second) {
				t.Fatalf("ParseRetryAfter(%q) = %v, but its IMF-fixdate gives %v, %v", v, d, back, ok2)
			}
		}
	})
}
