package retry

import (
	"fmt"
	"math"
	"math/bits"
	"time"
)

// Jitter selects how Backoff randomizes its delays. The formulas are those of
// the AWS Architecture Blog post "Exponential Backoff and Jitter", where the
// exponential ceiling of retry n (1 for the first retry) is
// min(Cap, Base·Multiplier^(n-1)).
type Jitter uint8

const (
	// FullJitter waits rand(0, ceiling). It is the default: of the four, it
	// spreads contending clients best and completes their work with the
	// fewest calls.
	FullJitter Jitter = iota
	// EqualJitter waits ceiling/2 + rand(0, ceiling/2): never less than half
	// the ceiling.
	EqualJitter
	// DecorrelatedJitter waits min(Cap, rand(Base, 3·previous)), where
	// previous is the delay before (Base for the first retry); Multiplier
	// plays no part.
	DecorrelatedJitter
	// NoJitter waits exactly the ceiling. With Multiplier 1 it gives a
	// constant delay of Base.
	NoJitter
)

// String returns "full", "equal", "decorrelated" or "none".
func (j Jitter) String() string {
	switch j {
	case FullJitter:
		return "full"
	case EqualJitter:
		return "equal"
	case DecorrelatedJitter:
		return "decorrelated"
	case NoJitter:
		return "none"
	}
	return fmt.Sprintf("jitter(%d)", uint8(j))
}

// The defaults for zero fields of a Backoff.
const (
	defaultBase       = 100 * time.Millisecond
	defaultCap        = 10 * time.Second
	defaultMultiplier = 2.0
)

// Backoff computes the delay before each retry. The zero Backoff is usable:
// exponential from 100 ms, doubling, capped at 10 s, with full jitter. A
// constant delay d is Backoff{Base: d, Multiplier: 1, Jitter: NoJitter}.
// A Backoff is a plain value, safe for concurrent use.
type Backoff struct {
	// Base is the ceiling of the first retry's delay. If zero, 100 ms.
	Base time.Duration
	// Cap bounds every delay. If zero, 10 s. It must not be below Base.
	Cap time.Duration
	// Multiplier is the growth of the ceiling from one retry to the next.
	// If zero, 2. It must be at least 1.
	Multiplier float64
	// Jitter selects the randomization; the zero value is FullJitter.
	Jitter Jitter
}

var errBackoff = fmt.Errorf("%w: Backoff", ErrInvalidConfig)

// validate reports whether b can be used: no negative duration, Cap not below
// Base, Multiplier zero or at least 1 (and finite), and a known Jitter. The
// error wraps a description of the first problem found.
func (b Backoff) validate() error {
	switch {
	case b.Base < 0:
		return fmt.Errorf("%w: negative Base %v", errBackoff, b.Base)
	case b.Cap < 0:
		return fmt.Errorf("%w: negative Cap %v", errBackoff, b.Cap)
	case b.Multiplier != 0 && !(b.Multiplier >= 1) || math.IsInf(b.Multiplier, 0):
		return fmt.Errorf("%w: Multiplier %v, want 0 (default 2) or at least 1", errBackoff, b.Multiplier)
	case b.Jitter > NoJitter:
		return fmt.Errorf("%w: unknown Jitter %d", errBackoff, b.Jitter)
	}
	if b.base() > b.cap() {
		return fmt.Errorf("%w: Cap %v below Base %v", errBackoff, b.cap(), b.base())
	}
	return nil
}

func (b Backoff) base() time.Duration {
	if b.Base == 0 {
		return defaultBase
	}
	return b.Base
}

func (b Backoff) cap() time.Duration {
	if b.Cap == 0 {
		return defaultCap
	}
	return b.Cap
}

// ceiling returns min(Cap, Base·Multiplier^(n-1)), the most that retry n (1
// for the first retry) waits under FullJitter, EqualJitter and NoJitter. An n
// below 1 counts as 1.
func (b Backoff) ceiling(n int) time.Duration {
	base, cp := b.base(), b.cap()
	if n <= 1 || base == 0 {
		return min(base, cp)
	}
	m := b.Multiplier
	if m == 0 || m == 2 {
		shift := uint(n - 1)
		if shift >= 63 || base > cp>>shift {
			return cp
		}
		return base << shift
	}
	if m == 1 {
		return min(base, cp)
	}
	f := float64(base) * math.Pow(m, float64(n-1))
	if !(f < float64(cp)) { // also catches +Inf and NaN
		return cp
	}
	return time.Duration(f)
}

// Delay returns the wait before retry n (1 for the first retry). prev is the
// delay returned for the retry before (used only by DecorrelatedJitter; zero
// or less means Base), and r is a uniformly distributed random number, such as
// rand.Uint64(), from which the jitter is drawn, so that Delay is a pure
// function that tests can drive. The result is never negative and never above
// Cap. Delay does not allocate.
func (b Backoff) Delay(n int, prev time.Duration, r uint64) time.Duration {
	switch b.Jitter {
	case EqualJitter:
		c := b.ceiling(n)
		half := c / 2
		return c - half + uniform(r, half)
	case DecorrelatedJitter:
		base, cp := b.base(), b.cap()
		if prev < base {
			prev = base
		}
		hi := cp // 3·prev, saturating
		if prev <= math.MaxInt64/3 {
			hi = 3 * prev
		}
		d := base + uniform(r, hi-base)
		return min(d, cp)
	case NoJitter:
		return b.ceiling(n)
	default:
		return uniform(r, b.ceiling(n))
	}
}

// uniform maps r onto [0, max], inclusive, without bias worth measuring and
// without division.
func uniform(r uint64, max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	hi, _ := bits.Mul64(r, uint64(max)+1)
	return time.Duration(hi)
}

// splitmix64 is the output function of SplitMix64: a cheap, well-mixed
// bijection, so that successive states x, x+γ, x+2γ… give a good stream.
func splitmix64(x uint64) uint64 {
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

const golden = 0x9e3779b97f4a7c15
