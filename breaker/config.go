package breaker

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

// Config configures a Breaker. The zero Config is valid: a breaker that opens
// after 5 consecutive failures, stays open 60 s, then lets one probe through.
//
// The trip rules (ConsecutiveFailures, FailureRate, SlowCallRate) combine:
// the breaker opens as soon as any one of them fires. FailureRate and
// SlowCallRate are measured over a window of the most recent calls
// (WindowCalls) and/or of the most recent time (WindowDuration); with both
// windows set, each rate applies to each window. Neither rate applies until
// the window holds MinCalls calls. Neutral outcomes count nowhere.
type Config struct {
	// Name names the breaker in events and errors. Optional.
	Name string

	// Clock is the time source. If nil, the wall clock.
	Clock bulwark.Clock

	// Observer receives EventCall for each finished call, EventRejected for
	// each refused one and EventStateChange for each transition, on the
	// caller's goroutine and never under the breaker's lock. If nil, no
	// events and no cost.
	Observer bulwark.Observer

	// Classify decides how an error counts (Do, Call, Permit.Done; Release
	// takes an Outcome directly). ctx is the call's context. If nil:
	// bulwark.Classify (nil is a success, an error while ctx was canceled is
	// neutral, anything else a failure), except that bulwark.Permanent
	// errors are neutral unless TripOnPermanent is set.
	Classify func(ctx context.Context, err error) bulwark.Outcome

	// TripOnPermanent makes the default classification count
	// bulwark.Permanent errors (a bad request, a refused payment) as
	// failures. If false, they are neutral: they say nothing about the
	// callee's health. Ignored when Classify is set.
	TripOnPermanent bool

	// ConsecutiveFailures opens the breaker after this many failures in a
	// row (successes reset the run; neutral outcomes do not). If zero, the
	// rule is off, unless no other rule is set, in which case 5.
	ConsecutiveFailures int

	// FailureRate opens the breaker when failures / (successes + failures)
	// in a window reaches it. A fraction in (0, 1]; if zero, the rule is
	// off. It needs WindowCalls or WindowDuration.
	FailureRate float64

	// SlowCallRate opens the breaker when the share of calls that took at
	// least SlowCallDuration (successes and failures alike) in a window
	// reaches it. A fraction in (0, 1]; if zero, the rule is off. It needs
	// SlowCallDuration and WindowCalls or WindowDuration.
	SlowCallRate float64

	// SlowCallDuration is the latency from which a call counts as slow, for
	// SlowCallRate and for half-open probes (a slow probe counts as a failed
	// one). Must be set with SlowCallRate, and only then.
	SlowCallDuration time.Duration

	// WindowCalls is the size, in calls, of the count window: the rates
	// are measured over the last WindowCalls calls. (Under concurrency,
	// windows of 32 calls or more are handed out in small chunks per core, so
	// a few of the outcomes in the window may be up to one window older.)
	// If zero, no count window.
	WindowCalls int

	// WindowDuration is the length of the time window: the rates are
	// measured over the calls that finished within it. The window slides in
	// steps of WindowDuration / WindowBuckets, moved by a timer on Clock
	// (AfterFunc) that is pending only while calls come: it is not re-armed
	// after a step without calls. If zero, no time window.
	WindowDuration time.Duration

	// WindowBuckets is the number of steps the time window slides in. If
	// zero, 10. Only with WindowDuration; each step must last at least 1 ms.
	WindowBuckets int

	// MinCalls is the number of calls (successes and failures) a window
	// must hold before a rate applies to it. If zero, 10, or WindowCalls if
	// that is smaller. It must not exceed WindowCalls when a count window
	// is set.
	MinCalls int

	// OpenDuration is how long the breaker stays open after its first trip.
	// If zero, 60 s.
	OpenDuration time.Duration

	// MaxOpenDuration caps the open duration. When it is above
	// OpenDuration, each trip that follows another without the breaker
	// closing in between (a failed probe) multiplies the open duration by
	// OpenBackoff, up to this cap. If zero, OpenDuration: the open duration
	// is fixed.
	MaxOpenDuration time.Duration

	// OpenBackoff is the factor by which the open duration grows on each
	// repeated trip, up to MaxOpenDuration. At least 1; if zero, 2.
	OpenBackoff float64

	// OpenJitter shortens each open duration by a random fraction of it in
	// [0, OpenJitter), so that breakers tripped together do not probe
	// together. A fraction in [0, 1); if zero, no jitter.
	OpenJitter float64

	// HalfOpenProbes is the number of probe calls the half-open breaker lets
	// run at the same time; other calls are refused. If zero, 1. At most
	// 4095.
	HalfOpenProbes int

	// HalfOpenSuccesses is the number of successful probes that closes the
	// breaker. If zero, HalfOpenProbes.
	HalfOpenSuccesses int

	// ProbeTimeout is how long a probe may run. A probe still running after
	// it counts as failed and the breaker opens again, so a probe that never
	// returns cannot keep the breaker half-open; its late result is
	// ignored. If zero, OpenDuration.
	ProbeTimeout time.Duration
}

