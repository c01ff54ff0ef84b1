package fallback

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

// ErrInvalidConfig is wrapped by the error of New for a Config it cannot
// use.
var ErrInvalidConfig = errors.New("fallback: invalid config")

// Config configures a Fallback for values of type T.
type Config[T any] struct {
	// Name names the fallback in events. Optional.
	Name string

	// Func returns the value to use instead, given the caller's context and
	// the error of the call: a cached copy, a default, a degraded answer.
	// Its error, if any, is what Call returns; it may wrap err. Required.
	Func func(ctx context.Context, err error) (T, error)

	// When selects the errors that Func handles; the others are returned
	// as they are. ctx is the caller's context. If nil, DefaultWhen.
	When func(ctx context.Context, err error) bool

	// Observer receives an EventCall each time Func runs: Err is the error
	// it handled, Outcome is Success if Func returned a value and Failure
	// if it failed too, and Reason is "rejected" for an error with a
	// RetryAfter method (an open breaker, a rate limit, shed load),
	// "deadline" for context.DeadlineExceeded and "error" otherwise. If
	// nil, no events and no cost.
	Observer bulwark.Observer
}

// DefaultWhen selects the failures of the callee: an error that
// bulwark.Classify counts as a Failure (so not one that came while the
// caller's own ctx was canceled: nobody is waiting for a fallback) and that
// is not bulwark.Permanent (a refusal of the request itself, such as a
// validation error or a not-found, which a cached value would hide).
func DefaultWhen(ctx context.Context, err error) bool {
	return bulwark.Classify(ctx, err) == bulwark.Failure && !bulwark.IsPermanent(err)
}

// Fallback serves a value of type T when a call fails with an error that its
// Config selects. A Fallback is safe for concurrent use by multiple
// goroutines if its Func and When are. Use New; the zero Fallback is not
// usable.
//
// A Fallback is not a bulwark.Policy: a Policy returns only an error, and
// bulwark.Call would turn a fallback's value into a zero T. Instead Call
// takes the guard, so that the fallback is always the outermost layer, where
// it belongs: inside a retry it would hide from the retry the failures that
// it must see.
type Fallback[T any] struct {
	name string
	fn   func(context.Context, error) (T, error)
	when func(context.Context, error) bool
	obs  bulwark.Observer
}

// New returns a Fallback for cfg. It returns an error wrapping
// ErrInvalidConfig if cfg.Func is nil.
func New[T any](cfg Config[T]) (*Fallback[T], error) {
	if cfg.Func == nil {
		return nil, fmt.Errorf("%w: Func is nil", ErrInvalidConfig)
	}
	f := &Fallback[T]{name: cfg.Name, fn: cfg.Func, when: cfg.When, obs: cfg.Observer}
	if f.when == nil {
		f.when = DefaultWhen
	}
	return f, nil
}

// Call runs op under p, as bulwark.Call does, and returns its value. When
// the call fails with an error that When selects, Call returns Func(ctx,
// err) instead; any other error is returned as it is, with the zero T. A nil
// p runs op directly; a typed nil (a nil *breaker.Breaker in p) is not nil
// here and is called as it is: build p with [bulwark.Compose], which skips
// typed nils, when a policy may be missing.
//
// Call never recovers a panic: a panic in op, p or Func goes up to the
// caller as it is, and Func does not run for it.
func (f *Fallback[T]) Call(ctx context.Context, p bulwark.Policy, op func(context.Context) (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	if p == nil {
		v, err = op(ctx)
	} else {
		v, err = bulwark.Call(ctx, p, op)
	}
	if err == nil {
		return v, nil
	}
	if !f.when(ctx, err) {
		var zero T
		return zero, err
	}
	fv, ferr := f.fn(ctx, err)
	if f.obs != nil {
		e := bulwark.Event{Kind: bulwark.EventCall, Component: bulwark.ComponentFallback, Name: f.name, Err: err, Outcome: bulwark.Success, Reason: reason(err)}
		if ferr != nil {
			e.Outcome = bulwark.Failure
		}
		base.ObserveContext(ctx, f.obs, e)
	}
	return fv, ferr
}

func reason(err error) string {
	var ra interface{ RetryAfter() time.Duration }
	switch {
	case errors.As(err, &ra):
		return "rejected"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	}
	return "error"
}
