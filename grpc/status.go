package bulwarkgrpc

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/bulwark-go/bulwark/throttle"
)

// PushbackHeader is the trailer in which a server tells a client when to
// retry, in whole milliseconds, as gRFC A6 specifies: a bulwark server sets
// it on every refusal that carries a wait, and the client interceptor waits
// at least that long before its next attempt. A negative or malformed value
// asks the client not to retry at all.
const PushbackHeader = "grpc-retry-pushback-ms"

// AttemptsHeader is the request header in which the client interceptor tells
// the server how many attempts of the call came before this one, as gRFC A6
// specifies. The first attempt does not carry it.
const AttemptsHeader = "grpc-previous-rpc-attempts"

// Status returns the gRPC status that err stands for. Status, Error and
// Classify (which maps statuses back to bulwark outcomes) share one table,
// chosen by gRPC's status code guide (UNAVAILABLE when the client can retry
// the call as it is, ABORTED when a concurrency conflict must be retried
// later, FAILED_PRECONDITION when retrying cannot help until something
// changes). A "pushback" is a PushbackHeader trailer (gRFC A6) where the
// error is sent by an interceptor, and a google.rpc.RetryInfo detail in
// every case (a tap handle can send no trailer); the client interceptor
// honours both.
//
//	error                                  code                 pushback            client retries
//	breaker.ErrOpen (open breaker)         UNAVAILABLE          open time left      no (retry.Config.MaxOpenWait)
//	limit.ErrRejected (shedding)           RESOURCE_EXHAUSTED   when estimated      with a pushback
//	ratelimit.ErrLimited (over a rate)     RESOURCE_EXHAUSTED   next token          with a pushback
//	throttle.ErrThrottled (client sheds)   UNAVAILABLE          -                   no (never sent)
//	balancer.ErrNoEndpoints/ErrUnavailable UNAVAILABLE          see below           yes
//	bulwark.StatusError (HTTP 429, 50x)    UNAVAILABLE          its Retry-After     yes
//	idempotency.ErrInFlight (duplicate)    ABORTED              Config.RetryAfter   with a pushback
//	idempotency.ErrMismatch (key reused)   FAILED_PRECONDITION  -                   no
//	idempotency.ErrInvalidKey              INVALID_ARGUMENT     -                   no
//	idempotency.ErrStore (fail closed)     UNAVAILABLE          -                   yes
//	context.Canceled                       CANCELLED            -                   no
//	context.DeadlineExceeded               DEADLINE_EXCEEDED    -                   no
//	an error that carries a status         its own code         its own             by RetryableCodes
//	anything else                          UNKNOWN              -                   no
//
// A status that err carries (a server's answer, also when a retry wraps it)
// is returned as it is; a refusal by a bulwark component gets its code from
// the table, and, when the refusal says how long to wait (a RetryAfter
// method), a google.rpc.RetryInfo detail with that wait. The caller's
// cancellation is Canceled, a deadline DeadlineExceeded, anything else
// Unknown. A balancer.ErrUnavailable that wraps the refusal of a breaker or
// a limiter (see balancer.Balancer.Pick) carries that refusal's wait, and
// takes its row where it has one: a *limit.Limiter's refusal makes it
// RESOURCE_EXHAUSTED, an open breaker's UNAVAILABLE. A nil err is OK;
// Status never returns nil.
//
// A key reused with another request is FAILED_PRECONDITION rather than
// ALREADY_EXISTS: the client's own request does not exist, the key is bound
// to another one, and only a new key helps. A duplicate never sees
// ALREADY_EXISTS from this package: it gets the first call's response
// replayed.
func Status(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		if st := gs.GRPCStatus(); st != nil {
			return st
		}
	}
	code := classifyCode(err)
	st := status.New(code, err.Error())
	if d, ok := retryAfter(err); ok && d > 0 {
		if ds, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); derr == nil {
			st = ds
		}
	}
	return st
}

