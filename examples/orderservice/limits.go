package orderservice

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/bulwark-go/bulwark/retry"
	"github.com/bulwark-go/bulwark/timeout"
)

// DefaultRules are the criticality rules of a Service whose Config has none,
// in limit.ParseRules' syntax: reading an order, creating one and moving it
// on (pay, ship, cancel) are what a user waits for, and are critical;
// listings from the lagging read model are normal; reports are batch work,
// heavier, and go first when the service is overloaded.
const DefaultRules = "GET /orders/ = critical, POST /orders = critical, /reports/ = sheddable, * = normal"

// DefaultHeadroom is the Headroom of the adaptive Limiter that a Service
// makes when its Config has none: the share of the limit kept from normal
// requests for critical ones, and twice that from sheddable ones (reports).
// It is three times limit.Config's default, because reports are heavier than
// the critical requests: when critical requests are half of the capacity and
// reports bring the load to three times it, a tenth let the reports take
// the room of a fifth to a quarter of the critical requests; three tenths,
// of one in forty at most (overload_test.go, and the README).
const DefaultHeadroom = 0.3

// limits builds the rate limit and the Limiter's middleware from s.cfg.
func (s *Service) limits() error {
	cfg := s.cfg
	if !cfg.NoShedding {
		lim := cfg.Limiter
		if lim == nil {
			l, err := limit.New(limit.Config{Name: cfg.Name, Headroom: DefaultHeadroom, Clock: cfg.Clock, Observer: cfg.Observer})
			if err != nil {
				return err
			}
			lim = l
		}
		rules := cfg.Rules
		if rules == nil {
			var err error
			if rules, err = limit.ParseRules(DefaultRules); err != nil {
				return err
			}
		}
		mw, err := limit.Middleware(limit.MiddlewareConfig{Limiter: lim, Rules: rules, Tenant: requestTenant})
		if err != nil {
			return err
		}
		s.limiter, s.shed = lim, mw
	}
	if rc := cfg.RateLimit; rc.Rate != 0 {
		if rc.Name == "" {
			rc.Name = cfg.Name
		}
		if rc.Clock == nil {
			rc.Clock = cfg.Clock
		}
		if rc.Observer == nil {
			rc.Observer = cfg.Observer
		}
		g, err := ratelimit.NewGroup(ratelimit.GroupConfig{Limit: rc})
		if err != nil {
			return err
		}
		mw, err := ratelimit.Middleware(ratelimit.HTTPConfig{Limiter: g, Key: requestTenant, Headers: true, PolicyName: "tenant"})
		if err != nil {
			return err
		}
		s.rate = mw
	}
	var err error
	s.reports, err = timeout.New(timeout.Config{Name: "reports", Timeout: cfg.ReportTimeout, Clock: cfg.Clock, Observer: cfg.Observer})
	return err
}

// api guards an API handler: the caller's API key names its tenant
// (authenticate: 401 without one), the tenant's rate limit (429), then the
// Limiter (503, or 429 for a tenant over its share), in that order, so that
// neither an unknown caller nor a tenant over its rate takes a slot of the
// Limiter.
func (s *Service) api(h http.Handler) http.Handler {
	if s.shed != nil {
		h = s.shed(h)
	}
	if s.rate != nil {
		h = s.rate(h)
	}
	return s.authenticate(h)
}

// paymentGuard composes the policies of a charge, outermost first:
//
//   - a timeout of the whole charge (PaymentTimeout), backoff included, so
//     that a pay request never waits longer than that for the provider;
//   - the retry, with its budget, which honours Retry-After;
//   - a timeout of each attempt (PaymentAttemptTimeout), which the retry
//     sees as a failure and tries again (the charge is idempotent under its
//     key);
//   - the breaker, innermost, so that it counts every attempt, and a call
//     it refuses is not retried (its wait is longer than the retry's
//     MaxRetryAfter).
//
// There is no client-side throttle (package throttle) in front of the retry:
// it has no minimum volume, so that at the few charges a second that this
// service makes, one failed charge would refuse about half of the next ones
// for its two-minute window; the breaker, which waits for ten calls, stops
// the charges to a provider that fails, and the retry budget bounds what
// retries add.
func (s *Service) paymentGuard(rp *retry.Policy) (bulwark.Policy, error) {
	cfg := s.cfg
	total, err := timeout.New(timeout.Config{Name: "payments", Timeout: cfg.PaymentTimeout, Clock: cfg.Clock, Observer: cfg.Observer})
	if err != nil {
		return nil, err
	}
	attempt, err := timeout.New(timeout.Config{Name: "payments-attempt", Timeout: cfg.PaymentAttemptTimeout, Clock: cfg.Clock, Observer: cfg.Observer})
	if err != nil {
		return nil, err
	}
	return bulwark.Compose(total, rp, attempt, s.breaker), nil
}

// Report is the answer of GET /reports/summary: the caller's orders counted
// and summed by state and currency, read from the repository as they are
// now.
type Report struct {
	Tenant string       `json:"tenant"`
	Orders int          `json:"orders"`
	Rows   []SummaryRow `json:"rows"`
	At     time.Time    `json:"at"`
}

// summary serves GET /reports/summary, the batch report: the heaviest
// request, and the first to be shed.
func (s *Service) summary(w http.ResponseWriter, r *http.Request) {
	tenant := requestTenant(r)
	rows, err := bulwark.Call(r.Context(), s.reports, func(ctx context.Context) ([]SummaryRow, error) {
		return s.repo.Summary(ctx, tenant)
	})
	switch {
	case errors.Is(err, timeout.ErrTimeout) && r.Context().Err() == nil:
		// The repository is too slow for reports now: come back later.
		w.Header().Set("Retry-After", "1")
		problem(w, r, http.StatusServiceUnavailable, "report timed out", "The report took too long; try again later.")
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	rep := Report{Tenant: tenant, Rows: rows, At: s.clk.Now().UTC()}
	for _, row := range rows {
		rep.Orders += row.Orders
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rep)
}
