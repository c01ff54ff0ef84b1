package healthz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

var _ http.Handler = (*Service)(nil)

// ErrInvalidConfig is wrapped by the error of New for a Config it cannot
// use.
var ErrInvalidConfig = errors.New("healthz: invalid config")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

// Check is one dependency of the service, checked for readiness (or for
// liveness, in Config.Live).
type Check struct {
	// Name names the check in the response, as its componentName. Required;
	// it must be unique and must not contain ':'.
	Name string
	// Run checks the dependency once and returns nil if it is usable. Its
	// ctx ends at Timeout or when the request that asked is canceled; Run
	// must return soon after. Required.
	Run func(ctx context.Context) error
	// Timeout bounds each run; a run still going then fails. If zero, 2 s.
	// Negative is an error.
	Timeout time.Duration
	// TTL is how long a result is reused before Run is called again, so that
	// frequent probes of the service do not hammer its dependencies. If
	// zero, 1 s. Negative is an error.
	TTL time.Duration
	// Optional marks a dependency the service can work without: its failure
	// makes the service degraded ("warn", still ready) instead of not ready.
	Optional bool
	// Type is the componentType in the response: "component", "datastore",
	// "system" or a URI. If empty, omitted.
	Type string
}

// Config configures a Service.
type Config struct {
	// Name identifies the service in events.
	Name string
	// ServiceID, Version, ReleaseID and Description fill the fields of the
	// same names in the health+json responses; empty ones are omitted.
	ServiceID, Version, ReleaseID, Description string

	// Ready lists the dependencies that /readyz checks.
	Ready []Check
	// Live lists what /livez checks. Keep it short and local: a failed
	// liveness probe restarts the process, which never fixes a dependency.
	// If empty, /livez passes while the process serves HTTP.
	Live []Check

	// Observer, if not nil, receives EventStateChange when readiness
	// changes (from and to are "pass", "warn", "fail" or "draining"), and
	// EventProbe for each check run.
	Observer bulwark.Observer
	// Clock is the time source of the caches and timeouts. If nil, the wall
	// clock.
	Clock bulwark.Clock
}

// Service serves the health of the service itself as Kubernetes probes
// expect, in the application/health+json format of
// draft-inadarei-api-health-check:
//
//   - /livez: 200 while the Live checks pass (the process works); a failure
//     here means "restart me".
//   - /readyz: 200 while every Ready check passes ("pass"), or only Optional
//     ones fail ("warn", degraded); 503 when a required one fails or after
//     Drain. Results are cached for each check's TTL, and concurrent
//     requests share one run.
//   - /startupz: 503 until MarkStarted is called or /readyz first passes,
//     then 200 for good.
//
// HEAD is answered like GET without a body; other methods get 405.
//
// Use New; the zero Service is not usable. A Service is safe for
// concurrent use by multiple goroutines.
type Service struct {
	cfg   Config // normalized; read-only after New
	clk   bulwark.Clock
	wall  bool
	ready *checkSet
	live  *checkSet

	mu        sync.Mutex // guards the fields below
	draining  bool
	started   bool
	lastReady string // the last readiness status reported to the Observer
}

// checkSet is a list of checks with the last body built from their
// results, served again while no result changes.
type checkSet struct {
	checks []*cachedCheck
	mu     sync.Mutex // guards the fields below
	gens   []uint64   // the generations of the results body was built from
	status string
	body   []byte
}

// cachedCheck is a Check with its last result.
type cachedCheck struct {
	Check
	mu      sync.Mutex    // guards the fields below
	valid   bool          // res holds a result
	res     checkResult   // the last result
	gen     uint64        // results stored so far
	running chan struct{} // closed when the run in flight ends; nil if none
}

type checkResult struct {
	err     error
	at      time.Time // when the run started
	latency time.Duration
	gen     uint64 // cachedCheck.gen when stored; 0 if not stored
}

// New returns a Service for cfg. It returns an error wrapping
// ErrInvalidConfig for a check without Name or Run, with a duplicate Name or
// one containing ':', or with a negative Timeout or TTL.
func New(cfg Config) (*Service, error) {
	cfg.Clock = base.ClockOrWall(cfg.Clock)
	s := &Service{cfg: cfg, clk: cfg.Clock, wall: cfg.Clock == bulwark.WallClock(), lastReady: "unknown"}
	var err error
	if s.ready, err = cachedChecks("Ready", cfg.Ready); err != nil {
		return nil, err
	}
	if s.live, err = cachedChecks("Live", cfg.Live); err != nil {
		return nil, err
	}
	return s, nil
}

