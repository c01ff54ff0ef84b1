package outlier

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
	"github.com/bulwark-go/bulwark/internal/notify"
)

// Rules selects the ejection rules of a Detector; combine them with |.
type Rules uint8

// The ejection rules, named as in Envoy's outlier detection.
const (
	// RuleConsecutiveFailures ejects an endpoint after
	// Config.ConsecutiveFailures failures in a row, at once, from
	// Record; if MaxEjectionPercent refuses, the next as many failures in a
	// row try again. Failures while ejected do not count.
	RuleConsecutiveFailures Rules = 1 << iota
	// RuleConsecutiveGatewayFailures ejects an endpoint after
	// Config.ConsecutiveGatewayFailures gateway failures (502, 503,
	// 504 or a connection error) in a row, at once, from Record. Any other
	// outcome breaks the run.
	RuleConsecutiveGatewayFailures
	// RuleSuccessRate ejects, at each interval, the endpoints whose success rate
	// is below mean − SuccessRateStdevFactor × stdev of the endpoints that
	// saw at least SuccessRateRequestVolume calls, when there are at least
	// SuccessRateMinimumHosts of them.
	RuleSuccessRate
	// RuleFailurePercentage ejects, at each interval, the endpoints whose
	// failure percentage is at least FailurePercentageThreshold among those
	// that saw at least FailurePercentageRequestVolume calls, when there are
	// at least FailurePercentageMinimumHosts of them.
	RuleFailurePercentage

	allRules = RuleConsecutiveFailures | RuleConsecutiveGatewayFailures | RuleSuccessRate | RuleFailurePercentage
)

// Reasons of ejection events (Event.Reason).
const (
	reasonConsecutive = "consecutive_failures"
	reasonGateway     = "consecutive_gateway_failures"
	reasonSuccessRate = "success_rate"
	reasonFailurePct  = "failure_percentage"
)

// Config configures a Detector. The zero value gives Envoy's
// defaults: consecutive-failure and success-rate ejection, evaluated every
// 10 s, ejecting for 30 s × the number of ejections up to 300 s, and at most
// 10 % of the endpoints at a time.
type Config struct {
	// Name identifies the detector in events.
	Name string

	// Rules selects the ejection rules. If zero, RuleConsecutiveFailures |
	// RuleSuccessRate, the rules Envoy enforces by default.
	Rules Rules

	// Interval is the time between evaluations of the success-rate and
	// failure-percentage rules; each evaluation looks at the calls recorded
	// since the previous one. If zero, 10 s. Negative is an error.
	Interval time.Duration
	// BaseEjectionTime is the ejection time of a first ejection; the n-th
	// ejection in a row lasts n × BaseEjectionTime. If zero, 30 s. Negative
	// is an error.
	BaseEjectionTime time.Duration
	// MaxEjectionTime caps n × BaseEjectionTime. If zero, the larger of
	// 300 s and BaseEjectionTime. Less than BaseEjectionTime is an error.
	MaxEjectionTime time.Duration
	// EjectionJitter is the largest random time added to each ejection,
	// so that endpoints ejected together do not return together. If zero,
	// none. Negative is an error.
	EjectionJitter time.Duration
	// MaxEjectionPercent is the largest share of the endpoints, in percent,
	// that may be ejected at once; an ejection that would exceed it does not
	// happen. The share is of the current members, those of the last
	// SetEndpoints (or, before any, of the endpoints Record has seen). If
	// zero, 10. Outside [0, 100] is an error.
	MaxEjectionPercent int
	// AlwaysEjectOne allows one ejection even when MaxEjectionPercent of the
	// fleet is less than one endpoint (Envoy's always_eject_one_host). With
	// the default 10 %, a fleet of fewer than ten endpoints ejects nothing
	// without it: set it for small fleets, as the examples' proxy does
	// (Envoy and gRPC let one ejection past the percentage by default).
	AlwaysEjectOne bool

	// ConsecutiveFailures is the run of failures that ejects an endpoint
	// under the RuleConsecutiveFailures rule. If zero, 5. Negative is an error.
	ConsecutiveFailures int
	// ConsecutiveGatewayFailures is the run of gateway failures that ejects
	// an endpoint under the RuleConsecutiveGatewayFailures rule. If zero, 5.
	// Negative is an error.
	ConsecutiveGatewayFailures int

	// SuccessRateStdevFactor is k in mean − k × stdev. If zero, 1.9.
	// Negative or not finite is an error.
	SuccessRateStdevFactor float64
	// SuccessRateMinimumHosts is the number of endpoints with enough calls
	// needed for the success-rate rule to run. If zero, 5. Negative is an
	// error.
	SuccessRateMinimumHosts int
	// SuccessRateRequestVolume is the number of calls in an interval an
	// endpoint needs to take part in the success-rate rule. If zero, 100.
	// Negative is an error.
	SuccessRateRequestVolume int

	// FailurePercentageThreshold is the failure percentage at or above
	// which the RuleFailurePercentage rule ejects. If zero, 85. Outside
	// [0, 100] is an error.
	FailurePercentageThreshold int
	// FailurePercentageMinimumHosts is the number of endpoints with enough
	// calls needed for the failure-percentage rule to run. If zero, 5.
	// Negative is an error.
	FailurePercentageMinimumHosts int
	// FailurePercentageRequestVolume is the number of calls in an interval
	// an endpoint needs to take part in the failure-percentage rule. If
	// zero, 50. Negative is an error.
	FailurePercentageRequestVolume int

	// Listener, if not nil, is told of ejections and returns. A detector
	// among a balancer's Followers needs none: it reports to the balancer.
	Listener Listener
	// Observer, if not nil, receives EventEjected and EventUnejected, and
	// EventMisuse for a Record with an empty Addr.
	Observer bulwark.Observer
	// Clock is the time source. If nil, the wall clock.
	Clock bulwark.Clock
}

