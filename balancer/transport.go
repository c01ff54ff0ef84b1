package balancer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/httpx"
)

// Transport is an http.RoundTripper that sends each request to an endpoint
// picked by Balancer, rewriting the URL's host (and, when it is empty, the
// scheme to "http"); the request's Host header is kept as it was. It reports
// every attempt's outcome through Pick.Done: a transport error, or a 5xx
// status, is a failure, and a connect error or 502, 503 or 504 a gateway
// failure.
//
// With a Policy, such as a *retry.Policy, a replayable request whose attempt
// fails is tried again on a different endpoint where one exists. A request is
// replayable when its method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT,
// DELETE) or it carries an Idempotency-Key (or X-Idempotency-Key) header, and
// its body can be had again: none, or a GetBody (the rule of retry.Replayable).
// An attempt fails with a transport error, or with a *bulwark.StatusError for
// 502, 503, 504 and 429, which names the endpoint and, when the server sent
// Retry-After, has a RetryAfter method that retry honours (a value too large
// for a time.Duration is the largest one). A request that is not replayable is tried again
// only when its attempt failed to connect, since nothing was sent (as Envoy's
// connect-failure retry), and its body, if any, has a GetBody. Other attempts
// are not retried: their errors are marked bulwark.Permanent. When retries end and some attempt got a
// response, RoundTrip returns the latest one and no error, as a proxy must.
//
// With per-endpoint Limiters (Config.Limiter), a request goes to an
// endpoint with room. When every endpoint that could take an attempt is at
// its limit, the attempt fails at once with the Balancer's ErrUnavailable,
// which wraps the limiter's refusal and its RetryAfter, marked
// bulwark.Permanent: it is not retried, since the limit is there to refuse
// the excess rather than queue it. RoundTrip then returns that error (in the
// Policy's), or the response of an earlier attempt if there was one. Each
// attempt tells its endpoint's limiter how it went through Pick.Done: a 503
// or 429, or a timeout, is a sign of overload (Result.Overload).
//
// A Transport is safe for concurrent use by multiple goroutines, and must not
// be changed once in use.
type Transport struct {
	// Balancer picks the endpoints. It must not be nil.
	Balancer *Balancer
	// Base sends each attempt. If nil, http.DefaultTransport.
	Base http.RoundTripper
	// Policy runs the attempts, retrying them as it sees fit. If nil, one
	// attempt.
	Policy bulwark.Policy
	// Key returns the request's key for ConsistentHash, such as a header or
	// a customer id. If nil, "".
	Key func(*http.Request) string
	// RetryAfterPerEndpoint makes a server's Retry-After delay only a retry
	// that goes back to the endpoint that sent it: the wait speaks for that
	// server, not for the others. While an endpoint that the request has
	// not tried is eligible, the error of an attempt answered with
	// Retry-After asks the Policy for no wait (its RetryAfter method returns
	// zero, and it wraps the *bulwark.StatusError, whose Wait is the
	// server's), and the retry goes to that endpoint after the Policy's own
	// backoff, as Envoy retries other hosts. Such retries spend from the
	// Policy's retry budget like any other, which bounds the extra load on a
	// fleet that sheds. If false, every Retry-After delays the next attempt,
	// wherever it goes.
	RetryAfterPerEndpoint bool
}

var _ http.RoundTripper = (*Transport)(nil)

// RoundTrip sends req to a picked endpoint, retrying under Policy as the type
// documentation says. It returns the Balancer's ErrNoEndpoints or
// ErrUnavailable when no endpoint can take the request (within the Policy's
// error, if any), the last attempt's error when retries end on one, or the
// Policy's error.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.Balancer == nil {
		closeBody(req)
		return nil, errors.New("balancer: Transport with a nil Balancer")
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	key := ""
	if t.Key != nil {
		key = t.Key(req)
	}
	a := &attempts{t: t, req: req, base: base, key: key, replay: httpx.Replayable(req)}
	if t.Policy == nil {
		resp, err := a.attempt(req.Context(), false)
		if resp != nil {
			return resp, nil
		}
		return nil, err
	}
	err := t.Policy.Do(req.Context(), a.run)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.finished = true // a straggling hedged attempt must not touch a.last now
	if a.n == 0 {
		closeBody(req) // the Policy ran no attempt: the body is still ours to close
	}
	switch {
	case a.won:
		return a.last, nil
	case a.last != nil && req.Context().Err() == nil:
		// Retries ended: a proxy passes on the last response it got, even
		// when a later attempt failed without one.
		return a.last, nil
	case err == nil:
		return nil, errors.New("balancer: Policy returned no error but ran no attempt")
	}
	if a.last != nil {
		discard(a.last)
	}
	return nil, err
}

// attempts is the state of one RoundTrip under a Policy. Attempts normally
// run one after another; the mutex keeps a hedging Policy, which overlaps
// them, correct too.
type attempts struct {
	t      *Transport
	req    *http.Request
	base   http.RoundTripper
	key    string
	replay bool

	mu    sync.Mutex     // guards the fields below
	n     int            // attempts started
	tried Tried          // endpoints tried
	last  *http.Response // the response to return: a success, or the latest retryable status; body open
	won   bool           // last is a success
	// unsent is set when the last attempt of a request that cannot be
	// replayed failed to connect: it never left, so one more attempt may.
	unsent bool
	// finished is set when RoundTrip has taken last: a hedged attempt that
	// ends later discards its own response and leaves last alone.
	finished bool
}

