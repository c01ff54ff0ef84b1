package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/httpx"
)

var _ http.RoundTripper = (*Transport)(nil)

// Replayable reports whether req may be sent again after a failure: its method
// is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, as RFC 9110 section
// 9.2.2 defines) or it carries an Idempotency-Key (or X-Idempotency-Key)
// header, and its body, if any, can be rewound with GetBody. It is the rule
// of Transport, and of balancer.Transport too.
func Replayable(req *http.Request) bool { return httpx.Replayable(req) }

// ResponseError returns a *bulwark.StatusError for a response whose status is
// worth a retry (429 Too Many Requests, 502 Bad Gateway, 503 Service
// Unavailable, 504 Gateway Timeout), with its Retry-After header parsed
// against now, and nil for any other response. It neither reads nor closes
// the body. A client that makes its own requests returns it from the
// operation of a Policy, which then honours the Retry-After.
//
// Retry-After is either delay-seconds or an HTTP-date (RFC 9110, section
// 10.2.3); a malformed value counts as none, and a value too large for a
// time.Duration counts as the largest one, so a Policy gives up
// (ErrRetryAfter) rather than retry at once.
func ResponseError(resp *http.Response, now time.Time) error {
	return httpx.StatusError(resp, now, bulwark.Endpoint{})
}

// errNoPolicy is returned by a Transport whose Policy is nil.
var errNoPolicy = errors.New("retry: Transport has no Policy")

// maxDrain bounds the bytes read from a discarded response body so that its
// connection can be reused.
const maxDrain = 64 << 10

// Transport is an http.RoundTripper that retries replayable requests (see
// Replayable) under Policy, such as a *Policy, or a bulwark.Compose of one
// with a Hedge or a breaker. Each attempt sends the request through Base,
// with a body rewound by GetBody after the first. An attempt fails with
// Base's error, or with a *bulwark.StatusError for a response whose status is
// worth a retry (see ResponseError), which a Policy honours the Retry-After
// of; the responses the Transport does not return are closed. When the
// Policy gives up and some attempt got a response, RoundTrip returns the
// latest one, with a nil error, as a plain RoundTripper would; otherwise the
// Policy's error.
//
// A request that is not replayable is sent once, through Base alone: a
// breaker that must see every request belongs in Base (breaker.Transport),
// not in the Policy. A *Policy's AttemptTimeout, if set, bounds each attempt
// up to the response headers; the body of the response returned stays
// readable under the request's own context, whatever the Policy does with the
// attempt's context once the attempt is over (a Hedge cancels its losers and
// winner alike).
//
// A Transport is safe for concurrent use by multiple goroutines if Base is;
// its fields must not change once it is in use.
type Transport struct {
	// Base sends each attempt. If nil, http.DefaultTransport.
	Base http.RoundTripper
	// Policy decides retries. It must not be nil; RoundTrip returns an
	// error without sending anything if it is.
	Policy bulwark.Policy
}

// RoundTrip sends req, retrying as Transport describes. Its error, when the
// Policy gave up without a response, is the Policy's: a *GiveUpError for a
// *Policy or a Hedge.
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
	if !httpx.Replayable(req) {
		return base.RoundTrip(req)
	}
	a := &attempts{req: req, base: base, clk: bulwark.WallClock()}
	var err error
	if rp, ok := p.(*Policy); ok {
		// The Transport applies the attempt timeout itself, up to the
		// response headers only.
		a.clk, a.timeout = rp.clk, rp.attemptTimeout
		err = rp.do(req.Context(), a.run)
	} else {
		err = p.Do(req.Context(), a.run)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.finished = true // a straggling hedged attempt must not touch a.last now
	switch {
	case a.n == 0:
		if req.Body != nil {
			req.Body.Close() // the Policy ran no attempt: the body is still ours to close
		}
	case a.won:
		return a.last, nil
	case a.last != nil && req.Context().Err() == nil:
		return a.last, nil
	}
	if a.last != nil {
		drainClose(a.last.Body)
	}
	if err == nil {
		err = errors.New("retry: Policy returned no error but ran no attempt")
	}
	return nil, err
}

// attempts is the state of one RoundTrip. Attempts normally run one after
// another; the mutex keeps a hedging Policy, which overlaps them, correct too.
type attempts struct {
	req     *http.Request
	base    http.RoundTripper
	clk     bulwark.Clock
	timeout time.Duration // the attempt timeout, up to the headers; 0 for none

	mu       sync.Mutex     // guards the fields below
	n        int            // attempts started
	last     *http.Response // the response to return: a success, or the latest retryable status; body open
	won      bool           // last is a success
	finished bool           // RoundTrip has taken last
}

func (a *attempts) run(ctx context.Context) error {
	a.mu.Lock()
	a.n++
	rewind := a.n > 1
	a.mu.Unlock()
	resp, err := a.send(ctx, rewind)
	if err != nil {
		return err
	}
	serr := httpx.StatusError(resp, a.clk.Now(), bulwark.Endpoint{})
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.won || a.finished {
		drainClose(resp.Body) // a hedged attempt already succeeded, or RoundTrip returned
		return serr
	}
	if a.last != nil {
		drainClose(a.last.Body)
	}
	a.last, a.won = resp, serr == nil
	return serr
}

// send makes one attempt. When ctx is the request's own and no attempt
// timeout applies, that is all. Otherwise the attempt is sent under the
// request's own context, so that the body of the response outlives the
// attempt's ctx, and follows ctx only until the headers arrive, bounded by
// the attempt timeout; closing the body releases it.
func (a *attempts) send(ctx context.Context, rewind bool) (*http.Response, error) {
	req := a.req
	out := req
	if rewind && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return nil, bulwark.Permanent(fmt.Errorf("retry: rewinding the body: %w", err))
		}
		out = req.Clone(req.Context())
		out.Body = body
	}
	if ctx == req.Context() && a.timeout == 0 {
		return a.base.RoundTrip(out)
	}
	sendCtx, cancel := context.WithCancelCause(req.Context())
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	var timer bulwark.Timer
	if a.timeout > 0 {
		timer = a.clk.AfterFunc(a.timeout, func() { cancel(context.DeadlineExceeded) })
	}
	resp, err := a.base.RoundTrip(out.WithContext(sendCtx))
	followed := stop()                                            // false: ctx ended during the attempt
	timedOut := timer != nil && !timer.Stop() && ctx.Err() == nil // the attempt overran
	switch {
	case timedOut:
		if resp != nil {
			drainClose(resp.Body)
		}
		cancel(nil)
		if err == nil {
			err = context.DeadlineExceeded
		}
		return nil, &timeoutError{err: err}
	case err == nil && !followed:
		// The attempt was called off while its headers arrived.
		drainClose(resp.Body)
		cancel(nil)
		return nil, ctx.Err()
	case err != nil:
		cancel(nil)
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// (An upgraded connection's body is an io.ReadWriteCloser that must
		// stay one; its context is released when the request's ends.)
		resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	}
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