// classifyCode is the code of the table for an error that carries no status.
func classifyCode(err error) codes.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, breaker.ErrOpen):
		return codes.Unavailable
	case errors.Is(err, limit.ErrRejected), errors.Is(err, ratelimit.ErrLimited):
		return codes.ResourceExhausted
	case errors.Is(err, throttle.ErrThrottled):
		return codes.Unavailable
	case errors.As(err, new(*bulwark.StatusError)):
		// HTTP 429, 502, 503 and 504 are UNAVAILABLE in gRPC's mapping of
		// HTTP statuses.
		return codes.Unavailable
	case errors.Is(err, balancer.ErrNoEndpoints), errors.Is(err, balancer.ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, idempotency.ErrInFlight):
		return codes.Aborted
	case errors.Is(err, idempotency.ErrMismatch):
		return codes.FailedPrecondition
	case errors.Is(err, idempotency.ErrInvalidKey):
		return codes.InvalidArgument
	case errors.Is(err, idempotency.ErrStore):
		return codes.Unavailable
	}
	return codes.Unknown
}

// Error returns err as an error that gRPC sends with the status of Status(err)
// and that still unwraps to err, so that errors.Is(err, breaker.ErrOpen)
// holds on the client as status.Code(err) == codes.Unavailable does. It
// returns nil for nil, and err itself when err is already a status error.
func Error(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	return &statusError{st: Status(err), err: err}
}

// statusError is an error with a gRPC status that unwraps to its cause.
type statusError struct {
	st  *status.Status
	err error
}

func (e *statusError) Error() string              { return e.err.Error() }
func (e *statusError) Unwrap() error              { return e.err }
func (e *statusError) GRPCStatus() *status.Status { return e.st }

// Classify is how a call's error counts for the health of the server, for
// the breakers, the throttle and the balancer: nil is a Success; an error
// while the caller's own ctx was canceled is Neutral; the codes that say the
// server could not do its job (Unavailable, DeadlineExceeded,
// ResourceExhausted, Internal, Unknown, DataLoss) are Failures; every other
// code (InvalidArgument, NotFound, FailedPrecondition, …) is a Success: the
// server answered, the request was at fault. It sees through errors marked
// bulwark.Permanent. Use it as breaker.Config.Classify and
// throttle.Config.Classify for the guards of gRPC calls. ctx may be nil.
func Classify(ctx context.Context, err error) bulwark.Outcome {
	if err == nil {
		return bulwark.Success
	}
	if ctx != nil && errors.Is(ctx.Err(), context.Canceled) {
		return bulwark.Neutral
	}
	if failureCode(Status(err).Code()) {
		return bulwark.Failure
	}
	return bulwark.Success
}

// failureCode reports whether code says that the server failed.
func failureCode(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Internal, codes.Unknown, codes.DataLoss:
		return true
	}
	return false
}

// retryAfter returns the wait asked for by the first error in err's chain
// that has a RetryAfter method.
func retryAfter(err error) (time.Duration, bool) {
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		return ra.RetryAfter(), true
	}
	return 0, false
}

// pushbackValue returns the value of PushbackHeader for a wait of d: whole
// milliseconds, rounded up so that a client never comes back early.
func pushbackValue(d time.Duration) string {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms > math.MaxInt32 {
		ms = math.MaxInt32
	}
	return strconv.FormatInt(int64(ms), 10)
}

// pushbackTrailer returns the trailer that carries err's wait, or nil when
// err asks for none.
func pushbackTrailer(err error) metadata.MD {
	if d, ok := retryAfter(err); ok && d > 0 {
		return metadata.MD{PushbackHeader: []string{pushbackValue(d)}}
	}
	return nil
}

// pushback reads the server's wait from the trailer (gRFC A6) or, when the
// trailer has none, from a google.rpc.RetryInfo detail of st. ok reports a
// wait; stop reports that the server asked not to retry (a negative,
// malformed or repeated trailer value).
func pushback(trailer metadata.MD, st *status.Status) (d time.Duration, ok, stop bool) {
	if vs := trailer[PushbackHeader]; len(vs) > 0 {
		if len(vs) > 1 {
			return 0, false, true
		}
		ms, err := strconv.Atoi(vs[0])
		if err != nil || ms < 0 {
			return 0, false, true
		}
		return time.Duration(ms) * time.Millisecond, true, false
	}
	if st == nil {
		return 0, false, false
	}
	for _, det := range st.Details() {
		if ri, isRI := det.(*errdetails.RetryInfo); isRI && ri.GetRetryDelay() != nil {
			d := ri.GetRetryDelay().AsDuration()
			if d < 0 {
				return 0, false, true
			}
			return d, true, false
		}
	}
	return 0, false, false
}
