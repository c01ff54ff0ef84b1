package limit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// Acquirer admits calls: *Limiter and *Bulkhead. Middleware takes one.
type Acquirer interface {
	Acquire(ctx context.Context) (Permit, error)
}

var (
	_ Acquirer = (*Limiter)(nil)
	_ Acquirer = (*Bulkhead)(nil)
)

// DefaultHeader is the request header in which Middleware writes a request's
// criticality, and reads it when MiddlewareConfig.TrustHeader is set.
const DefaultHeader = "Bulwark-Criticality"

// MiddlewareConfig configures Middleware. Limiter is required.
type MiddlewareConfig struct {
	// Limiter admits the requests: a *Limiter or a *Bulkhead.
	Limiter Acquirer

	// Rules give each request its criticality: the first rule that matches
	// wins, and a request that none matches is Normal. ParseRules reads
	// them from text.
	Rules []Rule

	// Header is the request header that carries the criticality: the
	// middleware sets it on every request it admits, so that the handler
	// and the calls it forwards see it. If empty, DefaultHeader.
	Header string

	// TrustHeader makes a criticality that the request already carries in
	// Header win over the rules: set it when a proxy of yours in front
	// has classified the request, never on a service that clients reach
	// directly (they would all claim to be critical).
	TrustHeader bool

	// Tenant returns the request's tenant ("" for none), whose calls the
	// limiter bounds to its TenantShare. If nil, requests have no tenant.
	Tenant func(*http.Request) string
}

// Rule gives the requests it matches a criticality.
type Rule struct {
	// Method matches the request method exactly; "" matches any.
	Method string
	// Path matches URL paths that start with it; "" matches any.
	Path string
	// Criticality is given to the matching requests.
	Criticality Criticality
}

func (r Rule) match(req *http.Request) bool {
	return (r.Method == "" || r.Method == req.Method) && strings.HasPrefix(req.URL.Path, r.Path)
}

// String returns the rule in the syntax of ParseRules.
func (r Rule) String() string {
	s := r.Path
	if s == "" {
		s = "*"
	}
	if r.Method != "" {
		s = r.Method + " " + s
	}
	return s + " = " + r.Criticality.String()
}

// ParseRules reads rules separated by commas or new lines, each written
// "[METHOD] PATH = CRITICALITY": "GET /orders = critical, /reports/ =
// sheddable, * = normal". PATH is a prefix of the URL path, or "*" for any;
// METHOD is an upper-case HTTP method; CRITICALITY is what
// ParseCriticality reads. Blank entries are skipped. It returns an error
// wrapping ErrInvalidConfig that quotes the first entry it cannot read.
func ParseRules(s string) ([]Rule, error) {
	var rules []Rule
	for _, entry := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' }) {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		r, err := parseRule(entry)
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func parseRule(entry string) (Rule, error) {
	bad := func(why string) (Rule, error) {
		return Rule{}, fmt.Errorf("%w: rule %q: %s", ErrInvalidConfig, entry, why)
	}
	match, crit, ok := strings.Cut(entry, "=")
	if !ok {
		return bad(`want "[METHOD] PATH = CRITICALITY"`)
	}
	c, ok := ParseCriticality(crit)
	if !ok {
		return bad("criticality must be critical, normal or sheddable")
	}
	var r Rule
	r.Criticality = c
	f := strings.Fields(match)
	switch len(f) {
	case 1:
		r.Path = f[0]
	case 2:
		r.Method, r.Path = f[0], f[1]
		if !validMethod(r.Method) {
			return bad("method must be an upper-case token")
		}
	default:
		return bad(`want "[METHOD] PATH = CRITICALITY"`)
	}
	switch {
	case r.Path == "*":
		r.Path = ""
	case !strings.HasPrefix(r.Path, "/"):
		return bad(`path must start with "/" or be "*"`)
	}
	return r, nil
}

func validMethod(m string) bool {
	for _, c := range []byte(m) {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return m != ""
}

// Middleware returns HTTP middleware that admits each request through
// cfg.Limiter before the handler runs. It gives the request its criticality
// (cfg.Rules, or the trusted header) in the request's context and in
// cfg.Header, and its tenant (cfg.Tenant) in the context.
//
// A refused request gets an application/problem+json answer (RFC 9457):
// 429 Too Many Requests when its tenant is over its share (ReasonTenant:
// the client should slow down, the service is not overloaded), 503 Service
// Unavailable for every other refusal, with Retry-After in whole seconds
// (at least 1) when the refusal carries an estimate. The handler's answer
// ends the Permit: a 503 or 429 of its own, or a request whose context ran
// out of time, counts as a drop (overload); another 5xx as a failure; a
// request its client canceled as nothing; anything else as a success,
// whose latency the Limiter learns from. A panic in the handler ends the
// Permit as a failure and goes on.
//
// Middleware returns an error wrapping ErrInvalidConfig when cfg.Limiter is
// nil or a rule has an invalid criticality.
func Middleware(cfg MiddlewareConfig) (func(http.Handler) http.Handler, error) {
	if cfg.Limiter == nil {
		return nil, fmt.Errorf("%w: Limiter is nil", ErrInvalidConfig)
	}
	for _, r := range cfg.Rules {
		if !r.Criticality.valid() {
			return nil, fmt.Errorf("%w: rule %v: criticality %d out of range", ErrInvalidConfig, r, int(r.Criticality))
		}
	}
	header := cfg.Header
	if header == "" {
		header = DefaultHeader
	}
	header = http.CanonicalHeaderKey(header)
	rules := append([]Rule(nil), cfg.Rules...)
	m := &middleware{lim: cfg.Limiter, rules: rules, header: header, trust: cfg.TrustHeader, tenant: cfg.Tenant}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.serve(next, w, r) })
	}, nil
}

