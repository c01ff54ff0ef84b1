package balancer

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
)

// Algorithm chooses among the eligible endpoints.
type Algorithm uint8

const (
	// RoundRobin is smooth weighted round robin, as nginx does it: over every
	// run of total-weight picks each endpoint gets exactly its weight, spread
	// evenly rather than in bursts. It is the zero value.
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
	// take the call: none is eligible and panic mode is off, or every breaker
	// refused. In the second case the error also wraps the last refusal, so
	// errors.As finds the breaker's error and its RetryAfter.
	ErrUnavailable = errors.New("balancer: no eligible endpoint")
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

// Recorder receives the outcome of every call, for passive outlier detection;
// *healthcheck.OutlierDetector satisfies it. gateway marks a failure to reach
// the endpoint (a connect error, or 502, 503 or 504 from the endpoint).
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
	// eligible share (by weight) is at least MinLocalShare, and spill over to
	// the other zones in proportion when it drops below.
	Zone string
	// MinLocalShare is the eligible share of the local zone's weight below
	// which picks spill to other zones: with a share s < MinLocalShare, a
	// fraction s/MinLocalShare of the picks stays local. If zero, 0.7. It must
	// be in (0, 1].
	MinLocalShare float64
	// PanicThreshold is the fraction of endpoints (by count) that must be
	// eligible, healthy and not ejected; below it the balancer enters panic
	// mode and picks among all endpoints, ignoring health, ejection and zones,
	// as Envoy does. If zero, 0.5. A negative value disables panic mode, and
	// Pick then returns ErrUnavailable when nothing is eligible. It must not
	// exceed 1.
	PanicThreshold float64
	// SlowStart is the window over which an endpoint that was added by Update,
	// or came back from unhealthy or ejected, ramps its weight up linearly, in
	// 20 steps, from a twentieth to all of it. The initial set, and a set that
	// replaces an empty one, start at full weight. If zero, no slow start. It
	// must not be negative.
	SlowStart time.Duration

	// ActiveRequestBias is, for LeastRequest, how much requests in flight
	// count against weight: an endpoint's load is inflight^bias / weight, as
	// Envoy's active_request_bias. If zero, 1. It must not be negative; use
	// Random to ignore load altogether.
	ActiveRequestBias float64
	// DecayTime is PeakEWMA's time constant: the weight of an observation falls
	// by a factor of e every DecayTime. If zero, 10s. It must not be negative.
	DecayTime time.Duration
	// LoadFactor is ConsistentHash's bound c: no endpoint takes more than c ×
	// its weighted share of the requests in flight (rounded up) while another
	// owner can. If zero, 1.25. It must be at least 1.
	LoadFactor float64
	// VirtualNodes is ConsistentHash's number of ring points per endpoint. If
	// zero, 160. It must not be negative.
	VirtualNodes int

	// Breaker, if not nil, returns the circuit breaker of an endpoint. It is
	// called when the endpoint joins the set, from New or Update, with no
	// lock held (concurrent Updates that add one endpoint may each call it;
	// one result is kept). A nil result means no breaker for that endpoint.
	Breaker func(bulwark.Endpoint) Breaker
	// Outliers, if not nil, is told of the outcome of every call (from
	// Pick.Done), such as a *healthcheck.OutlierDetector whose listener is
	// this Balancer.
	Outliers Recorder

	// Clock is the time source for slow start, PeakEWMA and the latencies
	// that Transport measures. If nil, the wall clock.
	Clock bulwark.Clock
	// Observer receives events: EventPick (sampled, see PickSample),
	// EventEndpointAdded and EventEndpointRemoved, EventStateChange on
	// entering ("panic") and leaving ("normal") panic mode, and EventMisuse for
	// a second Done on one pick. If nil, no events and no cost.
	Observer bulwark.Observer
	// PickSample is how many picks one EventPick stands for: each pick emits
	// one with probability 1/PickSample, and its Attempt field is PickSample,
	// so summing Attempt estimates the picks per endpoint. If zero, 1 (every
	// pick). It must not be negative.
	PickSample int
}