func cachedChecks(field string, checks []Check) (*checkSet, error) {
	seen := map[string]bool{}
	out := make([]*cachedCheck, 0, len(checks))
	for i, c := range checks {
		switch {
		case c.Name == "":
			return nil, invalid("%s[%d] has no Name", field, i)
		case strings.Contains(c.Name, ":"):
			return nil, invalid("%s[%d] Name %q contains ':'", field, i, c.Name)
		case seen[c.Name]:
			return nil, invalid("%s[%d] Name %q is a duplicate", field, i, c.Name)
		case c.Run == nil:
			return nil, invalid("%s[%d] %q has no Run", field, i, c.Name)
		case c.Timeout < 0:
			return nil, invalid("%s[%d] %q Timeout %v is negative", field, i, c.Name, c.Timeout)
		case c.TTL < 0:
			return nil, invalid("%s[%d] %q TTL %v is negative", field, i, c.Name, c.TTL)
		}
		seen[c.Name] = true
		if c.Timeout == 0 {
			c.Timeout = 2 * time.Second
		}
		if c.TTL == 0 {
			c.TTL = time.Second
		}
		out = append(out, &cachedCheck{Check: c})
	}
	return &checkSet{checks: out}, nil
}

// Drain makes /readyz answer 503 from now on, while the server still
// serves: call it when shutdown begins (on SIGTERM), wait for the load
// balancers to notice (a few of their probe periods), then shut the server
// down. /livez and /startupz are not affected. Drain cannot be undone.
func (s *Service) Drain() {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return
	}
	s.draining = true
	from := s.lastReady
	s.lastReady = "draining"
	s.mu.Unlock()
	if obs := s.cfg.Observer; obs != nil {
		obs.Observe(bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentHealthCheck,
			Name: s.cfg.Name, From: from, To: "draining", Reason: "drain"})
	}
}

// MarkStarted makes /startupz pass from now on.
func (s *Service) MarkStarted() {
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
}

// ServeHTTP serves /livez, /readyz and /startupz, chosen by the last element
// of the request path, so that the Service can be mounted under any prefix;
// other paths get 404.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:] {
	case "livez":
		s.serveLive(w, r)
	case "readyz":
		s.serveReady(w, r)
	case "startupz":
		s.serveStartup(w, r)
	default:
		http.NotFound(w, r)
	}
}

// Livez returns the handler of /livez.
func (s *Service) Livez() http.Handler { return http.HandlerFunc(s.serveLive) }

// Readyz returns the handler of /readyz.
func (s *Service) Readyz() http.Handler { return http.HandlerFunc(s.serveReady) }

// Startupz returns the handler of /startupz.
func (s *Service) Startupz() http.Handler { return http.HandlerFunc(s.serveStartup) }

const (
	statusPass = "pass"
	statusWarn = "warn"
	statusFail = "fail"
)

// response is the application/health+json body.
type response struct {
	Status      string                    `json:"status"`
	Version     string                    `json:"version,omitempty"`
	ReleaseID   string                    `json:"releaseId,omitempty"`
	ServiceID   string                    `json:"serviceId,omitempty"`
	Description string                    `json:"description,omitempty"`
	Notes       []string                  `json:"notes,omitempty"`
	Output      string                    `json:"output,omitempty"`
	Checks      map[string][]checkDetails `json:"checks,omitempty"`
}

type checkDetails struct {
	ComponentType string  `json:"componentType,omitempty"`
	ObservedValue float64 `json:"observedValue"`
	ObservedUnit  string  `json:"observedUnit"`
	Status        string  `json:"status"`
	Time          string  `json:"time"`
	Output        string  `json:"output,omitempty"`
}

func (s *Service) serveLive(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r) {
		return
	}
	status, body := s.run(r.Context(), s.live)
	s.write(w, r, status, body)
}

func (s *Service) serveReady(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r) {
		return
	}
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	var status string
	var body []byte
	if draining {
		resp := s.base(statusFail)
		resp.Notes = []string{"draining: shutting down"}
		status, body = resp.Status, encode(resp)
	} else {
		status, body = s.run(r.Context(), s.ready)
	}
	s.mu.Lock()
	if status != statusFail {
		s.started = true
	}
	from, to := s.lastReady, status
	if s.draining {
		to = "draining"
	}
	changed := from != to
	s.lastReady = to
	s.mu.Unlock()
	if obs := s.cfg.Observer; obs != nil && changed {
		obs.Observe(bulwark.Event{Kind: bulwark.EventStateChange, Component: bulwark.ComponentHealthCheck,
			Name: s.cfg.Name, From: from, To: to, Reason: "readiness"})
	}
	s.write(w, r, status, body)
}

func (s *Service) serveStartup(w http.ResponseWriter, r *http.Request) {
	if !allowed(w, r) {
		return
	}
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	resp := s.base(statusPass)
	if !started {
		resp.Status = statusFail
		resp.Notes = []string{"starting"}
	}
	s.write(w, r, resp.Status, encode(resp))
}

