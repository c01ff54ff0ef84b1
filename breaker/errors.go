package breaker

import (
	"errors"
	"math"
	"strconv"
	"time"
)

// ErrOpen is the error a breaker returns, wrapped in an *OpenError, when it
// refuses a call: it is open, forced open, or half-open with every probe slot
// taken. Test for it with errors.Is.
var ErrOpen = errors.New("breaker: circuit open")

// OpenError is the refusal of a call by a breaker. It wraps ErrOpen and tells
// how long until the breaker lets a probe through, so that a retrying caller
// can wait that long instead of spinning. Callers reach it with errors.As, or
// through any interface{ RetryAfter() time.Duration }.
type OpenError struct {
	// Name is the breaker's Config.Name (or its Group key).
	Name string
	// State is the breaker's state when it refused the call: Open,
	// ForcedOpen or HalfOpen.
	State State

	retryAfter time.Duration
}

// Error returns a message such as
// "breaker: circuit open (payments, open, retry after 4.2s)".
func (e *OpenError) Error() string {
	s := ErrOpen.Error() + " ("
	if e.Name != "" {
		s += e.Name + ", "
	}
	s += e.State.String()
	if e.State != ForcedOpen {
		s += ", retry after " + e.retryAfter.String()
	}
	return s + ")"
}

// Unwrap returns ErrOpen.
func (e *OpenError) Unwrap() error { return ErrOpen }

// CircuitOpen returns true: the call was refused by a circuit breaker. It is
// how package retry, which does not import this one, tells an open breaker's
// refusal, which fails a retried call at once (see retry.Config.MaxOpenWait),
// from a server's pushback, which it waits out.
func (e *OpenError) CircuitOpen() bool { return true }

// RetryAfter returns the time from the refusal until the breaker lets a probe
// through: for an open breaker, the rest of its open duration; for a
// half-open breaker whose probe slots are all taken, the time until the
// earliest probe's deadline, when a slot frees at the latest. For a breaker
// forced open, which stays open until ForceClosed or Reset, it is the longest
// Duration, so that a retrying caller gives up rather than try again soon.
func (e *OpenError) RetryAfter() time.Duration { return e.retryAfter }

// forever is the RetryAfter of a breaker forced open.
const forever = time.Duration(math.MaxInt64)

// State is the state of a Breaker.
type State uint8

const (
	// Closed: calls pass and their outcomes feed the trip rules.
	Closed State = iota
	// Open: calls are refused until the open duration has passed.
	Open
	// HalfOpen: a bounded number of probe calls pass; enough successes
	// close the breaker, a failure opens it again.
	HalfOpen
	// ForcedOpen: every call is refused until ForceClosed or Reset.
	ForcedOpen
	// ForcedClosed: every call passes and no outcome is recorded, until
	// ForceOpen or Reset.
	ForcedClosed
)

var stateNames = [...]string{
	Closed:       "closed",
	Open:         "open",
	HalfOpen:     "half-open",
	ForcedOpen:   "forced-open",
	ForcedClosed: "forced-closed",
}

// String returns "closed", "open", "half-open", "forced-open" or
// "forced-closed".
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}
