package throttle

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

var _ bulwark.Policy = (*Policy)(nil)

var (
	// ErrThrottled is the error of a call that a Policy refused locally,
	// without sending it.
	ErrThrottled = errors.New("throttle: request throttled by the client")

	// ErrInvalidConfig is wrapped by the error of New for a Config it
	// cannot use.
	ErrInvalidConfig = errors.New("throttle: invalid config")
)

// Config configures a Policy. The zero Config is valid: the SRE book's
// K = 2 over a 2-minute window, with at most 90 % of requests refused.
type Config struct {
	// Name names the policy in events. Optional.
	Name string

	// Multiplier is K in the SRE book: the policy starts refusing when the
	// requests over the window exceed K times the requests the backend
	// accepted. Lower is more aggressive: 1.1 refuses as soon as a tenth
	// of the requests fail; 2 lets the backend refuse half before the
	// client steps in. At least 1; if zero, 2.
	Multiplier float64

	// Window is the time over which requests and accepts are counted. If
	// zero, 2 minutes.
	Window time.Duration

	// Buckets is the number of steps the window slides in. If zero, 12
	// (10 s steps for the default window). Each step must last at least
	// 1 ms.
	Buckets int

	// MaxProbability caps the probability of refusing a request, so that
	// some requests always reach the backend and tell the client when it
	// has recovered (Envoy's admission control caps it too). In (0, 1];
	// if zero, 0.9.
	MaxProbability float64

	// Classify decides whether the backend accepted a call: Success is an
	// accept, Failure a request it did not accept, Neutral counts nowhere
	// (the request is forgotten). ctx is the call's context. If nil,
	// bulwark.Classify (an error while the caller's ctx was canceled is
	// neutral; any other error, a deadline exceeded included, is not an
	// accept), except that bulwark.Permanent errors are accepts: the
	// backend answered, it refused the request itself.
	Classify func(ctx context.Context, err error) bulwark.Outcome

	// Random returns a number in [0, 1) for each refusal decision. If nil,
	// math/rand/v2's Float64. Tests set it to get the same decisions every
	// time.
	Random func() float64

	// Clock is the time source of the window. If nil, the wall clock.
	Clock bulwark.Clock

	// Observer receives EventRejected for each call refused, with Err
	// ErrThrottled and Reason "throttled". If nil, no events and no cost.
	Observer bulwark.Observer
}

// Policy is client-side adaptive throttling, as in chapter 21 of Google's
// Site Reliability Engineering book ("Handling Overload") and Envoy's
// admission control: the client counts, over a sliding window, the requests
// it made and those the backend accepted, and refuses each new request
// locally with probability
//
//	max(0, (requests − K × accepts) / (requests + 1))
//
// capped at MaxProbability. While the backend accepts nearly everything the
// probability is zero. When it is overloaded and refuses, the client sheds
// its own excess before it goes on the wire, so that the backend spends
// nothing on requests it would refuse anyway. Requests refused locally count
// as requests, so the more the client refuses, the more it keeps refusing
// until the backend accepts again.
//
// A Policy gates first attempts: put it outside the retry,
// bulwark.Compose(throttle, retryPolicy, breaker), so that it sees each
// logical request once and its outcome after retries. Retries and hedges
// have their own gate in retry's Budget.
//
// A decision reads the clock once and sums the window's buckets; recording
// the outcome is one atomic add. A Policy is safe for concurrent use by
// multiple goroutines. Use New; the zero Policy is not usable.
type Policy struct {
	name     string
	k        float64
	maxP     float64
	step     int64 // ns
	slots    []atomic.Pointer[bucket]
	classify func(context.Context, error) bulwark.Outcome
	random   func() float64
	clk      bulwark.Clock
	wall     bool
	base     time.Time
	obs      bulwark.Observer
}

// bucket counts one step of the window. A bucket is replaced, never reset,
// when its slot moves to a new step: a call that still holds the old one
// counts into it harmlessly.
type bucket struct {
	idx      int64 // the step: time since base / step
	requests atomic.Int64
	accepts  atomic.Int64
}

