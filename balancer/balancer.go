package balancer

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

// Algorithm chooses among the eligible endpoints.
type Algorithm uint8

const (
	// RoundRobin is smooth weighted round robin, as nginx does it. One
	// period of its schedule (the sum of the weights divided by their
	// greatest common divisor) gives each endpoint exactly its weight, spread
	// evenly rather than in bursts, and any run of consecutive positions
	// gives each endpoint its weighted share to within 2.
	//
	// So that concurrent picks do not contend on one counter, picks walk the
	// schedule on 8 stripes, each in order from its own starting point, and
	// a pick takes the stripe of its goroutine's stack address. Hence, while
	// the eligible endpoints and their weights stay the same: the picks of
	// one stripe (typically one goroutine's, while its stack does not move)
	// follow the schedule exactly; and over any run of picks, however
	// concurrent, each endpoint gets its weighted share to within 16 (2 per
	// stripe). Strict alternation between two endpoints is thus not
	// guaranteed across goroutines. A set whose schedule would be longer
	// than 65,536 positions, or cost more than 2^23 steps to build, is
	// sampled at random in proportion to the weights instead. It is the zero
	// value.
	RoundRobin Algorithm = iota
	// LeastRequest samples two endpoints in proportion to their weights (the
	// power of two choices) and takes the one with fewer requests in flight per
	// unit of weight, raised to ActiveRequestBias as in Envoy.
	LeastRequest
	// PeakEWMA samples two endpoints as LeastRequest does and takes the one
	// with the lower latency estimate × (requests in flight + 1), as in Finagle
	// and Linkerd. The estimate jumps up to every slower observation and decays
	// towards faster ones over DecayTime.
	PeakEWMA
	// ConsistentHash sends each key to the endpoint that owns it on a
	// consistent-hash ring, with bounded loads: an owner with more than
	// LoadFactor × its weighted share of the requests in flight is passed over
	// for the next owner on the ring, as is an ineligible one.
	ConsistentHash
	// Random picks at random in proportion to the weights.
	Random
	numAlgorithms
)

var algorithmNames = [...]string{
	RoundRobin:     "round_robin",
	LeastRequest:   "least_request",
	PeakEWMA:       "peak_ewma",
	ConsistentHash: "consistent_hash",
	Random:         "random",
}

// String returns the algorithm's name in snake case, as in Event.Reason of
// EventPick: "round_robin", "least_request", "peak_ewma", "consistent_hash"
// or "random".
func (a Algorithm) String() string {
	if a < numAlgorithms {
		return algorithmNames[a]
	}
	return fmt.Sprintf("algorithm(%d)", uint8(a))
}

var (
	// ErrNoEndpoints is returned by Pick when the endpoint set is empty.
	ErrNoEndpoints = errors.New("balancer: no endpoints")
	// ErrUnavailable is returned by Pick when endpoints exist but none can
	// take the call: none is eligible and panic mode is off, or the
	// breakers and limiters refused it on every endpoint that could take it.
	// In the second case the error also wraps the refusal with the shortest
	// RetryAfter, so errors.As finds the breaker's or the limiter's error
	// and when to try again; its message says when the limits refused it.
	ErrUnavailable = errors.New("balancer: no eligible endpoint")
	// ErrInvalidConfig is wrapped by the error of New for a Config it
	// refuses.
	ErrInvalidConfig = errors.New("balancer: invalid config")
)

// Breaker is a per-endpoint circuit breaker as the balancer uses it;
// *breaker.Breaker satisfies it. While Acquire refuses, the endpoint is not
// eligible. The balancer calls Release exactly once for each successful
// Acquire, from Pick.Done.
type Breaker interface {
	// Acquire asks to make one call. On error nothing is to be released.
	Acquire() (token uint64, err error)
	// Release reports the outcome and latency of the call admitted with token.
	Release(token uint64, o bulwark.Outcome, latency time.Duration)
}

