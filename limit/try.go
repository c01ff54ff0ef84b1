package limit

import (
	"time"

	"github.com/bulwark-go/bulwark"
)

// TryAcquire is Acquire for a caller that tries several limiters in turn and
// has no context to give, such as a client-side balancer with one Limiter per
// endpoint (a *Limiter satisfies balancer.Limiter): it admits one Normal
// call without a tenant, or refuses it at once. On success the call must be
// ended with Release and the token, exactly once; the balancer does so from
// Pick.Done.
//
// A refusal is not reported to the Observer, since the call may still go
// to another limiter's callee: the caller reports the calls it refuses in
// the end. The error wraps ErrRejected, has a RetryAfter method (about one
// call's latency, as a *RejectedError's), and errors.As finds a
// *RejectedError in it with ReasonLimit. Neither an admission nor a refusal
// allocates.
func (l *Limiter) TryAcquire() (token uint64, err error) {
	// Admission and sampling as in Acquire, for a Normal call.
	hint := stackHint()
	n, ok := l.s.take(Normal.level(), hint)
	if !ok {
		l.rej.Add(1) // the controller's target follows the share refused
		return 0, tryRefusal{l}
	}
	var start int64
	if n >= 0 {
		if n&(l.every.Load()-1) == 0 {
			start = l.sample()
		}
	} else if st := &l.s.stripes[hint&l.s.mask]; st.countdown.Add(-1) <= 0 {
		st.countdown.Store(l.every.Load())
		start = l.sample()
	}
	return packToken(start, uint32(hint&l.s.mask)), nil
}

// Release ends a call admitted by TryAcquire with token, and returns its
// slot. o is how the call went: a Success is measured, as Permit.Done(nil)
// does; a Failure frees the slot but teaches nothing, as a failure that is
// not a timeout; Neutral (the caller gave up) or OutcomeUnknown teaches
// nothing. overload, whatever o, counts the call as a sign of overload, as
// Permit.Drop: a timeout, or an answer "too busy" (503, 429). Release must
// be called exactly once per token: a token released twice returns a slot it
// does not hold. Release never blocks.
func (l *Limiter) Release(token uint64, o bulwark.Outcome, overload bool) {
	p := l.unpackToken(token)
	switch {
	case overload:
		p.end(outcomeDrop)
	case o == bulwark.Success:
		p.end(outcomeSuccess)
	case o == bulwark.Failure:
		p.end(outcomeFailure)
	default:
		p.end(outcomeNeutral)
	}
}

// A token is a Permit of TryAcquire in one word: the stripe in the low
// tokenStripeBits, and above them the sampled call's start (elapsed ns, 0
// when not sampled) in units of 2^tokenGrain ns, rounded up so that a
// sampled call stays sampled, which lasts 2^60 ns (36 years) after New. A
// sampled call's latency is thus measured short by less than a unit (16 ns),
// and Release reads no clock of its own.
const (
	tokenStripeBits = 8 // stripes number at most 64
	tokenGrain      = 4
)

func packToken(start int64, stripe uint32) uint64 {
	return (uint64(start)+1<<tokenGrain-1)>>tokenGrain<<tokenStripeBits | uint64(stripe)
}

// unpackToken returns the Permit of t.
func (l *Limiter) unpackToken(t uint64) Permit {
	return Permit{l: l, start: int64(t>>tokenStripeBits) << tokenGrain, stripe: uint32(t & (1<<tokenStripeBits - 1))}
}

// tryRefusal is TryAcquire's refusal: one pointer, so that returning it as an
// error allocates nothing; the *RejectedError is made only when errors.As
// asks for one.
type tryRefusal struct{ l *Limiter }

func (r tryRefusal) rejected() *RejectedError {
	return &RejectedError{Name: r.l.name, Reason: ReasonLimit, Criticality: Normal, retryAfter: r.RetryAfter()}
}

// Error returns the message of the *RejectedError, such as
// "limit: rejected (edge/10.0.0.1:80, limit, normal, retry after 20ms)".
func (r tryRefusal) Error() string { return r.rejected().Error() }

// Unwrap returns ErrRejected.
func (r tryRefusal) Unwrap() error { return ErrRejected }

// RetryAfter returns the median latency of the limiter's latest window, as
// RejectedError.RetryAfter does; zero before the first.
func (r tryRefusal) RetryAfter() time.Duration { return time.Duration(r.l.p50.Load()) }

// As sets a **RejectedError target to the refusal as a *RejectedError.
func (r tryRefusal) As(target any) bool {
	if p, ok := target.(**RejectedError); ok {
		*p = r.rejected()
		return true
	}
	return false
}