func (a *attempts) run(ctx context.Context) error {
	a.mu.Lock()
	if a.n > 0 && !a.replay && !a.unsent {
		a.mu.Unlock()
		return bulwark.Permanent(errors.New("balancer: request cannot be replayed"))
	}
	a.n++
	a.unsent = false
	rewind := a.n > 1
	a.mu.Unlock()

	resp, err := a.attempt(ctx, rewind)

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.t.RetryAfterPerEndpoint && a.replay {
		if se, ok := err.(*bulwark.StatusError); ok && se.Wait > 0 && a.t.Balancer.hasUntried(&a.tried) {
			err = elsewhereError{se}
		}
	}
	if resp != nil {
		if a.won || a.finished {
			discard(resp) // a hedged attempt already succeeded, or RoundTrip returned
		} else {
			if a.last != nil {
				discard(a.last)
			}
			a.last, a.won = resp, err == nil
		}
	}
	if err != nil && !a.replay {
		if resp == nil && isConnectError(err) && rewindable(a.req) {
			// The connection was never made, so nothing was sent: any
			// request may go to another endpoint, as Envoy's
			// connect-failure retry does.
			a.unsent = true
			return err
		}
		return bulwark.Permanent(err)
	}
	return err
}

// rewindable reports whether req's body can be sent again: it has none, or
// a GetBody.
func rewindable(req *http.Request) bool { return httpx.Rewindable(req) }

// attempt sends one attempt of the request to an endpoint not tried yet,
// where one is eligible. For a retryable status it returns the response and
// a *bulwark.StatusError; the response is nil otherwise when err is not.
func (a *attempts) attempt(ctx context.Context, rewind bool) (*http.Response, error) {
	t, req := a.t, a.req
	a.mu.Lock()
	pk, err := t.Balancer.Pick(a.key, &a.tried) // adds to tried before sending: a hedged attempt avoids it too
	a.mu.Unlock()
	if err != nil {
		if !rewind {
			closeBody(req)
		}
		if errors.Is(err, ErrNoEndpoints) || limitedError(err) {
			err = bulwark.Permanent(err)
		}
		return nil, err
	}
	// The attempt's ctx ends when the Policy returns: a hedge cancels its
	// attempts then, the winner's too. The body of the response handed back
	// must outlive it, so the attempt is sent under the request's own
	// context, and follows the attempt's ctx only until the headers arrive;
	// closing the body releases it. When the attempt runs under the
	// request's own context, as under a plain retry.Policy, there is nothing
	// to detach.
	sendCtx, cancelSend := ctx, context.CancelFunc(nil)
	stop := func() bool { return true }
	if ctx != req.Context() {
		sendCtx, cancelSend = context.WithCancel(req.Context())
		stop = context.AfterFunc(ctx, cancelSend)
	}
	out := req.Clone(sendCtx)
	u := *req.URL
	out.URL = &u
	out.URL.Host = pk.e.ep.Addr
	if out.URL.Scheme == "" {
		out.URL.Scheme = "http"
	}
	if rewind && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			if cancelSend != nil {
				stop()
				cancelSend()
			}
			pk.Done(Result{Err: context.Canceled}) // not the endpoint's fault
			return nil, bulwark.Permanent(fmt.Errorf("balancer: rewinding the body: %w", err))
		}
		out.Body = body
	}
	clk := t.Balancer.clk
	start := clk.Now()
	resp, err := a.base.RoundTrip(out)
	latency := clk.Since(start)
	if !stop() && err == nil {
		// The attempt was called off while its headers arrived.
		discard(resp)
		resp, err = nil, ctx.Err()
	}
	if err != nil {
		if cancelSend != nil {
			cancelSend()
		}
		pk.Done(Result{Err: err, Latency: latency, Gateway: isConnectError(err), Overload: isTimeout(err)})
		return nil, fmt.Errorf("balancer: %s: %w", pk.e.ep.Addr, err)
	}
	o := Result{Latency: latency}
	switch code := resp.StatusCode; {
	case code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		o.Err, o.Gateway = errStatus, true
		o.Overload = code == http.StatusServiceUnavailable
	case code >= 500:
		o.Err = errStatus
	case code == http.StatusTooManyRequests:
		o.Overload = true // not a failure of the endpoint, but a sign of load
	}
	pk.Done(o)
	if cancelSend != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		// (An upgraded connection's body is an io.ReadWriteCloser that must
		// stay one; its context is released when the request's ends.)
		resp.Body = &releasingBody{ReadCloser: resp.Body, release: cancelSend}
	}
	if err := httpx.StatusError(resp, clk.Now(), pk.e.ep); err != nil {
		return resp, err
	}
	return resp, nil
}

var errStatus = errors.New("balancer: server error status")

// elsewhereError is the error of an attempt whose server asked for a wait
// (Retry-After) when the retry can go to an endpoint not tried yet, with
// Transport.RetryAfterPerEndpoint: it asks the Policy for no wait.
type elsewhereError struct{ err *bulwark.StatusError }

func (e elsewhereError) Error() string {
	return e.err.Error() + "; retrying on another endpoint at once"
}

// Unwrap returns the server's *bulwark.StatusError.
func (e elsewhereError) Unwrap() error { return e.err }

// RetryAfter returns zero: the wait was the server's, and the retry goes
// elsewhere.
func (e elsewhereError) RetryAfter() time.Duration { return 0 }

// isTimeout reports whether err is a timeout: a deadline exceeded, or a
// network error that says so (such as a response header timeout).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// releasingBody cancels the context its response was read under when it is
// closed.
type releasingBody struct {
	io.ReadCloser
	release context.CancelFunc
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

// isConnectError reports whether err is a failure to reach the endpoint.
func isConnectError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// discard drains a little of resp's body, so its connection can be reused,
// and closes it.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	_ = resp.Body.Close()
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