// ErrInvalidConfig is wrapped by the error of New for a Config it cannot use.
var ErrInvalidConfig = errors.New("outlier: invalid config")

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("outlier: closed")

// ErrAttached is returned by Attach when the Detector reports to a balancer
// already.
var ErrAttached = errors.New("outlier: already attached to a balancer")

// ErrStarted is returned by a second Start.
var ErrStarted = errors.New("outlier: already started")

// Listener is told of ejections as they happen, outside any lock, in order
// for each endpoint, from one goroutine at a time; it must not block. A
// Detector among a balancer's Followers reports to the balancer directly,
// and needs a Listener only for the caller's own use.
type Listener interface {
	// EjectionChanged: ejected is true when ep is ejected, false when it
	// comes back (or is removed while ejected).
	EjectionChanged(ep bulwark.Endpoint, ejected bool)
}

// validate checks a new endpoint set: every endpoint valid, no Addr twice.
func validate(eps []bulwark.Endpoint) error {
	seen := make(map[string]struct{}, len(eps))
	for _, ep := range eps {
		if err := ep.Validate(); err != nil {
			return fmt.Errorf("outlier: %w", err)
		}
		if _, dup := seen[ep.Addr]; dup {
			return fmt.Errorf("outlier: %w %q: duplicate address", bulwark.ErrInvalidEndpoint, ep.Addr)
		}
		seen[ep.Addr] = struct{}{}
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

func (c *Config) normalize() error {
	if c.Rules&^allRules != 0 {
		return invalid("unknown rules %#x", uint8(c.Rules&^allRules))
	}
	if c.Rules == 0 {
		c.Rules = RuleConsecutiveFailures | RuleSuccessRate
	}
	durs := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"Interval", &c.Interval, 10 * time.Second},
		{"BaseEjectionTime", &c.BaseEjectionTime, 30 * time.Second},
		{"EjectionJitter", &c.EjectionJitter, 0},
	}
	for _, f := range durs {
		if *f.d < 0 {
			return invalid("%s %v is negative", f.name, *f.d)
		}
		if *f.d == 0 {
			*f.d = f.def
		}
	}
	switch {
	case c.MaxEjectionTime < 0:
		return invalid("MaxEjectionTime %v is negative", c.MaxEjectionTime)
	case c.MaxEjectionTime == 0:
		c.MaxEjectionTime = max(300*time.Second, c.BaseEjectionTime)
	case c.MaxEjectionTime < c.BaseEjectionTime:
		return invalid("MaxEjectionTime %v is less than BaseEjectionTime %v", c.MaxEjectionTime, c.BaseEjectionTime)
	}
	pcts := []struct {
		name string
		p    *int
		def  int
	}{
		{"MaxEjectionPercent", &c.MaxEjectionPercent, 10},
		{"FailurePercentageThreshold", &c.FailurePercentageThreshold, 85},
	}
	for _, f := range pcts {
		if *f.p < 0 || *f.p > 100 {
			return invalid("%s %d is outside [0, 100]", f.name, *f.p)
		}
		if *f.p == 0 {
			*f.p = f.def
		}
	}
	ints := []struct {
		name string
		n    *int
		def  int
	}{
		{"ConsecutiveFailures", &c.ConsecutiveFailures, 5},
		{"ConsecutiveGatewayFailures", &c.ConsecutiveGatewayFailures, 5},
		{"SuccessRateMinimumHosts", &c.SuccessRateMinimumHosts, 5},
		{"SuccessRateRequestVolume", &c.SuccessRateRequestVolume, 100},
		{"FailurePercentageMinimumHosts", &c.FailurePercentageMinimumHosts, 5},
		{"FailurePercentageRequestVolume", &c.FailurePercentageRequestVolume, 50},
	}
	for _, f := range ints {
		if *f.n < 0 {
			return invalid("%s %d is negative", f.name, *f.n)
		}
		if *f.n == 0 {
			*f.n = f.def
		}
	}
	if c.ConsecutiveFailures > math.MaxUint32 || c.ConsecutiveGatewayFailures > math.MaxUint32 {
		return invalid("consecutive failure thresholds must fit in 32 bits")
	}
	switch k := c.SuccessRateStdevFactor; {
	case k < 0 || math.IsNaN(k) || math.IsInf(k, 0):
		return invalid("SuccessRateStdevFactor %v is negative or not finite", k)
	case k == 0:
		c.SuccessRateStdevFactor = 1.9
	}
	c.Clock = base.ClockOrWall(c.Clock)
	return nil
}

