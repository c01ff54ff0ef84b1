package breaker

import (
	"errors"
	"net/http"

	"github.com/bulwark-go/bulwark"
)

var _ http.RoundTripper = (*Transport)(nil)

// Transport is an http.RoundTripper that guards each request with the breaker
// of its host, from Group: the client of one upstream (or a few) gets the
// protection that a balancer's per-endpoint breakers give a fleet. A breaker
// that is open fails the request at once, without sending it, with an
// *OpenError whose RetryAfter says when the breaker lets a probe through. A
// transport error or a 5xx response counts as a failure of the host (the
// response is still returned), any other response as a success, and a
// request canceled by its own caller as nothing (see Config.Classify).
//
// A retry.Transport over a breaker.Transport retries a request that failed,
// but not one that an open breaker refused: that one fails at once, unless
// the retry policy is told to wait (retry.Config.MaxOpenWait).
//
// A Transport is safe for concurrent use by multiple goroutines if Base is;
// its fields must not change once it is in use.
type Transport struct {
	// Group holds the breakers, one per key. It must not be nil.
	Group *Group
	// Base sends the requests. If nil, http.DefaultTransport.
	Base http.RoundTripper
	// Key returns the key of a request's breaker. If nil, the host of the
	// request's URL (its Host field when the URL has none).
	Key func(*http.Request) string
}

// errNoGroup is returned by a Transport whose Group is nil.
var errNoGroup = errors.New("breaker: Transport has no Group")

// RoundTrip sends req if the breaker of its key admits it, and records the
// outcome. It returns an *OpenError (wrapping ErrOpen), and closes the
// request's body, when the breaker refuses; otherwise what Base returns.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.Group == nil {
		closeBody(req)
		return nil, errNoGroup
	}
	var key string
	switch {
	case t.Key != nil:
		key = t.Key(req)
	case req.URL != nil && req.URL.Host != "":
		key = req.URL.Host
	default:
		key = req.Host
	}
	permit, err := t.Group.Get(key).Allow()
	if err != nil {
		closeBody(req)
		return nil, err
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	switch {
	case err != nil:
		permit.Done(req.Context(), err)
	case resp.StatusCode >= 500:
		permit.Record(bulwark.Failure)
	default:
		permit.Done(req.Context(), nil)
	}
	return resp, err
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