// Limiter is a per-endpoint concurrency limit as the balancer uses it;
// *limit.Limiter satisfies it (its TryAcquire and Release): an adaptive
// limit that learns each endpoint's capacity from the latency and outcome of
// its calls. Config.Limiter gives each endpoint its own:
//
//	lb, err := balancer.New(balancer.Config{Endpoints: eps,
//		Limiter: func(ep bulwark.Endpoint) (balancer.Limiter, error) {
//			return limit.New(limit.Config{Name: "orders/" + ep.Addr, Headroom: -1})
//		}})
//
// A Limiter bounds the calls in flight on its endpoint. An endpoint whose
// Limiter refuses is passed over, for this pick only, for another eligible
// endpoint with room: calls spill over to the others rather than queue on a
// slow one. When every endpoint that could take the call refuses, Pick fails
// at once with ErrUnavailable, wrapping the refusal and its RetryAfter. The
// balancer calls Release exactly once for each successful TryAcquire, from
// Pick.Done: that releases the slot and tells the limiter how the call went;
// Result.Overload marks a call the endpoint refused as too busy.
// Transport does not retry a request that the limits refused.
type Limiter interface {
	// TryAcquire takes a slot for one call, or refuses at once with an
	// error that says why and, with a method RetryAfter() time.Duration,
	// when a slot may be free. It is called on every pick of the endpoint,
	// which may then go elsewhere, so it should neither allocate nor report
	// a refusal.
	TryAcquire() (token uint64, err error)
	// Release ends the call admitted with token: o is how it went (see
	// Result), and overload tells a call that timed out or that the
	// endpoint refused as too busy (Result.Overload).
	Release(token uint64, o bulwark.Outcome, overload bool)
}

// Follower follows the balancer's endpoint set, so that the set is given in
// one place: New and every Update call SetEndpoints with the whole new set.
// *healthcheck.Checker, *outlier.Detector and *breaker.Group
// satisfy it.
//
// The balancer calls SetEndpoints from New and Update, after it has taken
// the set itself, one follower after another in the order of
// Config.Followers, with no balancer lock held; calls for successive sets
// never overlap. eps is the follower's own copy, valid and free of duplicate
// addresses. A follower compares endpoints by Addr, forgets those that are
// not in eps, and starts afresh with one that comes back. SetEndpoints must
// not call back into the Balancer's Update.
type Follower interface {
	SetEndpoints(eps []bulwark.Endpoint) error
}

// Judge is a Follower whose verdicts decide which endpoints may be picked,
// such as an active health checker or an outlier detector;
// *healthcheck.Checker and *outlier.Detector satisfy it. New binds
// each Judge of Config.Followers with Attach before its first SetEndpoints.
//
// The judge calls report(ep, healthy) whenever its verdict on a member ep
// changes; an endpoint is eligible while every judge finds it healthy.
// report marks the endpoint at once, for every pick that follows, and
// rebuilds the snapshot (pools, schedules, panic mode, zone shares) before
// it returns; for a judge that is also a Recorder, and so may report from
// Pick.Done, a goroutine of the balancer rebuilds it instead, so that Done
// never does. report ignores an endpoint that is not a member, runs no user
// code (the balancer's Observer hears of a rebuild from the balancer's
// goroutine), never calls the judge back, and takes no lock that the
// balancer holds while it calls the judge: the judge may call it under its
// own lock, and should, so that a verdict on an endpoint never arrives after
// the SetEndpoints call that removed it has returned.
//
// Attach returns pending = true when an endpoint that joins the set is to
// wait for the judge's first verdict (as with an active checker's first
// probe): until then it is pending, neither picked nor counted against
// PanicThreshold. With pending = false, an endpoint starts healthy in the
// judge's eyes (as with an outlier detector). Attach returns an error if the
// judge cannot be bound, such as when it reports to another balancer already.
type Judge interface {
	Follower
	Attach(report func(ep bulwark.Endpoint, healthy bool)) (pending bool, err error)
}

// Recorder receives the outcome of every call, for passive outlier detection;
// *outlier.Detector satisfies it. A Follower that is also a
// Recorder is told of every call from Pick.Done: gateway marks a failure to
// reach the endpoint (a connect error, or 502, 503 or 504 from the endpoint).
// Record runs on the goroutine that calls Pick.Done and must not block.
type Recorder interface {
	Record(ep bulwark.Endpoint, o bulwark.Outcome, gateway bool)
}