// Detector ejects endpoints whose real calls fail, as Envoy's outlier
// detection does. Callers feed it with Record, one call outcome at a time.
// SetEndpoints gives it the set of endpoints: among a balancer's Followers
// (it is a balancer.Judge and a balancer.Recorder), the balancer does, feeds
// it from Pick.Done, and hears of its ejections; standalone, the caller
// may, or else endpoints are added on their first Record and never
// forgotten. Consecutive-failure rules
// eject at once from Record; success-rate and failure-percentage rules run at
// each interval, in the goroutine that Start starts, or when the caller calls
// EvaluateAt. An ejection lasts BaseEjectionTime × the endpoint's number of
// ejections (capped, plus jitter); the number decreases by one for each
// whole interval the endpoint spends back in service, so a flapping endpoint
// stays out longer and longer while a recovered one is forgiven.
//
// Use New; the zero Detector is not usable. A Detector is safe for
// concurrent use by multiple goroutines; Record takes no lock.
type Detector struct {
	cfg      Config // normalized; read-only after New
	clk      bulwark.Clock
	consec   uint32 // cfg.ConsecutiveFailures
	consecGW uint32 // cfg.ConsecutiveGatewayFailures
	wall     bool   // clk is the wall clock

	hosts atomic.Pointer[map[string]*host] // copy on write under mu; read by Record without lock

	mu       sync.Mutex                   // guards the fields below and the unexported state of every host
	members  bool                         // SetEndpoints was called: Record adds no endpoint
	report   func(bulwark.Endpoint, bool) // the attached balancer's; nil if none
	synced   bool                         // SetEndpoints ran since Attach
	ejected  int                          // number of ejected hosts
	lastEval time.Time                    // time of the previous evaluation
	notes    notify.Notifier
	listen   func(bulwark.Endpoint, bool) // cfg.Listener's EjectionChanged, or nil
	started  bool
	closed   bool
	cancel   context.CancelFunc
	wake     chan struct{} // buffered 1: the earliest return time changed
	wg       sync.WaitGroup
	cands    []candidate // scratch for evaluations
	armedAt  time.Time   // when the run goroutine's timer fires
	woken    bool        // a wake was sent and the run goroutine has not re-armed since
	idle     *sync.Cond  // on mu; broadcast after each run of the goroutine
}

