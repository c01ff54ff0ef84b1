// Package httpx holds the HTTP rules that retry.Transport, balancer.Transport
// and breaker.Transport share, so that they agree: which statuses are worth a
// retry, how a Retry-After header reads, and which requests may be sent twice.
package httpx

import (
	"math"
	"net/http"
	"time"

	"github.com/bulwark-go/bulwark"
)

// RetryableStatus reports whether a status is worth a retry: 429 Too Many
// Requests, 502 Bad Gateway, 503 Service Unavailable, 504 Gateway Timeout.
func RetryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// StatusError returns a *bulwark.StatusError for a response whose status is
// worth a retry, with its Retry-After parsed against now and ep as the
// endpoint, and nil for any other response. It neither reads nor closes the
// body.
func StatusError(resp *http.Response, now time.Time, ep bulwark.Endpoint) error {
	if !RetryableStatus(resp.StatusCode) {
		return nil
	}
	wait, _ := ParseRetryAfter(resp.Header.Get("Retry-After"), now)
	return &bulwark.StatusError{StatusCode: resp.StatusCode, Wait: wait, Endpoint: ep}
}

// maxSeconds is the largest delay-seconds that fits a time.Duration.
const maxSeconds = math.MaxInt64 / int64(time.Second)

// ParseRetryAfter parses a Retry-After value (RFC 9110, section 10.2.3),
// after trimming spaces and tabs: either delay-seconds, one or more decimal
// digits, or an HTTP-date in any of the three formats http.ParseTime reads,
// which becomes the wait from now (zero for a date in the past). It reports
// false, with a zero wait, for an empty or malformed value, a sign or a
// fraction included.
//
// A delay-seconds too large for a time.Duration (above about 292 years)
// saturates at the largest Duration, and so does a date that far ahead: a
// server that asks for a very long wait is not asked again soon. A retry
// policy then gives up (its cap on Retry-After), where ignoring the value
// would retry at once.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = trimOWS(v)
	if v == "" {
		return 0, false
	}
	if isDigit(v[0]) {
		for i := 1; i < len(v); i++ {
			if !isDigit(v[i]) {
				return 0, false
			}
		}
		var secs int64
		for i := 0; i < len(v); i++ {
			secs = secs*10 + int64(v[i]-'0')
			if secs > maxSeconds {
				return math.MaxInt64, true
			}
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// trimOWS removes the optional white space (spaces and tabs) of RFC 9110
// around a field value.
func trimOWS(v string) string {
	for v != "" && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for v != "" && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// Replayable reports whether req may be sent again after a failure: its
// method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, as RFC 9110
// section 9.2.2 defines; an empty method is GET) or it carries an
// Idempotency-Key (or X-Idempotency-Key) header, and its body can be had
// again (see Rewindable).
func Replayable(req *http.Request) bool {
	if !Rewindable(req) {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// Rewindable reports whether req's body can be sent again: it has none, or a
// GetBody.
func Rewindable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}