// Config configures a Balancer. The zero Config is a round-robin balancer with
// no endpoints, to be filled by Update.
type Config struct {
	// Name identifies the balancer in events.
	Name string
	// Algorithm chooses among eligible endpoints. If zero, RoundRobin.
	Algorithm Algorithm
	// Endpoints is the initial endpoint set; Update replaces it. It may be
	// empty. New rejects it as Update would.
	Endpoints []bulwark.Endpoint

	// Zone is the caller's own zone or fault domain. If empty, picks ignore
	// zones. Otherwise picks stay among the endpoints of Zone while their
	// eligible share (by weight, pending endpoints left out) is at least
	// MinLocalShare, and spill over to the other zones in proportion when it
	// drops below.
	Zone string
	// MinLocalShare is the eligible share of the local zone's weight below
	// which picks spill to other zones: with a share s < MinLocalShare, a
	// fraction s/MinLocalShare of the picks stays local. If zero, 0.7. It must
	// be in (0, 1].
	MinLocalShare float64
	// PanicThreshold is the fraction of the judged endpoints (by count;
	// pending ones, which no judge has pronounced on yet, are left out) that
	// must be eligible; below it the balancer enters panic mode and picks
	// among all endpoints, ignoring verdicts and zones, as Envoy does. If
	// zero, 0.5. A negative value disables panic mode. It must not exceed 1.
	//
	// Outside panic mode, picks go to the eligible endpoints; when there is
	// none, to the pending ones (as at start-up, before the first probes
	// end); and when there is none of those either, Pick returns
	// ErrUnavailable.
	PanicThreshold float64
	// SlowStart is the window over which an endpoint ramps its weight up
	// linearly, in 20 steps, from a twentieth to all of it, from the moment
	// it becomes eligible: after Update added it, or when it comes back from
	// a judge's unhealthy verdict. The endpoints of the initial set, and of a
	// set that replaces an empty one, start at full weight when they first
	// become eligible. If zero, no slow start. It must not be negative.
	SlowStart time.Duration

	// ActiveRequestBias is, for LeastRequest, how much requests in flight
	// count against weight: an endpoint's load is inflight^bias / weight, as
	// Envoy's active_request_bias. If zero, 1. It must not be negative; use
	// Random to ignore load altogether.
	ActiveRequestBias float64
	// DecayTime is PeakEWMA's time constant: the estimate of an endpoint
	// that is not picked falls by a factor of e every DecayTime, so it is
	// how long an endpoint that looked slow is passed over before it is
	// tried again; and a faster observation moves the estimate by the
	// weight that the time since the previous one earns, 1 - e^(-dt /
	// DecayTime), or by 1/8 if that is more. If zero, 2s. It must not be
	// negative.
	DecayTime time.Duration
	// LoadFactor is ConsistentHash's bound c: no endpoint takes more than c ×
	// its weighted share of the requests in flight (rounded up) while another
	// owner can. If zero, 1.25. It must be at least 1.
	LoadFactor float64
	// VirtualNodes is ConsistentHash's number of ring points per endpoint. If
	// zero, 160. It must not be negative.
	VirtualNodes int

	// Followers follow the endpoint set, as Follower says: New and Update
	// pass them every new set. A Follower that is a Judge (an active
	// checker, an outlier detector) decides with the others which endpoints
	// are eligible; one that is a Recorder (an outlier detector) is told of
	// every call's outcome by Pick.Done. At most 32 may be Judges; a
	// follower must not appear twice.
	Followers []Follower
	// Breaker, if not nil, returns the circuit breaker of an endpoint, such
	// as one of a *breaker.Group that is also among Followers. It is called
	// when the endpoint joins the set, from New or Update, with no balancer
	// lock held. An error makes New or Update fail, wrapping it, with the
	// set unchanged; a nil Breaker means none for that endpoint.
	Breaker func(bulwark.Endpoint) (Breaker, error)
	// Limiter, if not nil, returns the concurrency limiter of an endpoint,
	// such as a new *limit.Limiter: an endpoint at its limit is passed over
	// for one with room, and a pick finds every endpoint that could take it
	// at its limit fails at once (see Limiter). It is called when the
	// endpoint joins the set, from New or Update, with no balancer lock
	// held: an endpoint removed and added again gets a new one. An error
	// makes New or Update fail, wrapping it, with the set unchanged; a nil
	// Limiter means no limit for that endpoint.
	Limiter func(bulwark.Endpoint) (Limiter, error)

	// Clock is the time source for slow start, PeakEWMA and the latencies
	// that Transport measures. If nil, the wall clock.
	Clock bulwark.Clock
	// Observer receives events: EventPick (sampled, see PickSample),
	// EventEndpointAdded and EventEndpointRemoved, EventStateChange on
	// entering ("panic") and leaving ("normal") panic mode, EventRejected
	// (Reason "limit", Err the error of Pick) when a pick fails because the
	// Limiters refused it, and EventMisuse for a second Done on one pick. If
	// nil, no events and no cost.
	Observer bulwark.Observer
	// PickSample is how many picks one EventPick stands for: each pick emits
	// one with probability 1/PickSample, and its Weight field is PickSample,
	// so summing Weight estimates the picks per endpoint. If zero, 1 (every
	// pick). It must not be negative.
	PickSample int
}