// host is the state of one endpoint.
type host struct {
	ep bulwark.Endpoint

	// Written by Record without lock.
	succ     atomic.Uint64 // successes, ever
	fail     atomic.Uint64 // failures, ever
	consec   atomic.Uint32 // failures in a row
	consecGW atomic.Uint32 // gateway failures in a row

	// Guarded by Detector.mu.
	lastSucc, lastFail uint64    // succ and fail at the previous evaluation
	ejections          int       // multiplier of the ejection time
	ejectedUntil       time.Time // zero when not ejected
	returned           time.Time // end of the last ejection
	removed            bool
}

type candidate struct {
	h    *host
	rate float64 // success rate or failure percentage, in percent
}

// New returns a detector for cfg. It returns an error wrapping
// ErrInvalidConfig if cfg has a negative time or threshold, a percentage
// outside [0, 100], MaxEjectionTime below BaseEjectionTime, or unknown Rules.
func New(cfg Config) (*Detector, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	d := &Detector{cfg: cfg, clk: cfg.Clock, wake: make(chan struct{}, 1), wall: cfg.Clock == bulwark.WallClock(),
		consec: uint32(cfg.ConsecutiveFailures), consecGW: uint32(cfg.ConsecutiveGatewayFailures)}
	d.idle = sync.NewCond(&d.mu)
	m := map[string]*host{}
	d.hosts.Store(&m)
	d.lastEval = d.clk.Now()
	if cfg.Listener != nil {
		d.listen = cfg.Listener.EjectionChanged
	}
	return d, nil
}

// Record counts one call outcome of ep: Success, Failure, or Neutral (which
// is ignored). gateway marks a failure as a gateway failure (502, 503, 504 or
// a connection error); ep.Addr identifies the endpoint. An endpoint that is
// not a member is ignored once SetEndpoints was called (the late outcome of
// a call to a removed endpoint, say); before that, an endpoint seen for the
// first time is added (which copies the endpoint map, O(endpoints)). An
// empty Addr is ignored and reported to the Observer as EventMisuse.
//
// Record takes no lock and does not allocate for a known endpoint. A failure
// that completes a run of consecutive failures ejects ep before Record
// returns: the attached balancer is told under the detector's lock (it only
// marks the endpoint, and rebuilds elsewhere), and the Listener and the
// Observer on the caller's goroutine (or on the one already telling them of
// an earlier change).
func (d *Detector) Record(ep bulwark.Endpoint, o bulwark.Outcome, gateway bool) {
	h := (*d.hosts.Load())[ep.Addr]
	if h == nil {
		if h = d.add(ep); h == nil {
			return
		}
	}
	switch o {
	case bulwark.Success:
		h.succ.Add(1)
		if h.consec.Load() != 0 {
			h.consec.Store(0)
		}
		if h.consecGW.Load() != 0 {
			h.consecGW.Store(0)
		}
	case bulwark.Failure:
		h.fail.Add(1)
		n := h.consec.Add(1)
		var g uint32
		if gateway {
			g = h.consecGW.Add(1)
		} else if h.consecGW.Load() != 0 {
			h.consecGW.Store(0)
		}
		// Every threshold-th failure in a row tries to eject, so that a run
		// that continues past a refused ejection (the cap was reached)
		// tries again.
		rules := d.cfg.Rules
		if n%d.consec == 0 && rules&RuleConsecutiveFailures != 0 {
			d.ejectNow(h, reasonConsecutive)
		} else if g != 0 && g%d.consecGW == 0 && rules&RuleConsecutiveGatewayFailures != 0 {
			d.ejectNow(h, reasonGateway)
		}
	}
}