func allowed(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func (s *Service) base(status string) response {
	return response{Status: status, Version: s.cfg.Version, ReleaseID: s.cfg.ReleaseID,
		ServiceID: s.cfg.ServiceID, Description: s.cfg.Description}
}

// run runs (or reuses) the checks of set in parallel and returns the
// aggregated status and the health+json body.
func (s *Service) run(ctx context.Context, set *checkSet) (string, []byte) {
	checks := set.checks
	results := make([]checkResult, len(checks))
	var stale []int
	for i, c := range checks {
		if res, ok := s.cached(c); ok {
			results[i] = res
		} else {
			stale = append(stale, i)
		}
	}
	if len(stale) == 1 {
		results[stale[0]] = s.result(ctx, checks[stale[0]])
	} else if len(stale) > 1 {
		var wg sync.WaitGroup
		for _, i := range stale {
			wg.Go(func() { results[i] = s.result(ctx, checks[i]) })
		}
		wg.Wait()
	}
	gens := make([]uint64, len(checks))
	for i := range results {
		gens[i] = results[i].gen
	}
	set.mu.Lock()
	if set.body != nil && slices.Equal(gens, set.gens) {
		status, body := set.status, set.body
		set.mu.Unlock()
		return status, body
	}
	set.mu.Unlock()

	resp := s.base(statusPass)
	if len(checks) == 0 {
		body := encode(resp)
		set.mu.Lock()
		set.status, set.body = resp.Status, body
		set.mu.Unlock()
		return resp.Status, body
	}
	resp.Checks = make(map[string][]checkDetails, len(checks))
	var failed []string
	for i, c := range checks {
		res := results[i]
		d := checkDetails{ComponentType: c.Type, ObservedValue: float64(res.latency) / float64(time.Millisecond),
			ObservedUnit: "ms", Status: statusPass, Time: res.at.UTC().Format(time.RFC3339Nano)}
		if res.err != nil {
			d.Output = res.err.Error()
			d.Status = statusFail
			if c.Optional {
				d.Status = statusWarn
				if resp.Status == statusPass {
					resp.Status = statusWarn
				}
			} else {
				resp.Status = statusFail
			}
			failed = append(failed, c.Name)
		}
		resp.Checks[c.Name+":responseTime"] = []checkDetails{d}
	}
	if len(failed) > 0 {
		resp.Output = "failing: " + strings.Join(failed, ", ")
	}
	body := encode(resp)
	if !slices.Contains(gens, 0) { // every result is a stored one
		set.mu.Lock()
		set.gens, set.status, set.body = gens, resp.Status, body
		set.mu.Unlock()
	}
	return resp.Status, body
}

// cached returns c's result if it is fresh.
func (s *Service) cached(c *cachedCheck) (checkResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.valid && s.clk.Since(c.res.at) < c.TTL {
		return c.res, true
	}
	return checkResult{}, false
}

// result returns c's cached result, or runs c, or waits for the run in
// flight.
func (s *Service) result(ctx context.Context, c *cachedCheck) checkResult {
	c.mu.Lock()
	for {
		if c.valid && s.clk.Since(c.res.at) < c.TTL {
			res := c.res
			c.mu.Unlock()
			return res
		}
		ch := c.running
		if ch == nil {
			break
		}
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return checkResult{err: ctx.Err(), at: s.clk.Now()}
		}
		c.mu.Lock() // fresh now, unless that run was cut short by its caller
	}
	ch := make(chan struct{})
	c.running = ch
	c.mu.Unlock()

	res := s.runCheck(ctx, c)

	c.mu.Lock()
	if ctx.Err() == nil { // a run cut short by the caller says nothing of the dependency
		c.gen++
		res.gen = c.gen
		c.res, c.valid = res, true
	}
	c.running = nil
	close(ch)
	c.mu.Unlock()
	if obs := s.cfg.Observer; obs != nil {
		o := bulwark.Success
		if res.err != nil {
			o = bulwark.Failure
		}
		obs.Observe(bulwark.Event{Kind: bulwark.EventProbe, Component: bulwark.ComponentHealthCheck,
			Name: s.cfg.Name, Key: c.Name, Latency: res.latency, Err: res.err, Outcome: o})
	}
	return res
}

func (s *Service) runCheck(parent context.Context, c *cachedCheck) (res checkResult) {
	res.at = s.clk.Now()
	ctx, cancel := base.WithTimeout(parent, s.clk, s.wall, c.Timeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			res.err = fmt.Errorf("healthz: check %q panicked: %v", c.Name, r)
		}
		res.latency = s.clk.Since(res.at)
	}()
	res.err = c.Run(ctx)
	if res.err == nil && ctx.Err() != nil {
		res.err = context.Cause(ctx)
	}
	if res.err != nil && parent.Err() == nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded) &&
		!errors.Is(res.err, context.DeadlineExceeded) {
		res.err = errors.Join(context.DeadlineExceeded, res.err)
	}
	return res
}

// encode returns resp as JSON.
func encode(resp response) []byte {
	body, err := json.Marshal(resp)
	if err != nil { // cannot happen: the response holds strings and numbers
		return []byte(`{"status":"fail","output":"healthz: encoding the response failed"}` + "\n")
	}
	return append(body, '\n')
}

// write sends body with the status code that status calls for.
func (s *Service) write(w http.ResponseWriter, r *http.Request, status string, body []byte) {
	code := http.StatusOK
	if status == statusFail {
		code = http.StatusServiceUnavailable
	}
	h := w.Header()
	h.Set("Content-Type", "application/health+json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}
