// Package proxy is an HTTP reverse proxy built from bulwark alone:
// httputil.ReverseProxy over a balancer.Transport, with active health checks
// and passive outlier ejection judging the backends, a circuit breaker and
// an adaptive concurrency limit per backend, retries of replayable requests
// on another backend under a shared retry budget, backends from a static
// list or from DNS, its own /livez, /readyz and /startupz, and a graceful
// drain.
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/discovery"
	"github.com/bulwark-go/bulwark/healthcheck"
	"github.com/bulwark-go/bulwark/healthz"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/outlier"
	"github.com/bulwark-go/bulwark/retry"
)

// Config configures a Proxy.
type Config struct {
	// Name names the proxy in events. If empty, "proxy".
	Name string
	// Backends are the upstream servers, Addr "host:port" with their zone
	// and weight. Required unless Resolver is set; with one, they serve
	// until its first answer.
	Backends []bulwark.Endpoint
	// Resolver, if not nil, finds the backends, such as a *discovery.DNS:
	// from Start on, a discovery.Watcher asks it again when its answer's TTL
	// runs out (every 30 s if it reports none) and gives each new set to the
	// balancer, which the health checks, the outlier detector, the breakers
	// and the readiness check follow. A failed or empty answer keeps the
	// backends in hand.
	Resolver discovery.Resolver
	// Algorithm spreads requests over the backends. If zero, round robin.
	Algorithm balancer.Algorithm
	// Zone is the proxy's own zone, preferred while enough of it is
	// healthy. If empty, zones are ignored.
	Zone string
	// HashHeader and HashCookie name where ConsistentHash finds a request's
	// key: the header if present, else the cookie. If both are empty, the
	// path.
	HashHeader, HashCookie string
	// CheckPath is the path of the active health check. If empty, /readyz.
	CheckPath string
	// CheckInterval is the time between health checks of a backend. If
	// zero, 1 s.
	CheckInterval time.Duration
	// EjectionTime is how long a backend ejected by the outlier detector
	// stays out the first time; each ejection in a row adds as much, up to 2
	// minutes. If zero, 10 s.
	EjectionTime time.Duration
	// EndpointLimit is the concurrency limit of each backend, the requests
	// the proxy keeps in flight on it: a bulkhead, so that a backend that
	// hangs holds no more than that. If zero, 256 (DefaultEndpointLimit).
	// If negative, no limit. A backend at its limit gets no more requests
	// while another has room; when every backend is at its limit, the proxy
	// answers 503 with Retry-After at once rather than queue the request.
	// The limiters' events go to Observer, each named Name/host:port, and
	// the balancer's EventRejected (Reason "limit") tells of each request
	// refused so.
	EndpointLimit int
	// AdaptiveEndpointLimit, if true, gives each backend an adaptive
	// limit.Limiter, at most EndpointLimit, that finds the limit from the
	// latency of the backend's answers and from its refusals (503, 429) and
	// timeouts. It is off by default: measured from the proxy, a backend's
	// latency includes the proxy host's own delays, so that on a busy host
	// the adaptive limits fall and refuse requests the backends could serve
	// (proxybench, wrk's 64 connections at saturation on a loaded machine:
	// most requests refused). Turn it on where the proxy's host has CPU to
	// spare and the backends' latency is what moves.
	AdaptiveEndpointLimit bool
	// MaxAttempts bounds the tries of a replayable request, the first
	// included. If zero, 3.
	MaxAttempts int
	// RetryRatio is the share of requests that may be retries, over a 10 s
	// window (plus 10 retries a second). If zero, 0.2.
	RetryRatio float64
	// HedgeDelay, if positive, hedges reads (GET and HEAD): when an attempt
	// has not answered after HedgeDelay, or after the 95th percentile of the
	// latencies seen once enough are known, a second goes to another
	// backend, and the first answer wins ("The Tail at Scale"). Hedges spend
	// from the retry budget. If zero, no hedging.
	HedgeDelay time.Duration
	// RetryDelay, if not nil, returns the wait before retry n (1 for the
	// first). If nil, full jitter from 5 ms, doubling, capped at 100 ms.
	RetryDelay func(n int) time.Duration
	// MaxBufferedBody is the largest request body kept in memory so that
	// a replayable request can be sent again after a failed attempt. A
	// larger one of known length, like the body of any other request,
	// streams through and is sent again only when its attempt failed to
	// connect; one of unknown length found larger is sent once. If zero,
	// 1 MiB.
	MaxBufferedBody int64
	// Transport sends requests to the backends. If nil, a tuned
	// *http.Transport.
	Transport http.RoundTripper
	// Clock is the time source. If nil, the wall clock.
	Clock bulwark.Clock
	// Observer receives every component's events. If nil, none.
	Observer bulwark.Observer
	// Logger logs proxy errors. If nil, slog.Default().
	Logger *slog.Logger
}