// add adds ep, or returns the host another goroutine added meanwhile.
func (d *Detector) add(ep bulwark.Endpoint) *host {
	if ep.Addr == "" {
		if obs := d.cfg.Observer; obs != nil {
			obs.Observe(bulwark.Event{Kind: bulwark.EventMisuse, Component: bulwark.ComponentOutlier,
				Name: d.cfg.Name, Reason: "empty_address"})
		}
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old := *d.hosts.Load()
	if h := old[ep.Addr]; h != nil || d.members {
		return h
	}
	m := make(map[string]*host, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	h := &host{ep: ep}
	m[ep.Addr] = h
	d.hosts.Store(&m)
	return h
}

// SetEndpoints makes eps the detector's members, compared by Addr: from
// then on Record ignores other endpoints, and MaxEjectionPercent is a share
// of eps. A member that stays keeps its counts and ejection, and takes its
// new Zone and Weight; a new one starts afresh, in service; one that leaves
// is forgotten, and if it was ejected, the Listener is told it is not any
// more (the balancer, which removed it, is not). An endpoint that comes back
// starts afresh. If the set shrank so that more members are ejected than
// MaxEjectionPercent of it allows, those whose ejection ends soonest come
// back now (Event.Reason "cap").
//
// It returns an error wrapping bulwark.ErrInvalidEndpoint, with the members
// unchanged, for an invalid endpoint or an Addr that appears twice.
func (d *Detector) SetEndpoints(eps []bulwark.Endpoint) error {
	if err := validate(eps); err != nil {
		return err
	}
	d.mu.Lock()
	old := *d.hosts.Load()
	m := make(map[string]*host, len(eps))
	for _, ep := range eps {
		h := old[ep.Addr]
		if h == nil {
			h = &host{ep: ep}
		} else {
			h.ep = ep
			if d.report != nil && !d.synced && !h.ejectedUntil.IsZero() {
				d.report(ep, false) // ejected before the balancer attached
			}
		}
		m[ep.Addr] = h
	}
	for addr, h := range old {
		if _, ok := m[addr]; ok {
			continue
		}
		h.removed = true
		if !h.ejectedUntil.IsZero() {
			d.unejectLocked(h, "removed")
		}
	}
	d.hosts.Store(&m)
	d.members, d.synced = true, true
	d.trimLocked()
	d.mu.Unlock()
	d.flush()
	return nil
}

// trimLocked brings back, soonest return first, the ejected members beyond
// MaxEjectionPercent of the members: after the set shrank, the cap holds for
// the current members too.
func (d *Detector) trimLocked() {
	total := len(*d.hosts.Load())
	allowed := d.cfg.MaxEjectionPercent * total / 100
	if d.cfg.AlwaysEjectOne {
		allowed = max(allowed, 1)
	}
	for d.ejected > allowed {
		var first *host
		for _, h := range *d.hosts.Load() {
			if !h.ejectedUntil.IsZero() && (first == nil || h.ejectedUntil.Before(first.ejectedUntil)) {
				first = h
			}
		}
		d.unejectLocked(first, "cap")
	}
}

// Attach binds the detector to a balancer, as a balancer.Judge: New of
// package balancer calls it for a detector among its Followers. From then
// on the detector calls report, under its lock, with each ejection
// (healthy false) and return (healthy true) of a member; endpoints it
// ejected already are reported at the next SetEndpoints. pending is false:
// a new endpoint is in service until it is ejected. Attach returns
// ErrAttached if the detector reports to a balancer already.
func (d *Detector) Attach(report func(ep bulwark.Endpoint, healthy bool)) (pending bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.report != nil {
		return false, ErrAttached
	}
	if report == nil {
		return false, invalid("Attach with a nil report")
	}
	d.report, d.synced = report, false
	return false, nil
}

// Ejected reports whether ep (compared by Addr) is ejected now.
func (d *Detector) Ejected(ep bulwark.Endpoint) bool {
	h := (*d.hosts.Load())[ep.Addr]
	if h == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return !h.ejectedUntil.IsZero()
}

// ejectNow ejects h for a consecutive-failure rule, if the cap allows.
func (d *Detector) ejectNow(h *host, reason string) {
	now := d.clk.Now()
	d.mu.Lock()
	d.ejectLocked(h, now, reason)
	d.mu.Unlock()
	d.flush()
}

// canEjectLocked reports whether one more host may be ejected.
func (d *Detector) canEjectLocked() bool {
	total := len(*d.hosts.Load())
	if (d.ejected+1)*100 <= d.cfg.MaxEjectionPercent*total {
		return true
	}
	return d.cfg.AlwaysEjectOne && d.ejected == 0
}

// ejectionTime returns the ejection time of the n-th ejection, jitter aside.
func (d *Detector) ejectionTime(n int) time.Duration {
	base, limit := d.cfg.BaseEjectionTime, d.cfg.MaxEjectionTime
	if n <= 0 {
		return 0
	}
	if time.Duration(n) > limit/base {
		return limit
	}
	return min(base*time.Duration(n), limit)
}

// ejectLocked ejects h if it is in service and the cap allows; it reports
// whether it did.
func (d *Detector) ejectLocked(h *host, now time.Time, reason string) bool {
	if h.removed || !h.ejectedUntil.IsZero() || !d.canEjectLocked() {
		return false
	}
	h.ejections++
	dur := d.ejectionTime(h.ejections)
	if j := d.cfg.EjectionJitter; j > 0 {
		dur += rand.N(j + 1)
	}
	h.ejectedUntil = now.Add(dur)
	d.ejected++
	h.consec.Store(0)
	h.consecGW.Store(0)
	if d.report != nil {
		d.report(h.ep, false)
	}
	nt := notify.Notice{Ep: h.ep, On: true, Listen: d.cfg.Listener != nil}
	if d.cfg.Observer != nil {
		nt.Observe = true
		nt.Event = bulwark.Event{Kind: bulwark.EventEjected, Component: bulwark.ComponentOutlier,
			Name: d.cfg.Name, Endpoint: h.ep, Delay: dur, Reason: reason, Count: h.ejections}
	}
	d.notes.Queue = append(d.notes.Queue, nt)
	if d.started {
		d.woken = true
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return true
}

func (d *Detector) unejectLocked(h *host, reason string) {
	h.returned = h.ejectedUntil
	h.ejectedUntil = time.Time{}
	h.consec.Store(0) // failures while out do not count against its return
	h.consecGW.Store(0)
	d.ejected--
	if d.report != nil && !h.removed {
		d.report(h.ep, true)
	}
	nt := notify.Notice{Ep: h.ep, On: false, Listen: d.cfg.Listener != nil}
	if d.cfg.Observer != nil {
		nt.Observe = true
		nt.Event = bulwark.Event{Kind: bulwark.EventUnejected, Component: bulwark.ComponentOutlier,
			Name: d.cfg.Name, Endpoint: h.ep, Reason: reason, Count: h.ejections}
	}
	d.notes.Queue = append(d.notes.Queue, nt)
}

func (d *Detector) flush() {
	d.notes.Flush(&d.mu, d.listen, d.cfg.Observer)
}

// returnExpiredLocked brings back the hosts whose ejection time ended at or
// before now, and returns the earliest ejection end still ahead (zero if
// none).
func (d *Detector) returnExpiredLocked(now time.Time) time.Time {
	var next time.Time
	if d.ejected == 0 {
		return next
	}
	for _, h := range *d.hosts.Load() {
		if h.ejectedUntil.IsZero() {
			continue
		}
		if !h.ejectedUntil.After(now) {
			d.unejectLocked(h, "expired")
			continue
		}
		if next.IsZero() || h.ejectedUntil.Before(next) {
			next = h.ejectedUntil
		}
	}
	return next
}

// EvaluateAt runs one evaluation at time now, as the goroutine started by
// Start does every Interval: it brings back the endpoints whose ejection time
// has ended, lowers the ejection count of each endpoint in service, and
// applies the success-rate and failure-percentage rules to the calls recorded
// since the previous evaluation. Listener and Observer are called before it
// returns, on the caller's goroutine.
//
// EvaluateAt is the explicit-time twin of the interval, for callers that
// drive the detector themselves instead of calling Start; alongside Start,
// it restarts the current interval.
func (d *Detector) EvaluateAt(now time.Time) {
	d.mu.Lock()
	d.evaluateLocked(now)
	d.mu.Unlock()
	d.flush()
}

func (d *Detector) evaluateLocked(now time.Time) {
	prev := d.lastEval
	d.lastEval = now
	d.returnExpiredLocked(now)
	hosts := *d.hosts.Load()
	cfg := &d.cfg
	srCands, fpCands := d.cands[:0], []candidate(nil)
	var sum float64
	for _, h := range hosts {
		s, f := h.succ.Load(), h.fail.Load()
		ds, df := s-h.lastSucc, f-h.lastFail
		h.lastSucc, h.lastFail = s, f
		if !h.ejectedUntil.IsZero() {
			continue
		}
		if h.ejections > 0 && !h.returned.After(prev) {
			h.ejections-- // a whole interval in service
		}
		vol := ds + df
		if vol == 0 {
			continue
		}
		rate := 100 * float64(ds) / float64(vol)
		if cfg.Rules&RuleSuccessRate != 0 && vol >= uint64(cfg.SuccessRateRequestVolume) {
			srCands = append(srCands, candidate{h, rate})
			sum += rate
		}
		if cfg.Rules&RuleFailurePercentage != 0 && vol >= uint64(cfg.FailurePercentageRequestVolume) {
			fpCands = append(fpCands, candidate{h, 100 - rate})
		}
	}
	var eject []candidate
	if n := len(srCands); n > 0 && n >= cfg.SuccessRateMinimumHosts {
		mean := sum / float64(n)
		var sq float64
		for _, c := range srCands {
			sq += (c.rate - mean) * (c.rate - mean)
		}
		threshold := mean - cfg.SuccessRateStdevFactor*math.Sqrt(sq/float64(n))
		for _, c := range srCands {
			if c.rate < threshold {
				eject = append(eject, candidate{c.h, c.rate})
			}
		}
	}
	srEjects := len(eject)
	if n := len(fpCands); n > 0 && n >= cfg.FailurePercentageMinimumHosts {
		for _, c := range fpCands {
			if c.rate >= float64(cfg.FailurePercentageThreshold) {
				eject = append(eject, candidate{c.h, 100 - c.rate})
			}
		}
	}
	// The worst first, so that the cap keeps the worst out.
	sr, fp := eject[:srEjects], eject[srEjects:]
	byRate := func(a, b candidate) int {
		switch {
		case a.rate < b.rate:
			return -1
		case a.rate > b.rate:
			return 1
		}
		return 0
	}
	slices.SortStableFunc(sr, byRate)
	slices.SortStableFunc(fp, byRate)
	for _, c := range sr {
		d.ejectLocked(c.h, now, reasonSuccessRate)
	}
	for _, c := range fp {
		d.ejectLocked(c.h, now, reasonFailurePct)
	}
	clear(srCands)
	d.cands = srCands[:0]
}

// Start starts the goroutine that evaluates every Interval and brings
// ejected endpoints back when their time ends, until ctx is done or Close is
// called. It returns ErrStarted if called twice and ErrClosed after Close.
func (d *Detector) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return ErrClosed
	case d.started:
		return ErrStarted
	}
	d.started = true
	ctx, d.cancel = context.WithCancel(ctx)
	now := d.clk.Now()
	d.lastEval = now
	timer := d.clk.NewTimer(d.cfg.Interval)
	d.armedAt = now.Add(d.cfg.Interval)
	if d.ejected > 0 { // ejected before Start: time their return
		d.woken = true
		d.wake <- struct{}{}
	}
	d.wg.Add(1)
	go d.run(ctx, timer)
	return nil
}

func (d *Detector) run(ctx context.Context, timer bulwark.Timer) {
	defer d.wg.Done()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		case <-d.wake:
		}
		d.mu.Lock()
		for {
			now := d.clk.Now()
			if now.Sub(d.lastEval) >= d.cfg.Interval {
				d.evaluateLocked(now)
			}
			next := d.lastEval.Add(d.cfg.Interval)
			if ret := d.returnExpiredLocked(now); !ret.IsZero() && ret.Before(next) {
				next = ret
			}
			timer.Reset(next.Sub(now))
			d.armedAt = next
			// A clock that moved after now was read made the timer count
			// from a later time: look again.
			if d.wall || d.clk.Now().Equal(now) {
				break
			}
		}
		d.woken = false
		d.mu.Unlock()
		d.flush()
		d.mu.Lock()
		d.idle.Broadcast()
		d.mu.Unlock()
	}
}

// Close stops the goroutine started by Start and waits for it to return.
// Record and EvaluateAt keep working after Close. Close returns nil; calling
// it again does nothing.
func (d *Detector) Close() error {
	d.mu.Lock()
	d.closed = true
	cancel := d.cancel
	d.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	d.wg.Wait()
	return nil
}
