package ratelimit

import (
	"errors"
	"time"
)

// ErrLimited is the error wrapped by every refusal of a rate limiter: test
// for it with errors.Is.
var ErrLimited = errors.New("ratelimit: rate limit exceeded")

// LimitError is the refusal of a call or a wait by a rate limiter. It wraps
// ErrLimited and tells how long until the tokens asked for are back, so that
// a retrying caller (package retry honours any error with a RetryAfter
// method) waits that long instead of spinning. Callers reach it with
// errors.As.
type LimitError struct {
	// Name is the limiter's Config.Name.
	Name string
	// Key is the Group key, empty for a Limiter.
	Key string
	// Wait is the time from the refusal until the tokens asked for are
	// available; the longest Duration when they never will be (more than
	// Burst).
	Wait time.Duration
	// Reason is "rate" (no token in time), "deadline" (the wait would pass
	// the context's deadline) or "burst" (more than Burst tokens asked for).
	Reason string
}

// Error returns a message such as
// "ratelimit: rate limit exceeded (search, key tenant-7, retry after 250ms)".
func (e *LimitError) Error() string {
	s := ErrLimited.Error() + " ("
	if e.Name != "" {
		s += e.Name + ", "
	}
	if e.Key != "" {
		s += "key " + e.Key + ", "
	}
	switch {
	case e.Wait == forever:
		s += "more tokens than the burst"
	case e.Reason == reasonDeadline:
		s += "retry after " + e.Wait.String() + ", beyond the deadline"
	default:
		s += "retry after " + e.Wait.String()
	}
	return s + ")"
}

// Unwrap returns ErrLimited.
func (e *LimitError) Unwrap() error { return ErrLimited }

// RetryAfter returns Wait.
func (e *LimitError) RetryAfter() time.Duration { return e.Wait }

// The Reasons of a refusal.
const (
	reasonRate     = "rate"
	reasonDeadline = "deadline"
	reasonBurst    = "burst"
)

// Result is the decision on a request for tokens, with what a server
// advertises in its RateLimit and Retry-After header fields.
type Result struct {
	// Allowed reports whether the tokens were taken.
	Allowed bool
	// Limit is the size of the bucket: Burst.
	Limit int
	// Remaining is the number of whole tokens left after the decision.
	Remaining int
	// RetryAfter is, when Allowed is false, the time until the tokens
	// asked for are available (the longest Duration if never); zero when
	// Allowed.
	RetryAfter time.Duration
	// Reset is the time until the bucket is full again.
	Reset time.Duration
}
