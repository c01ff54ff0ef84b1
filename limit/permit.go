package limit

import (
	"context"
	"errors"

	"github.com/bulwark-go/bulwark"
)

// Permit is a call admitted by Limiter.Acquire or Bulkhead.Acquire, to be
// ended with Done (or Drop) exactly once. It is a small value: passing it
// around allocates nothing. A Permit is not safe for concurrent use: end it
// from one goroutine, on the Permit itself rather than on a copy (a copy does
// not know that the original is done). The zero Permit holds nothing, and
// ending it does nothing.
type Permit struct {
	l      *Limiter  // nil for a Bulkhead's
	b      *Bulkhead // nil for a Limiter's
	tenant string    // counted in the tenant table, if not ""
	start  int64     // Limiter: elapsed ns at admission of a sampled call, 0 if not sampled
	stripe uint32    // where the token goes back
	done   bool
}

// Done ends the call and returns its slot. err is the call's error: nil is a
// success, whose latency a Limiter learns from; an error wrapping
// context.DeadlineExceeded is a timeout, which a Limiter counts as a sign of
// overload (as Drop); an error wrapping context.Canceled (the caller gave up)
// teaches nothing; any other error is a failure, which frees the slot but,
// being possibly fast, says nothing about capacity. A second Done or Drop on
// the same Permit is ignored and reported to the Observer as EventMisuse.
// Done never blocks.
func (p *Permit) Done(err error) {
	p.end(classify(err))
}

// Drop ends the call as a sign of overload, whatever its error: a
// dependency that answered "too busy" (a 503 or 429), or a call abandoned on
// a timeout of the caller's own. A Limiter counts it as it counts a
// timeout.
func (p *Permit) Drop() {
	p.end(outcomeDrop)
}

// outcome is how an ended call counts for a Limiter.
type outcome uint8

const (
	outcomeSuccess outcome = iota
	outcomeDrop
	outcomeFailure
	outcomeNeutral
)

func classify(err error) outcome {
	switch {
	case err == nil:
		return outcomeSuccess
	case errors.Is(err, context.Canceled):
		return outcomeNeutral
	case errors.Is(err, context.DeadlineExceeded):
		return outcomeDrop
	}
	return outcomeFailure
}

func (p *Permit) end(o outcome) {
	if p.done {
		p.misuse()
		return
	}
	switch {
	case p.l != nil:
		p.done = true
		p.l.release(p, o)
	case p.b != nil:
		p.done = true
		p.b.release(p)
	}
}

func (p *Permit) misuse() {
	var (
		obs             bulwark.Observer
		component, name string
	)
	switch {
	case p.l != nil:
		obs, component, name = p.l.obs, bulwark.ComponentLimiter, p.l.name
	case p.b != nil:
		obs, component, name = p.b.obs, bulwark.ComponentBulkhead, p.b.name
	}
	if obs != nil {
		obs.Observe(bulwark.Event{Kind: bulwark.EventMisuse, Component: component, Name: name, Reason: "permit ended twice"})
	}
}
