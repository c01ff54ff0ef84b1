package ratelimit

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

var (
	_ Taker = (*Group)(nil)
	_ Quota = (*Group)(nil)
)

// Taker decides on requests for tokens by key: what Middleware asks. A
// *Group is a Taker, and so is the fleet-wide limiter of package
// ratelimit/redisrate.
type Taker interface {
	// Take takes n tokens of key's bucket if they are all there and returns
	// the decision. An error means that no decision could be made, such as
	// a limiter whose server is unreachable and that fails closed.
	Take(ctx context.Context, key string, n int) (Result, error)
}

// Quota is implemented by a Taker that can state its policy: the quota of
// tokens a key has (Burst) per window (the time to refill them all).
// Middleware advertises it in the RateLimit-Policy header field.
type Quota interface {
	Quota() (quota int, window time.Duration)
}

// Quota returns Burst and the time it takes to refill Burst tokens at Rate
// per Period.
func (g *Group) Quota() (quota int, window time.Duration) { return g.s.quota() }

// HTTPConfig configures Middleware.
type HTTPConfig struct {
	// Limiter decides on each request. Required: a *Group, or a
	// fleet-wide limiter such as redisrate's.
	Limiter Taker

	// Key returns the key whose limit a request counts against: the
	// tenant, the API key, the route, the client's address. If nil, every
	// request has the key "": one limit for everything this handler
	// serves. Keys are held in memory by a Group (up to its MaxKeys): bound
	// the length of a key taken from a header.
	Key func(*http.Request) string

	// Cost returns the tokens a request takes; a cost of zero or less
	// takes nothing. If nil, 1.
	Cost func(*http.Request) int

	// Headers adds the RateLimit and, when Limiter is a Quota,
	// RateLimit-Policy header fields of draft-ietf-httpapi-ratelimit-headers
	// (revision 10) to every response, allowed or refused:
	//
	//	RateLimit-Policy: "default";q=100;w=60
	//	RateLimit: "default";r=42;t=18
	//
	// q is the quota and w its window in seconds; r is the tokens left and
	// t the seconds until the bucket is full again.
	Headers bool

	// PolicyName names the policy in those header fields. If empty,
	// "default". It must be printable ASCII without quotes or backslashes.
	PolicyName string
}

// Middleware returns HTTP middleware that takes Cost tokens of the
// request's Key from Limiter before the handler runs. A refused request is
// answered 429 Too Many Requests with an application/problem+json body
// (RFC 9457) and a Retry-After of the wait in whole seconds, rounded up; a
// request asking for more tokens than the bucket holds gets no Retry-After.
// When Limiter returns an error (its server is unreachable and it fails
// closed), the request is answered 503 Service Unavailable.
//
// Refusals are reported by the Limiter, with the request's context. The
// returned function and its handlers are safe for concurrent use. A nil
// handler given to the middleware means http.DefaultServeMux.
//
// Middleware returns an error wrapping ErrInvalidConfig if Limiter is nil
// or PolicyName is not a valid quoted string.
func Middleware(cfg HTTPConfig) (func(http.Handler) http.Handler, error) {
	if cfg.Limiter == nil {
		return nil, fmt.Errorf("%w: HTTPConfig.Limiter is nil", ErrInvalidConfig)
	}
	name := cfg.PolicyName
	if name == "" {
		name = "default"
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return nil, fmt.Errorf("%w: PolicyName %q has a character a structured field string cannot hold", ErrInvalidConfig, cfg.PolicyName)
		}
	}
	m := &middleware{limiter: cfg.Limiter, key: cfg.Key, cost: cfg.Cost, headers: cfg.Headers, name: `"` + name + `"`}
	if q, ok := cfg.Limiter.(Quota); ok && cfg.Headers {
		quota, window := q.Quota()
		w := ceilSeconds(window)
		// Scale the quota to the whole seconds of the window.
		q := math.Floor(float64(quota)*float64(w)*float64(time.Second)/float64(max(window, 1)) + 1e-9)
		m.policy = m.name + ";q=" + strconv.FormatInt(int64(q), 10) + ";w=" + strconv.FormatInt(max(w, 1), 10)
	}
	return func(next http.Handler) http.Handler {
		if next == nil {
			next = http.DefaultServeMux
		}
		return &handler{m: m, next: next}
	}, nil
}

type middleware struct {
	limiter Taker
	key     func(*http.Request) string
	cost    func(*http.Request) int
	headers bool
	name    string // quoted
	policy  string // the RateLimit-Policy value, if any
}

type handler struct {
	m    *middleware
	next http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := h.m
	key, n := "", 1
	if m.key != nil {
		key = m.key(r)
	}
	if m.cost != nil {
		n = m.cost(r)
	}
	res, err := m.limiter.Take(r.Context(), key, n)
	if err != nil {
		writeProblem(w, http.StatusServiceUnavailable, "rate limiter unavailable")
		return
	}
	if m.headers {
		hd := w.Header()
		if m.policy != "" {
			hd.Set("RateLimit-Policy", m.policy)
		}
		hd.Set("RateLimit", m.name+";r="+strconv.Itoa(res.Remaining)+";t="+strconv.FormatInt(ceilSeconds(res.Reset), 10))
	}
	if res.Allowed {
		h.next.ServeHTTP(w, r)
		return
	}
	detail := "rate limit exceeded: the request costs more tokens than the limit allows at once"
	if res.RetryAfter != forever {
		secs := strconv.FormatInt(max(ceilSeconds(res.RetryAfter), 1), 10)
		w.Header().Set("Retry-After", secs)
		detail = "rate limit exceeded, retry after " + secs + " s"
	}
	writeProblem(w, http.StatusTooManyRequests, detail)
}

// ceilSeconds returns d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// writeProblem answers with an RFC 9457 problem details object. detail holds
// no character that JSON would escape.
func writeProblem(w http.ResponseWriter, status int, detail string) {
	b := make([]byte, 0, 128)
	b = append(b, `{"type":"about:blank","title":"`...)
	b = append(b, http.StatusText(status)...)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"detail":"`...)
	b = append(b, detail...)
	b = append(b, `"}`...)
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