// Balancer spreads picks over a set of endpoints. It is safe for concurrent
// use by multiple goroutines: Pick and Pick.Done never block; Update
// serialises with itself and publishes a new snapshot that picks see whole or
// not at all.
//
// The Balancer owns the endpoint set: Update changes it, and passes it on to
// the Followers. A Judge's verdict takes effect for picks as soon as it is
// reported, through a per-endpoint atomic word; the snapshot is rebuilt by
// the report, or, for a verdict that may come from Pick.Done, by a goroutine
// that the Balancer starts when such a verdict changes and that ends when
// there is nothing left to rebuild; Close waits for it. The events of a
// rebuild that a verdict caused (EventStateChange) come from that goroutine;
// those of an Update, from its caller. Use New; the zero Balancer is not
// usable.
type Balancer struct {
	name       string
	algo       Algorithm
	clk        bulwark.Clock
	obs        bulwark.Observer
	newBreaker func(bulwark.Endpoint) (Breaker, error)
	newLimiter func(bulwark.Endpoint) (Limiter, error)
	followers  []Follower
	recorders  []Recorder
	gate       uint64 // the pending bits of a new endpoint's verdict
	zone       string
	minLocal   float64
	panicAt    float64 // negative: never
	slowStart  time.Duration
	bias       float64
	tau        float64 // DecayTime in ns
	loadFactor float64
	vnodes     int
	sample     uint64
	inflight   bool      // the algorithm reads in-flight counts
	heavyDone  bool      // Done has more to do than end the in-flight count
	base       time.Time // origin of the ns offsets below

	snap atomic.Pointer[snapshot]
	// gen counts verdict changes. A snapshot remembers gen as it was before
	// it read the verdicts; while gen has moved on, picks check the verdict
	// of the endpoint they choose.
	gen     atomic.Uint64
	members atomic.Pointer[map[string]*state] // the states by Addr, for reports; replaced, never changed
	// The counters below are written by picks: padding keeps them off the
	// cache lines of snap and gen and of each other.
	_      [64]byte
	coarse atomic.Int64 // ns since base, advanced by PeakEWMA's Done; read by its Pick
	_      [56]byte
	total  [numStripes]counter // requests in flight, for ConsistentHash: the sum of the stripes
	rr     [numPoolKinds][numStripes]stripe
	_      [64]byte

	upMu sync.Mutex // serialises Update, the followers' calls included

	mu      sync.Mutex         // guards the fields below and the mu-guarded fields of every state
	set     []bulwark.Endpoint // current endpoints, in Update order
	states  map[string]*state  // by Addr; replaced by Update, never changed once published
	hashIdx *hashIndex         // rebuilt when the set changes
	timer   bulwark.Timer      // pending slow-start refresh
	timerID uint64             // generation of timer
	panicky bool               // panic mode of the published snapshot
	pending []bulwark.Event    // events to emit after unlocking

	// pub is the publisher's state, changed by compare-and-swap: pubIdle,
	// pubRunning, pubDirty (running, and a verdict changed since it last
	// read them), or pubClosed (Close was called: publish on the reporting
	// goroutine).
	pub     atomic.Uint32
	pubMu   sync.Mutex // for pubDone
	pubDone *sync.Cond // broadcast when the publisher goes idle
	pubWG   sync.WaitGroup
}

// The states of Balancer.pub.
const (
	pubIdle uint32 = iota
	pubRunning
	pubDirty
	pubClosed
)