// New returns a Policy for cfg. It returns an error wrapping
// ErrInvalidConfig for a Multiplier below 1, a MaxProbability outside
// (0, 1], a negative Window or Buckets, or steps shorter than 1 ms.
func New(cfg Config) (*Policy, error) {
	switch {
	case math.IsNaN(cfg.Multiplier) || math.IsInf(cfg.Multiplier, 0) || (cfg.Multiplier != 0 && cfg.Multiplier < 1):
		return nil, fmt.Errorf("%w: Multiplier %v, want a finite value >= 1", ErrInvalidConfig, cfg.Multiplier)
	case !(cfg.MaxProbability >= 0 && cfg.MaxProbability <= 1):
		return nil, fmt.Errorf("%w: MaxProbability %v, want within (0, 1]", ErrInvalidConfig, cfg.MaxProbability)
	case cfg.Window < 0:
		return nil, fmt.Errorf("%w: Window %v is negative", ErrInvalidConfig, cfg.Window)
	case cfg.Buckets < 0:
		return nil, fmt.Errorf("%w: Buckets %d is negative", ErrInvalidConfig, cfg.Buckets)
	}
	p := &Policy{
		name:     cfg.Name,
		k:        cfg.Multiplier,
		maxP:     cfg.MaxProbability,
		classify: cfg.Classify,
		random:   cfg.Random,
		clk:      base.ClockOrWall(cfg.Clock),
		obs:      cfg.Observer,
	}
	if p.k == 0 {
		p.k = 2
	}
	if p.maxP == 0 {
		p.maxP = 0.9
	}
	window, buckets := cfg.Window, cfg.Buckets
	if window == 0 {
		window = 2 * time.Minute
	}
	if buckets == 0 {
		buckets = 12
	}
	if window/time.Duration(buckets) < time.Millisecond {
		return nil, fmt.Errorf("%w: step Window / Buckets = %v / %d below 1ms", ErrInvalidConfig, window, buckets)
	}
	if p.classify == nil {
		p.classify = defaultClassify
	}
	if p.random == nil {
		p.random = rand.Float64
	}
	p.step = int64(window / time.Duration(buckets))
	p.slots = make([]atomic.Pointer[bucket], buckets)
	p.wall = p.clk == bulwark.WallClock()
	p.base = p.clk.Now()
	return p, nil
}

func defaultClassify(ctx context.Context, err error) bulwark.Outcome {
	if err != nil && bulwark.IsPermanent(err) {
		return bulwark.Success
	}
	return bulwark.Classify(ctx, err)
}

// Do refuses op with ErrThrottled, without running it, with the probability
// given by the window's counts (see Policy); otherwise it runs op, counts
// whether the backend accepted it, and returns op's error.
func (p *Policy) Do(ctx context.Context, op func(context.Context) error) error {
	idx := p.index(p.now())
	b := p.current(idx)
	req, acc := p.counts(idx)
	b.requests.Add(1)
	if pr := p.probability(req, acc); pr > 0 && p.random() < pr {
		if p.obs != nil {
			base.ObserveContext(ctx, p.obs, bulwark.Event{
				Kind: bulwark.EventRejected, Component: bulwark.ComponentThrottle, Name: p.name, Err: ErrThrottled, Reason: "throttled",
			})
		}
		return ErrThrottled
	}
	err := op(ctx)
	switch p.classify(ctx, err) {
	case bulwark.Success:
		b.accepts.Add(1)
	case bulwark.Failure:
	default: // Neutral, or an unknown Outcome: counts for nothing
		b.requests.Add(-1)
	}
	return err
}

// Probability returns the probability with which the next request would be
// refused: a gauge of how hard the client is shedding.
func (p *Policy) Probability() float64 {
	req, acc := p.counts(p.index(p.now()))
	return p.probability(req, acc)
}

func (p *Policy) probability(req, acc int64) float64 {
	pr := (float64(req) - p.k*float64(acc)) / float64(req+1)
	if pr <= 0 {
		return 0
	}
	return min(pr, p.maxP)
}

func (p *Policy) now() int64 {
	if p.wall {
		return int64(time.Since(p.base))
	}
	return int64(p.clk.Since(p.base))
}

// index returns the step of time now, rounding down.
func (p *Policy) index(now int64) int64 {
	idx := now / p.step
	if now < 0 && now%p.step != 0 {
		idx--
	}
	return idx
}

// current returns the bucket of step idx, putting a new one in its slot if
// the slot holds an older step.
func (p *Policy) current(idx int64) *bucket {
	n := int64(len(p.slots))
	s := &p.slots[((idx%n)+n)%n]
	for {
		b := s.Load()
		if b != nil && b.idx >= idx {
			return b // this step's, or a later one's if the clock went back
		}
		nb := &bucket{idx: idx}
		if s.CompareAndSwap(b, nb) {
			return nb
		}
	}
}

// counts sums the buckets of the window that ends with step idx.
func (p *Policy) counts(idx int64) (requests, accepts int64) {
	n := int64(len(p.slots))
	for i := range p.slots {
		if b := p.slots[i].Load(); b != nil && idx-b.idx < n && b.idx <= idx {
			requests += b.requests.Load()
			accepts += b.accepts.Load()
		}
	}
	return requests, accepts
}