// Balancer spreads picks over a set of endpoints. It is safe for concurrent
// use by multiple goroutines: Pick and Pick.Done never block; Update,
// HealthChanged and EjectionChanged serialise among themselves and publish a
// new snapshot that picks see whole or not at all. Use New; the zero Balancer
// is not usable.
type Balancer struct {
	name       string
	algo       Algorithm
	clk        bulwark.Clock
	obs        bulwark.Observer
	outliers   Recorder
	newBreaker func(bulwark.Endpoint) Breaker
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
	// The counters below are written by picks: padding keeps them off the
	// cache lines of snap and of each other.
	_      [64]byte
	coarse atomic.Int64 // ns since base, advanced by PeakEWMA's Done; read by its Pick
	_      [56]byte
	total  [numStripes]counter // requests in flight, for ConsistentHash: the sum of the stripes
	rr     [numPoolKinds][numStripes]stripe
	_      [64]byte

	mu      sync.Mutex         // serialises changes and snapshot publication
	set     []bulwark.Endpoint // guarded by mu; current endpoints, in Update order
	states  map[string]*state  // guarded by mu; by Addr
	hashIdx *hashIndex         // guarded by mu; rebuilt when the set changes
	timer   bulwark.Timer      // guarded by mu; pending slow-start refresh
	timerID uint64             // guarded by mu; generation of timer
	panicky bool               // guarded by mu; panic mode of the published snapshot
	pending []bulwark.Event    // guarded by mu; events to emit after unlocking
}

// state is the part of an endpoint that survives snapshots and updates.
type state struct {
	inflight  atomic.Int64
	ewma      atomic.Uint64 // PeakEWMA estimate and its time, see stampShift
	breaker   Breaker       // immutable
	unhealthy bool          // guarded by Balancer.mu
	ejected   bool          // guarded by Balancer.mu
	rampStart int64         // guarded by Balancer.mu; ns since base; -1 when not ramping
	_         [stateSize - 48]byte
}

// stateSize is the size of a state: a size class of its own, so that the
// counters of two endpoints never share a cache line.
const stateSize = 128