// state is the part of an endpoint that survives snapshots and updates; a
// new state is made when the endpoint joins the set.
type state struct {
	inflight atomic.Int64
	ewma     atomic.Uint64 // PeakEWMA estimate and its time, see stampShift
	// verdict holds the judges' verdicts: bit i (i < 32) is set while judge
	// i finds the endpoint unhealthy, and bit 32+i until judge i, if it
	// makes new endpoints pending, has pronounced on it. Zero is eligible.
	verdict atomic.Uint64
	// gated is set when breaker or limiter is not nil: every pick reads it,
	// so it sits on the cache line of the counters it reads too. Immutable.
	gated     bool
	breaker   Breaker // immutable
	limiter   Limiter // immutable
	rampStart int64   // guarded by Balancer.mu; ns since base; -1 when not ramping
	eligible  bool    // guarded by Balancer.mu; as the last snapshot built saw it
	fullStart bool    // guarded by Balancer.mu; joined an empty set and was never eligible: no ramp
	_         [stateSize - 74]byte
}

// The halves of a verdict.
const (
	downBits    = 1<<32 - 1
	pendingBits = downBits << 32
	maxJudges   = 32
)

// stateSize is the size of a state: a size class of its own, so that the
// counters of two endpoints never share a cache line.
const stateSize = 128

type stripe struct {
	n atomic.Uint64
	_ [56]byte
}

type counter struct {
	n atomic.Int64
	_ [56]byte
}

const (
	stripeBits = 3
	numStripes = 1 << stripeBits
	rampSteps  = 20
)

