package bulwark

import (
	"context"
	"errors"
	"strconv"
	"time"
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

// StatusError is the failure of an HTTP attempt that got an answer worth a
// retry: 429 Too Many Requests, 502 Bad Gateway, 503 Service Unavailable or
// 504 Gateway Timeout. retry.Transport, balancer.Transport and
// retry.ResponseError return it, so that a retrying Policy, a breaker's
// Classify, a Retryable hook or an Observer meets one type whichever
// transport sent the request. Its RetryAfter method returns the wait the
// server asked for, which a retry.Policy honours.
type StatusError struct {
	// StatusCode is the response's status code.
	StatusCode int
	// Wait is the server's Retry-After, zero if it sent none (or one that
	// did not parse). A wait too long for a Duration is the largest one.
	Wait time.Duration
	// Endpoint is the endpoint that answered, when a balancer picked it;
	// zero otherwise.
	Endpoint Endpoint
}

// Error returns a message such as
// "HTTP 503 Service Unavailable from 10.0.0.1:80 (retry after 2s)".
func (e *StatusError) Error() string {
	s := "HTTP " + strconv.Itoa(e.StatusCode)
	switch e.StatusCode {
	case 429:
		s += " Too Many Requests"
	case 502:
		s += " Bad Gateway"
	case 503:
		s += " Service Unavailable"
	case 504:
		s += " Gateway Timeout"
	}
	if e.Endpoint.Addr != "" {
		s += " from " + e.Endpoint.Addr
	}
	if e.Wait > 0 {
		s += " (retry after " + e.Wait.String() + ")"
	}
	return s
}

// RetryAfter returns Wait.
func (e *StatusError) RetryAfter() time.Duration { return e.Wait }
