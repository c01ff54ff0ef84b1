package bulwark

import (
	"context"
	"errors"
	"strconv"
)

// PermanentError marks an error that no retry can fix, such as a validation
// failure or a 4xx answer. Create one with Permanent; test for one with
// IsPermanent, which sees through wrapping.
type PermanentError struct {
	Err error
}

// Error returns the message of the wrapped error.
func (e *PermanentError) Error() string {
	if e.Err == nil {
		return "permanent error"
	}
	return e.Err.Error()
}

// Unwrap returns the wrapped error, so errors.Is and errors.As reach it.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as not retryable. It returns nil for a nil err, and err
// itself when err is already permanent.
func Permanent(err error) error {
	if err == nil || IsPermanent(err) {
		return err
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or any error it wraps, was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// Outcome is how a finished call counts for the health of its callee.
type Outcome uint8

const (
	// Success: the callee did its job.
	Success Outcome = iota
	// Failure: the callee failed, timed out, or could not be reached.
	Failure
	// Neutral: the result says nothing about the callee's health, such as a
	// call canceled by its own caller.
	Neutral
)

// String returns "success", "failure" or "neutral".
func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Failure:
		return "failure"
	case Neutral:
		return "neutral"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Classify is the classification that retry, breaker and balancer share by
// default. A nil err is a Success. An error while the caller's own ctx was
// canceled (ctx.Err() is context.Canceled) is Neutral: the caller gave up, the
// callee did not fail. Everything else, context.DeadlineExceeded included, is
// a Failure: a callee too slow for its deadline has failed. ctx may be nil.
//
// Permanent errors are failures here; whether they should also trip a
// breaker is the breaker's configuration, and retry never retries them.
func Classify(ctx context.Context, err error) Outcome {
	if err == nil {
		return Success
	}
	if ctx != nil && errors.Is(ctx.Err(), context.Canceled) {
		return Neutral
	}
	return Failure
}