// New returns a Balancer configured by cfg, and binds the judges among its
// Followers to it. It returns an error, wrapping bulwark.ErrInvalidEndpoint
// for a bad endpoint, when cfg is invalid, when Breaker fails, when a judge
// cannot be attached, or when a follower refuses the initial set.
func New(cfg Config) (*Balancer, error) {
	b := &Balancer{
		name:       cfg.Name,
		algo:       cfg.Algorithm,
		clk:        base.ClockOrWall(cfg.Clock),
		obs:        cfg.Observer,
		newBreaker: cfg.Breaker,
		newLimiter: cfg.Limiter,
		zone:       cfg.Zone,
		minLocal:   cfg.MinLocalShare,
		panicAt:    cfg.PanicThreshold,
		slowStart:  cfg.SlowStart,
		bias:       cfg.ActiveRequestBias,
		loadFactor: cfg.LoadFactor,
		vnodes:     cfg.VirtualNodes,
		sample:     uint64(cfg.PickSample),
		states:     map[string]*state{},
	}
	b.pubDone = sync.NewCond(&b.pubMu)
	if cfg.Algorithm >= numAlgorithms {
		return nil, fmt.Errorf("%w: unknown algorithm %d", ErrInvalidConfig, uint8(cfg.Algorithm))
	}
	switch {
	case cfg.MinLocalShare == 0:
		b.minLocal = 0.7
	case !(cfg.MinLocalShare > 0 && cfg.MinLocalShare <= 1):
		return nil, fmt.Errorf("%w: MinLocalShare %v not in (0, 1]", ErrInvalidConfig, cfg.MinLocalShare)
	}
	switch {
	case cfg.PanicThreshold == 0:
		b.panicAt = 0.5
	case math.IsNaN(cfg.PanicThreshold) || cfg.PanicThreshold > 1:
		return nil, fmt.Errorf("%w: PanicThreshold %v above 1", ErrInvalidConfig, cfg.PanicThreshold)
	}
	if cfg.SlowStart < 0 {
		return nil, fmt.Errorf("%w: negative SlowStart %v", ErrInvalidConfig, cfg.SlowStart)
	}
	switch {
	case cfg.ActiveRequestBias == 0:
		b.bias = 1
	case !(cfg.ActiveRequestBias > 0) || math.IsInf(cfg.ActiveRequestBias, 1):
		return nil, fmt.Errorf("%w: ActiveRequestBias %v is not a positive number", ErrInvalidConfig, cfg.ActiveRequestBias)
	}
	switch {
	case cfg.DecayTime == 0:
		b.tau = float64(2 * time.Second)
	case cfg.DecayTime < 0:
		return nil, fmt.Errorf("%w: negative DecayTime %v", ErrInvalidConfig, cfg.DecayTime)
	default:
		b.tau = float64(cfg.DecayTime)
	}
	switch {
	case cfg.LoadFactor == 0:
		b.loadFactor = 1.25
	case !(cfg.LoadFactor >= 1):
		return nil, fmt.Errorf("%w: LoadFactor %v below 1", ErrInvalidConfig, cfg.LoadFactor)
	}
	if cfg.VirtualNodes < 0 {
		return nil, fmt.Errorf("%w: negative VirtualNodes %d", ErrInvalidConfig, cfg.VirtualNodes)
	}
	switch {
	case cfg.PickSample == 0:
		b.sample = 1
	case cfg.PickSample < 0:
		return nil, fmt.Errorf("%w: negative PickSample %d", ErrInvalidConfig, cfg.PickSample)
	}
	var judges []Judge
	for i, f := range cfg.Followers {
		if f == nil {
			return nil, fmt.Errorf("%w: follower %d is nil", ErrInvalidConfig, i)
		}
		if reflect.TypeOf(f).Comparable() {
			for _, g := range cfg.Followers[:i] {
				if reflect.TypeOf(g).Comparable() && g == f {
					return nil, fmt.Errorf("%w: follower %d appears twice", ErrInvalidConfig, i)
				}
			}
		}
		if r, ok := f.(Recorder); ok {
			b.recorders = append(b.recorders, r)
		}
		if j, ok := f.(Judge); ok {
			judges = append(judges, j)
		}
	}
	if len(judges) > maxJudges {
		return nil, fmt.Errorf("%w: %d judges among Followers, more than %d", ErrInvalidConfig, len(judges), maxJudges)
	}
	b.followers = append([]Follower(nil), cfg.Followers...)
	b.inflight = b.algo == LeastRequest || b.algo == PeakEWMA || b.algo == ConsistentHash
	b.heavyDone = b.algo == PeakEWMA || b.algo == ConsistentHash || len(b.recorders) > 0 || b.obs != nil
	b.base = b.clk.Now()
	b.snap.Store(&snapshot{})
	none := map[string]*state{}
	b.members.Store(&none)

	// The set is checked, and its breakers and limiters made, before any
	// judge is bound.
	set, hashIdx, guards, err := b.prepare(cfg.Endpoints)
	if err != nil {
		return nil, err
	}
	for i, j := range judges {
		// A judge that is fed from Pick.Done may report from it: its
		// verdicts are published by the background goroutine.
		_, fromDone := j.(Recorder)
		pending, err := j.Attach(func(ep bulwark.Endpoint, healthy bool) { b.report(uint(i), fromDone, ep, healthy) })
		if err != nil {
			return nil, fmt.Errorf("balancer: attaching follower %T: %w", j, err)
		}
		if pending {
			b.gate |= 1 << (32 + i)
		}
	}
	b.upMu.Lock()
	defer b.upMu.Unlock()
	if err := b.apply(set, hashIdx, guards); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// now returns the clock's time in ns since base.
func (b *Balancer) now() int64 { return int64(b.clk.Since(b.base)) }

// Update replaces the endpoint set with eps, for service discovery, and
// passes the new set to every follower. Endpoints that stay (by Addr) keep
// their requests in flight, latency estimate, verdicts and breaker, and take
// their new Zone and Weight; new ones start afresh: pending if a judge makes
// them wait for its first verdict, eligible otherwise, and, with SlowStart,
// ramping up once eligible. Picks see either the old set or the new one.
//
// Update returns an error wrapping bulwark.ErrInvalidEndpoint, and changes
// nothing, when an endpoint is invalid or an Addr appears twice; with
// ConsistentHash, it also refuses a set too large for the ring; and it
// returns Breaker's error, wrapped, with nothing changed. Once the balancer
// has the set, every follower is told of it even if one fails; the followers'
// errors are then returned, joined.
func (b *Balancer) Update(eps []bulwark.Endpoint) error {
	b.upMu.Lock()
	defer b.upMu.Unlock()
	set, hashIdx, guards, err := b.prepare(eps)
	if err != nil {
		return err
	}
	return b.apply(set, hashIdx, guards)
}

// guards are the breaker and the limiter of an endpoint that joins the set.
type guards struct {
	breaker Breaker
	limiter Limiter
}

// prepare checks eps, builds the hash ring of the new set and makes the
// breakers and limiters of its new endpoints. They are made with no balancer
// lock held but upMu or, in New, before the balancer is shared: user code
// does not run under mu.
func (b *Balancer) prepare(eps []bulwark.Endpoint) ([]bulwark.Endpoint, *hashIndex, map[string]guards, error) {
	seen := make(map[string]struct{}, len(eps))
	for _, ep := range eps {
		if err := ep.Validate(); err != nil {
			return nil, nil, nil, fmt.Errorf("balancer: %w", err)
		}
		if _, dup := seen[ep.Addr]; dup {
			return nil, nil, nil, fmt.Errorf("balancer: %w %q: duplicate address", bulwark.ErrInvalidEndpoint, ep.Addr)
		}
		seen[ep.Addr] = struct{}{}
	}
	set := append([]bulwark.Endpoint(nil), eps...)
	var hashIdx *hashIndex
	if b.algo == ConsistentHash {
		var err error
		if hashIdx, err = newHashIndex(set, b.vnodes); err != nil {
			return nil, nil, nil, err
		}
	}
	var made map[string]guards
	if b.newBreaker != nil || b.newLimiter != nil {
		made = map[string]guards{}
		for _, ep := range set {
			if _, ok := b.states[ep.Addr]; ok { // states changes only under upMu
				continue
			}
			var g guards
			if b.newBreaker != nil {
				br, err := b.newBreaker(ep)
				if err != nil {
					return nil, nil, nil, fmt.Errorf("balancer: breaker of %s: %w", ep.Addr, err)
				}
				g.breaker = br
			}
			if b.newLimiter != nil {
				lim, err := b.newLimiter(ep)
				if err != nil {
					return nil, nil, nil, fmt.Errorf("balancer: limiter of %s: %w", ep.Addr, err)
				}
				g.limiter = lim
			}
			if g.breaker != nil || g.limiter != nil {
				made[ep.Addr] = g
			}
		}
	}
	return set, hashIdx, made, nil
}

// apply makes set the current set and tells the followers; upMu is held.
func (b *Balancer) apply(set []bulwark.Endpoint, hashIdx *hashIndex, made map[string]guards) error {
	b.mu.Lock()
	now := b.now()
	full := len(b.set) == 0
	states := make(map[string]*state, len(set))
	for _, ep := range set {
		st := b.states[ep.Addr]
		if st == nil {
			g := made[ep.Addr]
			st = &state{rampStart: -1, breaker: g.breaker, limiter: g.limiter, fullStart: full, gated: g.breaker != nil || g.limiter != nil}
			st.verdict.Store(b.gate)
			if b.obs != nil {
				b.pending = append(b.pending, b.event(bulwark.EventEndpointAdded, ep))
			}
		}
		states[ep.Addr] = st
	}
	if b.obs != nil {
		for _, ep := range b.set {
			if _, ok := states[ep.Addr]; !ok {
				b.pending = append(b.pending, b.event(bulwark.EventEndpointRemoved, ep))
			}
		}
	}
	b.set, b.states, b.hashIdx = set, states, hashIdx
	b.members.Store(&states)
	b.publishLocked(now)
	b.unlockAndEmit()

	gen := b.gen.Load()
	var errs []error
	for _, f := range b.followers {
		if err := f.SetEndpoints(append([]bulwark.Endpoint(nil), set...)); err != nil {
			errs = append(errs, fmt.Errorf("balancer: follower %T: %w", f, err))
		}
	}
	if b.gen.Load() != gen {
		// Judges pronounced on the new set as they took it: the snapshot
		// that Update leaves behind has their verdicts.
		b.mu.Lock()
		b.publishLocked(b.now())
		b.unlockAndEmit()
	}
	return errors.Join(errs...)
}

// report records judge i's verdict on ep, for the report func that Attach
// gave the judge. It marks the endpoint's verdict word, which picks read at
// once, then publishes a new snapshot; or, for a judge that may report from
// Pick.Done (async), leaves that to the publisher goroutine, with atomic
// operations only, and starts that goroutine if it is not running. After
// Close it only marks the verdict; the next Update rebuilds.
func (b *Balancer) report(i uint, async bool, ep bulwark.Endpoint, healthy bool) {
	st := (*b.members.Load())[ep.Addr]
	if st == nil {
		return // not a member (any more)
	}
	for {
		old := st.verdict.Load()
		v := old &^ (1 << (32 + i))
		if healthy {
			v &^= 1 << i
		} else {
			v |= 1 << i
		}
		if v == old {
			return
		}
		if st.verdict.CompareAndSwap(old, v) {
			break
		}
	}
	b.gen.Add(1)
	b.schedulePublish(async)
}

// schedulePublish has the snapshot rebuilt: if async, by the publisher
// goroutine, started if it is not running; otherwise right here, with the
// events of the rebuild left for the publisher to emit, so that no user code
// runs on the reporting goroutine, which may hold a judge's lock. After
// Close, it does nothing.
func (b *Balancer) schedulePublish(async bool) {
	if !async {
		if b.pub.Load() == pubClosed {
			return
		}
		b.mu.Lock()
		b.publishLocked(b.now())
		events := len(b.pending) > 0
		b.mu.Unlock()
		if !events {
			return
		}
	}
	for {
		switch b.pub.Load() {
		case pubIdle:
			if b.pub.CompareAndSwap(pubIdle, pubRunning) {
				b.pubWG.Add(1)
				go b.publisher()
				return
			}
		case pubRunning:
			if b.pub.CompareAndSwap(pubRunning, pubDirty) {
				return
			}
		case pubDirty, pubClosed:
			return
		}
	}
}

// publisher rebuilds the snapshot, and emits the pending events, until no
// verdict changed since it last read them.
func (b *Balancer) publisher() {
	defer b.pubWG.Done()
	for {
		b.pub.Store(pubRunning) // the rebuild below reads every change so far
		b.mu.Lock()
		b.publishLocked(b.now())
		b.unlockAndEmit()
		if b.pub.CompareAndSwap(pubRunning, pubIdle) {
			b.pubMu.Lock()
			b.pubDone.Broadcast()
			b.pubMu.Unlock()
			return
		}
	}
}

// Close stops the Balancer's background work and waits for it: the
// goroutine that publishes verdicts, and the slow-start timer. The Balancer
// keeps working after Close, on snapshots that only Update rebuilds: a
// verdict reported later still keeps picks off an endpoint found down, and
// slow-start ramps stand still. Close returns nil; calling it again does
// nothing.
func (b *Balancer) Close() error {
	b.pubMu.Lock()
	for b.pub.Load() != pubClosed && !b.pub.CompareAndSwap(pubIdle, pubClosed) {
		b.pubDone.Wait()
	}
	b.pubMu.Unlock()
	b.pubWG.Wait()
	b.mu.Lock()
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.timerID++ // a timer func already running finds it stale
	b.mu.Unlock()
	return nil
}

func (b *Balancer) event(kind bulwark.EventKind, ep bulwark.Endpoint) bulwark.Event {
	return bulwark.Event{Kind: kind, Component: bulwark.ComponentBalancer, Name: b.name, Endpoint: ep}
}

// unlockAndEmit releases mu and then sends the pending events.
func (b *Balancer) unlockAndEmit() {
	evs := b.pending
	b.pending = nil
	b.mu.Unlock()
	for _, e := range evs {
		b.obs.Observe(e)
	}
}

// publishLocked builds and publishes a snapshot of the current state at now,
// and arms the slow-start timer if an endpoint is still ramping.
func (b *Balancer) publishLocked(now int64) {
	gen := b.gen.Load() // before the verdicts are read
	s, next := b.buildLocked(now)
	s.gen = gen
	b.snap.Store(s)
	if s.panic != b.panicky {
		b.panicky = s.panic
		if b.obs != nil {
			e := b.event(bulwark.EventStateChange, bulwark.Endpoint{})
			e.From, e.To, e.Reason = "normal", "panic", "too few eligible"
			if !s.panic {
				e.From, e.To, e.Reason = "panic", "normal", "enough eligible"
			}
			b.pending = append(b.pending, e)
		}
	}
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if next > 0 && b.pub.Load() != pubClosed {
		b.timerID++
		id := b.timerID
		b.timer = b.clk.AfterFunc(time.Duration(next), func() { b.refresh(id) })
	}
}

// refresh republishes the snapshot when a slow-start step is due.
func (b *Balancer) refresh(id uint64) {
	b.mu.Lock()
	if id == b.timerID {
		b.timer = nil
		b.publishLocked(b.now())
	}
	b.unlockAndEmit()
}