// Proxy is the reverse proxy. Use New, then Start; Close stops it. A Proxy is
// safe for concurrent use.
type Proxy struct {
	cfg      Config
	lb       *balancer.Balancer
	checker  *healthcheck.Checker
	outliers *outlier.Detector
	breakers *breaker.Group
	health   *healthz.Service
	watcher  *discovery.Watcher // nil without cfg.Resolver
	members  members
	rp       *httputil.ReverseProxy
	base     *http.Transport // nil when cfg.Transport was given
	mu       sync.Mutex      // guards inflight, draining and drained
	inflight int             // proxied requests being served
	draining bool            // Drain was called
	drained  chan struct{}   // closed when draining and inflight is zero
	handler  http.Handler
}

// New builds a Proxy from cfg.
func New(cfg Config) (*Proxy, error) {
	if len(cfg.Backends) == 0 && cfg.Resolver == nil {
		return nil, errors.New("proxy: no backends and no resolver")
	}
	if cfg.Name == "" {
		cfg.Name = "proxy"
	}
	if cfg.CheckPath == "" {
		cfg.CheckPath = "/readyz"
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = time.Second
	}
	if cfg.EjectionTime == 0 {
		cfg.EjectionTime = 10 * time.Second
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.MaxBufferedBody == 0 {
		cfg.MaxBufferedBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Proxy{cfg: cfg, drained: make(chan struct{})}
	base := cfg.Transport
	if base == nil {
		p.base = &http.Transport{
			MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second, ForceAttemptHTTP2: false,
		}
		base = p.base
	}

	var err error
	// One breaker per backend: a backend whose calls keep failing is taken
	// out of the rotation until a probe call succeeds.
	p.breakers, err = breaker.NewGroup(breaker.GroupConfig{Breaker: breaker.Config{
		Name: cfg.Name, FailureRate: 0.5, WindowCalls: 50, MinCalls: 20, ConsecutiveFailures: 10,
		OpenDuration: 2 * time.Second, MaxOpenDuration: 30 * time.Second, OpenJitter: 0.2,
		HalfOpenProbes: 2, Clock: cfg.Clock, Observer: cfg.Observer,
	}})
	if err != nil {
		return nil, err
	}
	// The balancer owns the fleet: the checker, the outlier detector, the
	// breakers and the readiness check follow its membership, and the
	// checker and detector report their verdicts to it.
	p.outliers, err = outlier.New(outlier.Config{
		Name:     cfg.Name,
		Rules:    outlier.RuleConsecutiveGatewayFailures | outlier.RuleConsecutiveFailures | outlier.RuleFailurePercentage,
		Interval: 5 * time.Second, BaseEjectionTime: cfg.EjectionTime, MaxEjectionTime: max(2*time.Minute, cfg.EjectionTime),
		EjectionJitter: time.Second, MaxEjectionPercent: 50, AlwaysEjectOne: true,
		FailurePercentageMinimumHosts: 2, FailurePercentageRequestVolume: 20,
		Observer: cfg.Observer, Clock: cfg.Clock,
	})
	if err != nil {
		return nil, err
	}
	probe, err := healthcheck.HTTP(healthcheck.HTTPConfig{Path: cfg.CheckPath, Transport: base})
	if err != nil {
		return nil, err
	}
	p.checker, err = healthcheck.New(healthcheck.Config{
		Name: cfg.Name, Probe: probe, Interval: cfg.CheckInterval, UnhealthyInterval: cfg.CheckInterval / 2,
		EdgeInterval: cfg.CheckInterval / 4, IntervalJitter: cfg.CheckInterval / 10, Timeout: cfg.CheckInterval,
		Rise: 2, Fall: 2, Observer: cfg.Observer, Clock: cfg.Clock,
	})
	if err != nil {
		return nil, err
	}
	p.lb, err = balancer.New(balancer.Config{
		Name: cfg.Name, Algorithm: cfg.Algorithm, Endpoints: cfg.Backends, Zone: cfg.Zone,
		SlowStart: 5 * time.Second,
		Followers: []balancer.Follower{p.checker, p.outliers, p.breakers, &p.members},
		Breaker:   func(ep bulwark.Endpoint) (balancer.Breaker, error) { return p.breakers.Get(ep.Addr), nil },
		Limiter:   p.newLimiter,
		Clock:     cfg.Clock, Observer: cfg.Observer,
	})
	if err != nil {
		return nil, err
	}
	if cfg.Resolver != nil {
		p.watcher, err = discovery.New(discovery.Config{
			Name: cfg.Name, Resolver: cfg.Resolver, Updater: p.lb, Clock: cfg.Clock, Observer: cfg.Observer,
		})
		if err != nil {
			return nil, err
		}
	}

	budget, err := retry.NewBudget(retry.BudgetConfig{Ratio: cfg.RetryRatio, Clock: cfg.Clock})
	if err != nil {
		return nil, err
	}
	rc := retry.Config{
		Name: cfg.Name, MaxAttempts: cfg.MaxAttempts, MaxRetryAfter: 2 * time.Second,
		Backoff: retry.Backoff{Base: 5 * time.Millisecond, Cap: 100 * time.Millisecond},
		Budget:  budget, Clock: cfg.Clock, Observer: cfg.Observer,
	}
	if cfg.RetryDelay != nil {
		rc.Delay = func(n int, _ time.Duration, _ error) time.Duration { return cfg.RetryDelay(n) }
	}
	policy, err := retry.New(rc)
	if err != nil {
		return nil, err
	}
	// A backend's Retry-After delays only a retry that goes back to it: a
	// request shed by one backend goes to another at once (after the
	// policy's backoff), as Envoy retries other hosts, and the retry budget
	// bounds the extra load on a fleet that sheds.
	var transport http.RoundTripper = &balancer.Transport{Balancer: p.lb, Base: base, Policy: policy, Key: p.key, RetryAfterPerEndpoint: true}
	if cfg.HedgeDelay > 0 {
		// Retries and hedges spend from one budget; composed, a request
		// counts into it once.
		hedge, err := retry.NewHedge(retry.HedgeConfig{
			Name: cfg.Name, MaxAttempts: 2, Delay: cfg.HedgeDelay, Percentile: 0.95, MinDelay: cfg.HedgeDelay,
			Budget: budget, Clock: cfg.Clock, Observer: cfg.Observer,
		})
		if err != nil {
			return nil, err
		}
		transport = readsHedged{
			reads: &balancer.Transport{Balancer: p.lb, Base: base, Policy: bulwark.Compose(policy, hedge), Key: p.key, RetryAfterPerEndpoint: true},
			rest:  transport,
		}
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = "upstream" // the Transport puts the picked backend here
			r.SetXForwarded()
		},
		Transport:    bodyFromGetBody{transport},
		BufferPool:   bufferPool{},
		ErrorHandler: p.proxyError,
	}

	p.health, err = healthz.New(healthz.Config{
		Name: cfg.Name, Observer: cfg.Observer, Clock: cfg.Clock,
		Ready: []healthz.Check{{
			Name: "backends", TTL: 250 * time.Millisecond,
			// Ready while a backend can take traffic: a healthy one, or
			// one still pending (Unknown: not probed yet), which the
			// balancer picks while none is healthy.
			Run: func(context.Context) error {
				for _, ep := range p.members.get() {
					if st, ok := p.checker.State(ep); ok && (st == healthcheck.Healthy || st == healthcheck.Unknown) {
						return nil
					}
				}
				return errors.New("no healthy backend")
			},
		}},
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/livez", p.health.Livez())
	mux.Handle("/readyz", p.health.Readyz())
	mux.Handle("/startupz", p.health.Startupz())
	mux.Handle("/", http.HandlerFunc(p.serveProxy))
	p.handler = mux
	return p, nil
}

// newLimiter returns the concurrency limiter of a backend, as
// Config.EndpointLimit says: nil for none. Every request weighs the same (no
// criticality reaches the balancer), so none of the limit is held back for
// critical requests.
func (p *Proxy) newLimiter(ep bulwark.Endpoint) (balancer.Limiter, error) {
	n := p.cfg.EndpointLimit
	if n < 0 {
		return nil, nil
	}
	if n == 0 {
		n = DefaultEndpointLimit
	}
	lc := limit.Config{Name: p.cfg.Name + "/" + ep.Addr, Headroom: -1, Clock: p.cfg.Clock, Observer: p.cfg.Observer}
	if p.cfg.AdaptiveEndpointLimit {
		lc.MaxLimit = n
		lc.InitialLimit = min(defaultAdaptiveInitial, n)
	} else {
		lc.InitialLimit, lc.MinLimit, lc.MaxLimit = n, n, n
	}
	return limit.New(lc)
}

// DefaultEndpointLimit is Config.EndpointLimit's default.
const DefaultEndpointLimit = 256

// defaultAdaptiveInitial is where an adaptive endpoint limit starts: the
// limit package's default initial limit.
const defaultAdaptiveInitial = 20

// members follows the balancer's endpoint set, for the readiness check.
type members struct {
	eps atomic.Pointer[[]bulwark.Endpoint]
}

func (m *members) SetEndpoints(eps []bulwark.Endpoint) error {
	m.eps.Store(&eps)
	return nil
}

func (m *members) get() []bulwark.Endpoint {
	if eps := m.eps.Load(); eps != nil {
		return *eps
	}
	return nil
}

// readsHedged sends GET and HEAD requests through a hedging transport, and
// the rest through the plain one. A read that cannot be sent twice
// (retry.Replayable), or that asks to upgrade the connection, is not hedged.
type readsHedged struct{ reads, rest http.RoundTripper }

func (h readsHedged) RoundTrip(r *http.Request) (*http.Response, error) {
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	if read && retry.Replayable(r) && r.Header.Get("Upgrade") == "" {
		return h.reads.RoundTrip(r)
	}
	return h.rest.RoundTrip(r)
}

// Handler returns the proxy's handler: health endpoints and the proxy.
func (p *Proxy) Handler() http.Handler { return p.handler }

// Balancer returns the balancer, for tests and reports.
func (p *Proxy) Balancer() *balancer.Balancer { return p.lb }

// Start starts the health checks, the outlier detector and, with a
// Resolver, service discovery, after a first resolution (a failed one is
// logged, and retried in the background); Close stops them.
func (p *Proxy) Start(ctx context.Context) error {
	if err := p.checker.Start(ctx); err != nil {
		return err
	}
	if err := p.outliers.Start(ctx); err != nil {
		return err
	}
	if p.watcher != nil {
		if err := p.watcher.Refresh(ctx); err != nil {
			p.cfg.Logger.WarnContext(ctx, "resolving the backends", "error", err)
		}
		if err := p.watcher.Start(ctx); err != nil {
			return err
		}
	}
	p.health.MarkStarted()
	return nil
}

// Drain makes readiness fail at once, so that load balancers stop sending
// new requests, and returns when the requests in flight have finished or ctx
// ends. Requests that still arrive are served.
func (p *Proxy) Drain(ctx context.Context) error {
	p.health.Drain()
	p.mu.Lock()
	if !p.draining {
		p.draining = true
		if p.inflight == 0 {
			close(p.drained)
		}
	}
	p.mu.Unlock()
	select {
	case <-p.drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the background work and waits for it.
func (p *Proxy) Close() error {
	var err error
	if p.watcher != nil {
		err = p.watcher.Close()
	}
	err = errors.Join(err, p.checker.Close(), p.outliers.Close(), p.lb.Close())
	if p.base != nil {
		p.base.CloseIdleConnections()
	}
	return err
}

func (p *Proxy) serveProxy(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.inflight++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inflight--
		if p.draining && p.inflight == 0 {
			select {
			case <-p.drained:
			default:
				close(p.drained)
			}
		}
		p.mu.Unlock()
	}()
	done, err := p.prepareBody(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if done != nil {
		defer done()
	}
	p.rp.ServeHTTP(w, r)
}

// bufferPool is an httputil.BufferPool of the 32 KiB buffers that
// ReverseProxy copies response bodies with.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }

func (p *Proxy) key(r *http.Request) string {
	if p.cfg.HashHeader != "" {
		if v := r.Header.Get(p.cfg.HashHeader); v != "" {
			return v
		}
	}
	if p.cfg.HashCookie != "" {
		if c, err := r.Cookie(p.cfg.HashCookie); err == nil {
			return c.Value
		}
	}
	return r.URL.Path
}

// proxyError answers a request that got no response from a backend. A
// request the proxy refused itself gets 503 with Retry-After and an
// application/problem+json body: when every backend was at its concurrency
// limit, Retry-After is the limiter's estimate in whole seconds, at least 1,
// and the detail starts "limit: rejected", as a limit's refusal does (the
// request did nothing); otherwise (no backend available, the retry budget
// spent) Retry-After is 1.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	switch {
	case errors.Is(err, limit.ErrRejected):
		wait := time.Second
		var ra interface{ RetryAfter() time.Duration }
		if errors.As(err, &ra) {
			wait = max(wait, ra.RetryAfter())
		}
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(wait.Seconds())), 10))
		writeProblem(w, http.StatusServiceUnavailable, "limit: rejected (every backend is at its concurrency limit)")
		return // load shed as designed, each request a warning would flood the log under overload
	case errors.Is(err, balancer.ErrNoEndpoints), errors.Is(err, balancer.ErrUnavailable), errors.Is(err, retry.ErrBudget):
		w.Header().Set("Retry-After", "1")
		p.cfg.Logger.WarnContext(r.Context(), "proxy error", "method", r.Method, "path", r.URL.Path, "status", http.StatusServiceUnavailable, "error", err)
		writeProblem(w, http.StatusServiceUnavailable, "no backend can take the request")
		return
	case errors.Is(err, context.Canceled):
		status = 499 // the client went away; nobody reads this
	case errors.Is(err, context.DeadlineExceeded):
		status = http.StatusGatewayTimeout
	}
	if status != 499 {
		p.cfg.Logger.WarnContext(r.Context(), "proxy error", "method", r.Method, "path", r.URL.Path, "status", status, "error", err)
	}
	w.WriteHeader(status)
}

// writeProblem writes an RFC 9457 problem details answer.
func writeProblem(w http.ResponseWriter, status int, detail string) {
	b, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}{"about:blank", http.StatusText(status), status, detail})
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