// maxProbes is the most probe slots a token can name (12 bits, 0 = none).
const maxProbes = 1<<12 - 1

// settings is a validated Config with the defaults filled in.
type settings struct {
	name              string
	clk               bulwark.Clock
	obs               bulwark.Observer
	classify          func(context.Context, error) bulwark.Outcome
	tripOnPermanent   bool
	consecutive       int64
	failureRate       float64
	slowRate          float64
	slowDur           time.Duration
	windowCalls       int
	windowDur         time.Duration
	buckets           int
	minCalls          int64
	openDur           time.Duration
	maxOpenDur        time.Duration
	backoff           float64
	jitter            float64
	probes            int
	halfOpenSuccesses int
	probeTimeout      time.Duration
}

func (c Config) settings() (settings, error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	rate := func(name string, r float64) {
		if math.IsNaN(r) || r < 0 || r > 1 {
			bad("%s %v outside (0, 1]", name, r)
		}
	}
	nonNeg := func(name string, d time.Duration) {
		if d < 0 {
			bad("negative %s %v", name, d)
		}
	}
	if c.ConsecutiveFailures < 0 {
		bad("negative ConsecutiveFailures %d", c.ConsecutiveFailures)
	}
	rate("FailureRate", c.FailureRate)
	rate("SlowCallRate", c.SlowCallRate)
	nonNeg("SlowCallDuration", c.SlowCallDuration)
	nonNeg("WindowDuration", c.WindowDuration)
	nonNeg("OpenDuration", c.OpenDuration)
	nonNeg("MaxOpenDuration", c.MaxOpenDuration)
	nonNeg("ProbeTimeout", c.ProbeTimeout)
	if c.WindowCalls < 0 {
		bad("negative WindowCalls %d", c.WindowCalls)
	}
	if c.WindowBuckets < 0 {
		bad("negative WindowBuckets %d", c.WindowBuckets)
	}
	if c.MinCalls < 0 {
		bad("negative MinCalls %d", c.MinCalls)
	}
	if c.HalfOpenProbes < 0 || c.HalfOpenProbes > maxProbes {
		bad("HalfOpenProbes %d outside [0, %d]", c.HalfOpenProbes, maxProbes)
	}
	if c.HalfOpenSuccesses < 0 {
		bad("negative HalfOpenSuccesses %d", c.HalfOpenSuccesses)
	}
	if math.IsNaN(c.OpenBackoff) || math.IsInf(c.OpenBackoff, 0) || (c.OpenBackoff != 0 && c.OpenBackoff < 1) {
		bad("OpenBackoff %v below 1", c.OpenBackoff)
	}
	if math.IsNaN(c.OpenJitter) || c.OpenJitter < 0 || c.OpenJitter >= 1 {
		bad("OpenJitter %v outside [0, 1)", c.OpenJitter)
	}
	if len(errs) > 0 {
		return settings{}, configError(errs)
	}

	rates := c.FailureRate > 0 || c.SlowCallRate > 0
	windows := c.WindowCalls > 0 || c.WindowDuration > 0
	switch {
	case rates && !windows:
		bad("FailureRate and SlowCallRate need a window: set WindowCalls or WindowDuration")
	case windows && !rates:
		bad("a window (WindowCalls or WindowDuration) without FailureRate or SlowCallRate has no effect")
	}
	if c.SlowCallRate > 0 && c.SlowCallDuration == 0 {
		bad("SlowCallRate needs SlowCallDuration")
	}
	if c.SlowCallRate == 0 && c.SlowCallDuration > 0 {
		bad("SlowCallDuration without SlowCallRate has no effect")
	}
	if c.WindowBuckets > 0 && c.WindowDuration == 0 {
		bad("WindowBuckets without WindowDuration has no effect")
	}
	if c.MinCalls > 0 && !windows {
		bad("MinCalls without a window has no effect")
	}
	if c.WindowCalls > 0 && c.MinCalls > c.WindowCalls {
		bad("MinCalls %d exceeds WindowCalls %d: no rate could ever apply", c.MinCalls, c.WindowCalls)
	}
	if c.MaxOpenDuration > 0 && c.MaxOpenDuration < c.OpenDuration {
		bad("MaxOpenDuration %v below OpenDuration %v", c.MaxOpenDuration, c.OpenDuration)
	}
	s := settings{
		name:              c.Name,
		clk:               base.ClockOrWall(c.Clock),
		obs:               c.Observer,
		classify:          c.Classify,
		tripOnPermanent:   c.TripOnPermanent,
		consecutive:       int64(c.ConsecutiveFailures),
		failureRate:       c.FailureRate,
		slowRate:          c.SlowCallRate,
		slowDur:           c.SlowCallDuration,
		windowCalls:       c.WindowCalls,
		windowDur:         c.WindowDuration,
		buckets:           c.WindowBuckets,
		minCalls:          int64(c.MinCalls),
		openDur:           c.OpenDuration,
		maxOpenDur:        c.MaxOpenDuration,
		backoff:           c.OpenBackoff,
		jitter:            c.OpenJitter,
		probes:            c.HalfOpenProbes,
		halfOpenSuccesses: c.HalfOpenSuccesses,
		probeTimeout:      c.ProbeTimeout,
	}
	if s.consecutive == 0 && !rates {
		s.consecutive = 5
	}
	if s.windowDur > 0 && s.buckets == 0 {
		s.buckets = 10
	}
	if s.windowDur > 0 && s.windowDur/time.Duration(s.buckets) < time.Millisecond {
		bad("time window step WindowDuration / WindowBuckets = %v / %d below 1ms", s.windowDur, s.buckets)
	}
	if windows && s.minCalls == 0 {
		s.minCalls = 10
		if s.windowCalls > 0 && s.windowCalls < 10 {
			s.minCalls = int64(s.windowCalls)
		}
	}
	if s.openDur == 0 {
		s.openDur = 60 * time.Second
		if c.MaxOpenDuration > 0 && c.MaxOpenDuration < s.openDur {
			bad("MaxOpenDuration %v below the default OpenDuration %v", c.MaxOpenDuration, s.openDur)
		}
	}
	if s.maxOpenDur == 0 {
		s.maxOpenDur = s.openDur
	}
	if s.backoff == 0 {
		s.backoff = 2
	}
	if s.probes == 0 {
		s.probes = 1
	}
	if s.halfOpenSuccesses == 0 {
		s.halfOpenSuccesses = s.probes
	}
	if s.probeTimeout == 0 {
		s.probeTimeout = s.openDur
	}
	if len(errs) > 0 {
		return settings{}, configError(errs)
	}
	return s, nil
}

func configError(errs []error) error {
	msg := ""
	for i, e := range errs {
		if i > 0 {
			msg += "; "
		}
		msg += e.Error()
	}
	return fmt.Errorf("%w: %s", ErrInvalidConfig, msg)
}
