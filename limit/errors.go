package limit

import (
	"errors"
	"strconv"
	"time"
)

// ErrInvalidConfig is wrapped by the errors of New and NewBulkhead for a
// Config they cannot use; the message names the field.
var ErrInvalidConfig = errors.New("limit: invalid config")

// ErrRejected is the error a Limiter or a Bulkhead returns, wrapped in a
// *RejectedError, when it refuses a call. Test for it with errors.Is.
var ErrRejected = errors.New("limit: rejected")

// Reason says why a call was refused.
type Reason uint8

const (
	// ReasonLimit: every slot the call's criticality may use is taken.
	ReasonLimit Reason = iota + 1
	// ReasonQueueFull: a Bulkhead's slots and queue are all taken by calls
	// at least as critical.
	ReasonQueueFull
	// ReasonWaitTimeout: the call waited in a Bulkhead's queue for
	// BulkheadConfig.MaxWait without getting a slot.
	ReasonWaitTimeout
	// ReasonShed: the call was waiting in a Bulkhead's full queue and a more
	// critical call took its place.
	ReasonShed
	// ReasonTenant: the call's tenant already holds its share of the limit
	// (Config.TenantShare). The HTTP middleware answers it with 429, the
	// others with 503.
	ReasonTenant
)

var reasonNames = [...]string{
	ReasonLimit:       "limit",
	ReasonQueueFull:   "queue_full",
	ReasonWaitTimeout: "wait_timeout",
	ReasonShed:        "shed",
	ReasonTenant:      "tenant",
}

// String returns the reason in snake case, as in events and metric
// attributes: "limit", "queue_full", "wait_timeout", "shed" or "tenant".
func (r Reason) String() string {
	if r > 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// RejectedError is the refusal of a call by a Limiter or a Bulkhead. It
// wraps ErrRejected, says why, and estimates when to try again, so that a
// retrying caller (package retry honours any error with a RetryAfter method)
// waits instead of adding to the overload. Callers reach it with errors.As.
type RejectedError struct {
	// Name is the Config.Name of the limiter or bulkhead.
	Name string
	// Reason says why the call was refused.
	Reason Reason
	// Criticality is the refused call's.
	Criticality Criticality
	// Tenant is the refused call's tenant, "" if it had none.
	Tenant string

	retryAfter time.Duration
}

// Error returns a message such as
// "limit: rejected (orders, limit, sheddable, retry after 20ms)".
func (e *RejectedError) Error() string {
	s := ErrRejected.Error() + " ("
	if e.Name != "" {
		s += e.Name + ", "
	}
	s += e.Reason.String() + ", " + e.Criticality.String()
	if e.Tenant != "" {
		s += ", tenant " + strconv.Quote(e.Tenant)
	}
	if e.retryAfter > 0 {
		s += ", retry after " + e.retryAfter.String()
	}
	return s + ")"
}

// Unwrap returns ErrRejected.
func (e *RejectedError) Unwrap() error { return ErrRejected }

// RetryAfter returns the estimated time until a slot frees for the call: for
// a Limiter, the median latency of its latest measurement window, about
// when the calls in flight will have ended; for a Bulkhead, its MaxWait
// after a wait timed out. Zero means no estimate.
func (e *RejectedError) RetryAfter() time.Duration { return e.retryAfter }
