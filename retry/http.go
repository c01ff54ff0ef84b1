package retry

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bulwark-go/bulwark"
)

var _ http.RoundTripper = (*Transport)(nil)

// Replayable reports whether req may be sent again after a failure: its method
// is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, as RFC 9110 section
// 9.2.2 defines) or it carries an Idempotency-Key (or X-Idempotency-Key)
// header, and its body, if any, can be rewound with GetBody.
func Replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// RetryableStatus reports whether an HTTP status code is worth a retry: 429
// Too Many Requests, 502 Bad Gateway, 503 Service Unavailable and 504 Gateway
// Timeout.
func RetryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// ParseRetryAfter parses a Retry-After header value (RFC 9110 section 10.2.3):
// either delay-seconds, a non-negative decimal integer, or an HTTP-date, which
// is turned into a wait from now (zero for a date in the past). It reports
// false for an empty or malformed value. Huge delay-seconds saturate at the
// largest time.Duration.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		for i := 0; i < len(v); i++ {
			if v[i] < '0' || v[i] > '9' {
				return 0, false
			}
		}
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil || secs > math.MaxInt64/uint64(time.Second) {
			return math.MaxInt64, true // only a range error is possible here
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// StatusError is the error for an HTTP response whose status is worth a retry
// (see RetryableStatus). Its RetryAfter method returns the wait the server
// asked for, so a Policy never retries before it.
type StatusError struct {
	StatusCode int
	// Wait is the server's Retry-After, zero if it sent none.
	Wait time.Duration
}

// Error returns "retry: HTTP 503 Service Unavailable", with the wait asked
// for when there is one.
func (e *StatusError) Error() string {
	s := "retry: HTTP " + strconv.Itoa(e.StatusCode) + " " + http.StatusText(e.StatusCode)
	if e.Wait > 0 {
		s += " (retry after " + e.Wait.String() + ")"
	}
	return s
}

// RetryAfter returns Wait.
func (e *StatusError) RetryAfter() time.Duration { return e.Wait }

// ResponseError returns a *StatusError for a response whose status is worth a
// retry, with its Retry-After header parsed against now, and nil for any
// other response. It neither reads nor closes the body.
func ResponseError(resp *http.Response, now time.Time) error {
	if !RetryableStatus(resp.StatusCode) {
		return nil
	}
	wait, _ := ParseRetryAfter(resp.Header.Get("Retry-After"), now)
	return &StatusError{StatusCode: resp.StatusCode, Wait: wait}
}

// errNoPolicy is returned by a Transport whose Policy is nil.
var errNoPolicy = errors.New("retry: Transport has no Policy")

// maxDrain bounds the bytes read from a discarded response body so that its
// connection can be reused.
const maxDrain = 64 << 10

// Transport is an http.RoundTripper that retries replayable requests (see
// Replayable) under Policy: it sends each retry with a body rewound by
// GetBody, retries transport errors and responses with a RetryableStatus,
// never before their Retry-After, closes the responses it discards, and when
// the Policy gives up on a retryable status returns that last response, with
// a nil error, as a plain RoundTripper would. A request that is not
// replayable is sent once. The Policy's AttemptTimeout, if set, bounds each
// attempt up to the response headers; the body of the response returned
// stays readable under the request's own context.
//
// A Transport is safe for concurrent use by multiple goroutines if Base is;
// its fields must not change once it is in use.
type Transport struct {
	// Base sends each attempt. If nil, http.DefaultTransport.
	Base http.RoundTripper
	// Policy decides retries. It must not be nil; RoundTrip returns an
	// error without sending anything if it is.
	Policy *Policy
}

// RoundTrip sends req, retrying as Transport describes. Its error, when the
// Policy gave up on a transport error, is a *GiveUpError.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	p := t.Policy
	if p == nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errNoPolicy
	}
	if !Replayable(req) {
		return base.RoundTrip(req)
	}
	var last *http.Response // the response of the last attempt, if kept
	discard := func() {
		if last != nil {
			drainClose(last.Body)
			last = nil
		}
	}
	err := p.do(req.Context(), func(ctx context.Context) error {
		discard()
		r := req.WithContext(ctx)
		if Attempt(ctx) > 1 && req.Body != nil && req.Body != http.NoBody {
			body, err := req.GetBody()
			if err != nil {
				return bulwark.Permanent(err)
			}
			r.Body = body
		}
		resp, err := t.send(ctx, base, r, p)
		if err != nil {
			return err
		}
		last = resp
		return ResponseError(resp, p.clk.Now())
	})
	if err == nil {
		return last, nil
	}
	var se *StatusError
	if last != nil && errors.As(err, &se) && req.Context().Err() == nil {
		return last, nil
	}
	discard()
	return nil, err
}

// send makes one attempt, bounded by the policy's attempt timeout until the
// response headers arrive.
func (t *Transport) send(ctx context.Context, base http.RoundTripper, r *http.Request, p *Policy) (*http.Response, error) {
	if p.attemptTimeout <= 0 {
		return base.RoundTrip(r)
	}
	actx, cancel := context.WithCancelCause(ctx)
	timer := p.clk.AfterFunc(p.attemptTimeout, func() { cancel(context.DeadlineExceeded) })
	resp, err := base.RoundTrip(r.WithContext(actx))
	if !timer.Stop() && ctx.Err() == nil { // fired: the attempt overran
		if resp != nil {
			drainClose(resp.Body)
		}
		cancel(nil)
		if err == nil {
			err = context.DeadlineExceeded
		}
		return nil, &timeoutError{err: err}
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody releases the attempt's context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

func drainClose(body io.ReadCloser) {
	if body == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, body, maxDrain)
	_ = body.Close()
}