type middleware struct {
	lim    Acquirer
	rules  []Rule
	header string
	trust  bool
	tenant func(*http.Request) string
}

func (m *middleware) criticality(r *http.Request) Criticality {
	if m.trust {
		if c, ok := ParseCriticality(r.Header.Get(m.header)); ok {
			return c
		}
	}
	for _, rule := range m.rules {
		if rule.match(r) {
			return rule.Criticality
		}
	}
	return Normal
}

func (m *middleware) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	info := callInfo{crit: m.criticality(r)}
	if m.tenant != nil {
		info.tenant = m.tenant(r)
	}
	ctx := context.WithValue(r.Context(), callInfoKey{}, &info)
	p, err := m.lim.Acquire(ctx)
	if err != nil {
		refuse(w, err)
		return
	}
	r = r.WithContext(ctx)
	r.Header.Set(m.header, info.crit.String())
	sw := &statusWriter{ResponseWriter: w}
	finished := false
	defer func() {
		if !finished { // the handler panicked; the panic goes on
			p.end(outcomeFailure)
		}
	}()
	next.ServeHTTP(sw, r)
	finished = true
	switch err := ctx.Err(); {
	case errors.Is(err, context.DeadlineExceeded):
		p.Drop()
	case err != nil:
		p.end(outcomeNeutral)
	case sw.status == http.StatusServiceUnavailable || sw.status == http.StatusTooManyRequests:
		p.Drop()
	case sw.status >= 500:
		p.end(outcomeFailure)
	default:
		p.Done(nil)
	}
}

// refuse writes the answer to a refused request.
func refuse(w http.ResponseWriter, err error) {
	status := http.StatusServiceUnavailable
	var rej *RejectedError
	if errors.As(err, &rej) {
		if rej.Reason == ReasonTenant {
			status = http.StatusTooManyRequests
		}
		if d := rej.RetryAfter(); d > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10))
		}
	} else if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusServiceUnavailable
	}
	writeProblem(w, status, err.Error())
}

// problem is an RFC 9457 problem details object.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	b, _ := json.Marshal(problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// statusWriter notes the status code that the handler answers with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush flushes the underlying writer if it can.
func (s *statusWriter) Flush() {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
