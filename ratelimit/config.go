package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

// ErrInvalidConfig is wrapped by the errors of New, NewGroup and Middleware
// for a configuration they cannot use.
var ErrInvalidConfig = errors.New("ratelimit: invalid config")

// Config configures a Limiter, and every bucket of a Group. Rate is
// required; the other fields have defaults.
//
// The limit is Rate events per Period, with bursts of up to Burst events:
// one token comes back every Period / Rate (the emission interval, rounded
// up to a nanosecond so that the limit is never exceeded), into a bucket
// that holds Burst tokens and starts full.
type Config struct {
	// Name names the limiter in events and errors. Optional.
	Name string

	// Rate is the number of events allowed per Period, in the long run.
	// Required: it must be positive, and Period / Rate at least 1 ns.
	Rate int

	// Period is the time over which Rate events are allowed. If zero, 1 s.
	Period time.Duration

	// Burst is the number of events that may pass at once after a quiet
	// spell: the size of the bucket. If zero, Rate: a full Period's worth.
	// Burst × Period / Rate must stay below 100 years.
	Burst int

	// MaxWait is how long Do (and Group.Do) may wait for a token before it
	// refuses the call. A call is refused at once when its wait would pass
	// its context's deadline. If zero, Do never waits: it runs op at once
	// or refuses. Wait and WaitN ignore it.
	MaxWait time.Duration

	// Clock is the time source. If nil, the wall clock.
	Clock bulwark.Clock

	// Observer receives EventRejected for each refused call or request,
	// with Key set to the group key, Delay to the RetryAfter and Reason
	// "rate" (no token in time), "deadline" (the wait would pass the
	// context's deadline) or "burst" (more tokens asked for than Burst).
	// If nil, no events and no cost.
	Observer bulwark.Observer
}

// maxTau bounds Burst × interval, so that time arithmetic never overflows.
const maxTau = int64(100 * 365 * 24 * time.Hour)

// settings is a validated Config: every bucket of a Group shares one.
type settings struct {
	name     string
	interval int64 // ns between two tokens, T
	tau      int64 // ns it takes to fill the bucket from empty: burst × T
	burst    int
	period   time.Duration
	rate     int
	maxWait  int64
	clk      bulwark.Clock
	wall     bool
	base     time.Time // times are kept as ns since base
	obs      bulwark.Observer
}

func (c Config) settings() (*settings, error) {
	switch {
	case c.Rate <= 0:
		return nil, fmt.Errorf("%w: Rate %d, want > 0", ErrInvalidConfig, c.Rate)
	case c.Period < 0:
		return nil, fmt.Errorf("%w: Period %v is negative", ErrInvalidConfig, c.Period)
	case c.Burst < 0:
		return nil, fmt.Errorf("%w: Burst %d is negative", ErrInvalidConfig, c.Burst)
	case c.MaxWait < 0:
		return nil, fmt.Errorf("%w: MaxWait %v is negative", ErrInvalidConfig, c.MaxWait)
	}
	s := &settings{
		name:    c.Name,
		period:  c.Period,
		rate:    c.Rate,
		burst:   c.Burst,
		maxWait: int64(c.MaxWait),
		clk:     base.ClockOrWall(c.Clock),
		obs:     c.Observer,
	}
	if s.period == 0 {
		s.period = time.Second
	}
	if s.burst == 0 {
		s.burst = s.rate
	}
	if int64(s.period) < int64(s.rate) {
		return nil, fmt.Errorf("%w: Rate %d per Period %v is above one per nanosecond", ErrInvalidConfig, c.Rate, s.period)
	}
	s.interval = (int64(s.period) + int64(s.rate) - 1) / int64(s.rate) // rounded up: never above the limit
	if int64(s.burst) > maxTau/s.interval {
		return nil, fmt.Errorf("%w: Burst %d takes more than 100 years to refill at %d per %v", ErrInvalidConfig, s.burst, s.rate, s.period)
	}
	s.tau = int64(s.burst) * s.interval
	s.wall = s.clk == bulwark.WallClock()
	s.base = s.clk.Now()
	return s, nil
}

// now returns the time since base in ns.
func (s *settings) now() int64 {
	if s.wall {
		return int64(time.Since(s.base))
	}
	return int64(s.clk.Since(s.base))
}

// at returns t as ns since base, within ±2^62 ns (146 years) so that the
// arithmetic on it cannot overflow, whatever time a caller passes.
func (s *settings) at(t time.Time) int64 {
	return min(max(int64(t.Sub(s.base)), -maxTime), maxTime)
}

const maxTime = 1 << 62

// quota returns Burst and the time Rate per Period takes to refill it,
// computed from the Config's figures rather than from the rounded interval.
func (s *settings) quota() (int, time.Duration) {
	return s.burst, time.Duration(math.Round(float64(s.burst) * float64(s.period) / float64(s.rate)))
}

// forever is the RetryAfter of a request that can never pass: more tokens
// than Burst.
const forever = time.Duration(math.MaxInt64)