type stripe struct {
	n atomic.Uint32
	_ [60]byte
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

var _ interface {
	HealthChanged(ep bulwark.Endpoint, healthy bool)
	EjectionChanged(ep bulwark.Endpoint, ejected bool)
} = (*Balancer)(nil)

// New returns a Balancer configured by cfg. It returns an error, wrapping
// bulwark.ErrInvalidEndpoint for a bad endpoint, when cfg is invalid.
func New(cfg Config) (*Balancer, error) {
	b := &Balancer{
		name:       cfg.Name,
		algo:       cfg.Algorithm,
		clk:        bulwark.ClockOrWall(cfg.Clock),
		obs:        cfg.Observer,
		outliers:   cfg.Outliers,
		newBreaker: cfg.Breaker,
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
	if cfg.Algorithm >= numAlgorithms {
		return nil, fmt.Errorf("balancer: unknown algorithm %d", uint8(cfg.Algorithm))
	}
	switch {
	case cfg.MinLocalShare == 0:
		b.minLocal = 0.7
	case !(cfg.MinLocalShare > 0 && cfg.MinLocalShare <= 1):
		return nil, fmt.Errorf("balancer: MinLocalShare %v not in (0, 1]", cfg.MinLocalShare)
	}
	switch {
	case cfg.PanicThreshold == 0:
		b.panicAt = 0.5
	case math.IsNaN(cfg.PanicThreshold) || cfg.PanicThreshold > 1:
		return nil, fmt.Errorf("balancer: PanicThreshold %v above 1", cfg.PanicThreshold)
	}
	if cfg.SlowStart < 0 {
		return nil, fmt.Errorf("balancer: negative SlowStart %v", cfg.SlowStart)
	}
	switch {
	case cfg.ActiveRequestBias == 0:
		b.bias = 1
	case !(cfg.ActiveRequestBias > 0) || math.IsInf(cfg.ActiveRequestBias, 1):
		return nil, fmt.Errorf("balancer: ActiveRequestBias %v is not a positive number", cfg.ActiveRequestBias)
	}
	switch {
	case cfg.DecayTime == 0:
		b.tau = float64(10 * time.Second)
	case cfg.DecayTime < 0:
		return nil, fmt.Errorf("balancer: negative DecayTime %v", cfg.DecayTime)
	default:
		b.tau = float64(cfg.DecayTime)
	}
	switch {
	case cfg.LoadFactor == 0:
		b.loadFactor = 1.25
	case !(cfg.LoadFactor >= 1):
		return nil, fmt.Errorf("balancer: LoadFactor %v below 1", cfg.LoadFactor)
	}
	if cfg.VirtualNodes < 0 {
		return nil, fmt.Errorf("balancer: negative VirtualNodes %d", cfg.VirtualNodes)
	}
	switch {
	case cfg.PickSample == 0:
		b.sample = 1
	case cfg.PickSample < 0:
		return nil, fmt.Errorf("balancer: negative PickSample %d", cfg.PickSample)
	}
	b.inflight = b.algo == LeastRequest || b.algo == PeakEWMA || b.algo == ConsistentHash
	b.heavyDone = b.algo == PeakEWMA || b.algo == ConsistentHash || b.outliers != nil || b.obs != nil
	b.base = b.clk.Now()
	b.snap.Store(&snapshot{})
	if err := b.Update(cfg.Endpoints); err != nil {
		return nil, err
	}
	return b, nil
}

// now returns the clock's time in ns since base.
func (b *Balancer) now() int64 { return int64(b.clk.Since(b.base)) }

// Update replaces the endpoint set with eps, for service discovery. Endpoints
// that stay (by Addr) keep their requests in flight, latency estimate, health,
// ejection and breaker, and take their new Zone and Weight; new ones start
// healthy and, with SlowStart, ramp up. Picks see either the old set or the
// new one. Update returns an error wrapping bulwark.ErrInvalidEndpoint, and
// changes nothing, when an endpoint is invalid or an Addr appears twice; with
// ConsistentHash, it also refuses a set too large for the ring.
func (b *Balancer) Update(eps []bulwark.Endpoint) error {
	seen := make(map[string]struct{}, len(eps))
	for _, ep := range eps {
		if err := ep.Validate(); err != nil {
			return fmt.Errorf("balancer: %w", err)
		}
		if _, dup := seen[ep.Addr]; dup {
			return fmt.Errorf("balancer: %w %q: duplicate address", bulwark.ErrInvalidEndpoint, ep.Addr)
		}
		seen[ep.Addr] = struct{}{}
	}
	set := append([]bulwark.Endpoint(nil), eps...)
	var hashIdx *hashIndex
	if b.algo == ConsistentHash {
		var err error
		if hashIdx, err = newHashIndex(set, b.vnodes); err != nil {
			return err
		}
	}

	// Breakers are made outside the lock: user code must not run under it.
	b.mu.Lock()
	var fresh []bulwark.Endpoint
	for _, ep := range set {
		if _, ok := b.states[ep.Addr]; !ok {
			fresh = append(fresh, ep)
		}
	}
	b.mu.Unlock()
	breakers := map[string]Breaker{}
	if b.newBreaker != nil {
		for _, ep := range fresh {
			if br := b.newBreaker(ep); br != nil {
				breakers[ep.Addr] = br
			}
		}
	}

	b.mu.Lock()
	now := b.now()
	ramp := b.slowStart > 0 && len(b.set) > 0
	states := make(map[string]*state, len(set))
	for _, ep := range set {
		st := b.states[ep.Addr]
		if st == nil {
			st = &state{rampStart: -1, breaker: breakers[ep.Addr]}
			if ramp {
				st.rampStart = now
			}
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
	b.publishLocked(now)
	b.unlockAndEmit()
	return nil
}

// HealthChanged records that ep became healthy or not, as a
// healthcheck.Listener. An endpoint that is not in the set is ignored, so add
// endpoints to the Balancer before the checker that reports on them; an
// endpoint removed and added again starts healthy. An unhealthy endpoint is
// not picked while enough others are eligible; one that recovers ramps up
// under SlowStart. It does not wait for picks.
func (b *Balancer) HealthChanged(ep bulwark.Endpoint, healthy bool) {
	b.mu.Lock()
	if st := b.states[ep.Addr]; st != nil && st.unhealthy == healthy {
		st.unhealthy = !healthy
		now := b.now()
		if healthy && !st.ejected && b.slowStart > 0 {
			st.rampStart = now
		}
		b.publishLocked(now)
	}
	b.unlockAndEmit()
}

// EjectionChanged records that ep was ejected by an outlier detector or came
// back, as a healthcheck.Listener; an endpoint that is not in the set is
// ignored. An ejected endpoint is not picked while enough others are
// eligible; one that comes back ramps up under SlowStart.
func (b *Balancer) EjectionChanged(ep bulwark.Endpoint, ejected bool) {
	b.mu.Lock()
	if st := b.states[ep.Addr]; st != nil && st.ejected != ejected {
		st.ejected = ejected
		now := b.now()
		if !ejected && !st.unhealthy && b.slowStart > 0 {
			st.rampStart = now
		}
		b.publishLocked(now)
	}
	b.unlockAndEmit()
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
	s, next := b.buildLocked(now)
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
	if next > 0 {
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
