package bulwarkgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
)

// ClientConfig configures a ClientInterceptor. Every part is optional; the
// zero ClientConfig sends each call once, unguarded.
//
// Retries follow gRFC A6. The interceptor retries a call only when it may
// run more than once: its method is Idempotent or Safe, or the call carries
// an idempotency key (KeyHeader, see WithIdempotencyKey), which a server
// with Idempotency runs once. Each later attempt carries AttemptsHeader, the
// number of attempts before it; the next attempt waits for the retry
// policy's backoff, and never less than the server's pushback; a negative or
// malformed pushback ends the call. Retries spend from the retry policy's
// budget. With the Builder's balancer, a retry goes to an endpoint that the
// call has not tried yet where one is READY. Safe methods may be hedged
// instead (Hedge).
type ClientConfig struct {
	// Retry runs the attempts of a call that may be sent again (see
	// Idempotent): a *retry.Policy, with its budget. Each attempt after the
	// first carries AttemptsHeader; an attempt that failed with a status
	// worth retrying (RetryableCodes) is tried again no earlier than the
	// server's pushback (PushbackHeader or a google.rpc.RetryInfo detail);
	// a negative pushback, or any other status, ends the call. Turn
	// grpc-go's own retries off (grpc.WithDisableRetry) when Retry is set,
	// or both retry. If nil, one attempt.
	Retry bulwark.Policy
	// Hedge runs the attempts of a call to a Safe method instead of Retry:
	// a *retry.Hedge, whose later attempts run while the first is still in
	// flight; the first success wins. Each attempt decodes into a reply of
	// its own, copied into the caller's reply when it wins, so the reply must
	// be a proto message. If nil, Safe methods go through Retry.
	Hedge bulwark.Policy
	// Throttle gates each unary call once, before its first attempt: a
	// *throttle.Policy whose Config.Classify is Classify, so that it counts
	// the statuses as a gRPC client should. If nil, no throttling.
	Throttle bulwark.Policy
	// Breakers guards each attempt with the breaker of its key (see
	// BreakerKey): an open breaker refuses the attempt with Unavailable and
	// its remaining open time as pushback. Outcomes are classified with
	// Classify, whatever the group's Config.Classify. If nil, no breaker.
	Breakers *breaker.Group
	// BreakerKey returns the key of a call's breaker from the connection's
	// target and the call's full method name. If nil, the target: one
	// breaker per target. Return the method for one breaker per method.
	BreakerKey func(target, method string) string

	// Idempotent reports whether a method has the same effect however many
	// times it runs (a read, a set, a delete), so that its calls may be sent
	// again. A call to any other method is retried only when it carries an
	// idempotency key (KeyHeader), which makes the server run it once. If
	// nil, only Safe methods and keyed calls are retried.
	Idempotent func(method string) bool
	// Safe reports whether a method has no side effects, so that its calls
	// may be hedged; safe methods are idempotent too. If nil, none.
	Safe func(method string) bool
	// RetryableCodes lists the statuses worth another attempt. If nil,
	// Unavailable; and ResourceExhausted and Aborted when the server sent a
	// pushback with them (an overloaded server shedding, a duplicate that
	// arrived while its first call runs), as a bulwark server does.
	RetryableCodes []codes.Code
	// ForwardKey makes a call that carries no idempotency key of its own
	// forward the one of the incoming call it is made for (the KeyHeader of
	// the ctx's incoming metadata), so that a server passes its client's key
	// downstream. Keys are scoped by method on the server, so forward only
	// to methods whose request is the same for the same incoming call.
	ForwardKey bool
}

// ClientInterceptor guards the calls of a gRPC client: retries with gRFC A6
// behaviour (see ClientConfig), hedging, breakers, adaptive throttling, and
// the idempotency key in metadata. Install it with DialOptions, or Unary and Stream one by one
// (grpc.WithChainUnaryInterceptor, grpc.WithChainStreamInterceptor).
//
// Unary calls get everything. A stream gets its breaker, its key, and, for a
// method that may be sent again, retries of its establishment (a stream
// whose first attempt could not start); it is never hedged, throttled, or
// retried once started.
//
// The errors it returns have the status of the table on Status (status.Code
// works on them) and unwrap to the cause, such as a *retry.GiveUpError or a
// *breaker.OpenError.
//
// A ClientInterceptor is safe for concurrent use by multiple goroutines. Use
// NewClientInterceptor; the zero ClientInterceptor is not usable.
type ClientInterceptor struct {
	retry, hedge, throttle bulwark.Policy
	breakers               *breaker.Group
	breakerKey             func(string, string) string
	idempotent, safe       func(string) bool
	retryable              [numCodes]bool
	pushbackOnly           [numCodes]bool // retryable only with a pushback
	forward                bool
}

const numCodes = 17

// NewClientInterceptor returns a ClientInterceptor for cfg, or an error
// wrapping ErrInvalidConfig for a code in RetryableCodes that is not a gRPC
// status code, or BreakerKey without Breakers.
func NewClientInterceptor(cfg ClientConfig) (*ClientInterceptor, error) {
	c := &ClientInterceptor{
		retry:      cfg.Retry,
		hedge:      cfg.Hedge,
		throttle:   cfg.Throttle,
		breakers:   cfg.Breakers,
		breakerKey: cfg.BreakerKey,
		idempotent: cfg.Idempotent,
		safe:       cfg.Safe,
		forward:    cfg.ForwardKey,
	}
	if cfg.BreakerKey != nil && cfg.Breakers == nil {
		return nil, fmt.Errorf("%w: BreakerKey without Breakers", ErrInvalidConfig)
	}
	if cfg.RetryableCodes == nil {
		c.retryable[codes.Unavailable] = true
		c.retryable[codes.ResourceExhausted], c.pushbackOnly[codes.ResourceExhausted] = true, true
		c.retryable[codes.Aborted], c.pushbackOnly[codes.Aborted] = true, true
	}
	for _, code := range cfg.RetryableCodes {
		if code == codes.OK || code >= numCodes {
			return nil, fmt.Errorf("%w: RetryableCodes holds %v", ErrInvalidConfig, code)
		}
		c.retryable[code] = true
	}
	return c, nil
}

// DialOptions returns the options that install the interceptor, unary and
// streaming.
func (c *ClientInterceptor) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(c.Unary), grpc.WithChainStreamInterceptor(c.Stream)}
}

// WithIdempotencyKey returns a copy of ctx whose outgoing calls carry key in
// KeyHeader, so that a server with idempotency runs the call once however
// often it is sent, and the client interceptor may retry it.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, KeyHeader, key)
}

// prepare gives ctx the forwarded key when asked, and reports whether the
// call carries a key.
func (c *ClientInterceptor) prepare(ctx context.Context) (context.Context, bool) {
	if len(metadata.ValueFromOutgoingContext(ctx, KeyHeader)) > 0 {
		return ctx, true
	}
	if c.forward {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			if ks := md.Get(KeyHeader); len(ks) == 1 && ks[0] != "" {
				return metadata.AppendToOutgoingContext(ctx, KeyHeader, ks[0]), true
			}
		}
	}
	return ctx, false
}

// call is the state of one unary call across its attempts. It is also the
// call's context, which gives the Builder's picker the call's Tried.
type call struct {
	context.Context
	c       *ClientInterceptor
	method  string
	req     any
	reply   any
	cc      *grpc.ClientConn
	invoker grpc.UnaryInvoker
	opts    []grpc.CallOption // the caller's, then the trailer's
	brk     *breaker.Breaker
	policy  bulwark.Policy
	hedged  bool

	trailer  metadata.MD            // of the latest attempt, when not hedged
	trailerO grpc.TrailerCallOption // points at trailer
	optsBuf  [4]grpc.CallOption     // opts' storage for short lists
	attempts atomic.Int32
	tried    tried      // the endpoints tried, for the Builder's picker
	mu       sync.Mutex // guards won
	won      bool       // a hedged attempt has filled reply
}

// Value returns the call's Tried for the picker, and ctx's values otherwise.
func (k *call) Value(key any) any {
	if _, ok := key.(triedKey); ok && k.policy != nil {
		return &k.tried
	}
	return k.Context.Value(key)
}

// Unary is a grpc.UnaryClientInterceptor.
func (c *ClientInterceptor) Unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx, keyed := c.prepare(ctx)
	k := &call{Context: ctx, c: c, method: method, req: req, reply: reply, cc: cc, invoker: invoker}
	safe := c.safe != nil && c.safe(method)
	if safe || keyed || (c.idempotent != nil && c.idempotent(method)) {
		k.policy = c.retry
		if safe && c.hedge != nil {
			if _, ok := reply.(proto.Message); ok {
				k.policy, k.hedged = c.hedge, true
			}
		}
	}
	k.opts = k.optsBuf[:0]
	if len(opts) >= len(k.optsBuf) {
		k.opts = make([]grpc.CallOption, 0, len(opts)+1)
	}
	k.opts = append(k.opts, opts...)
	if !k.hedged {
		k.trailerO.TrailerAddr = &k.trailer
		k.opts = append(k.opts, &k.trailerO)
	}
	if c.breakers != nil {
		key := cc.Target()
		if c.breakerKey != nil {
			key = c.breakerKey(key, method)
		}
		k.brk = c.breakers.Get(key)
	}
	var err error
	if c.throttle != nil {
		err = c.throttle.Do(k, k.run)
	} else {
		err = k.run(k)
	}
	return Error(err)
}

// run runs the call's attempts under its policy.
func (k *call) run(ctx context.Context) error {
	if k.policy == nil {
		return k.attempt(ctx)
	}
	return k.policy.Do(ctx, k.attempt)
}

// attempt sends one attempt and returns its error, marked for the policy: a
// pushbackError with the server's wait, or bulwark.Permanent when the status
// is not worth another attempt.
func (k *call) attempt(ctx context.Context) error {
	n := k.attempts.Add(1)
	if n > 1 {
		ctx = metadata.AppendToOutgoingContext(ctx, AttemptsHeader, strconv.Itoa(int(n-1)))
	}
	var permit breaker.Permit
	if k.brk != nil {
		p, err := k.brk.Allow()
		if err != nil {
			return err
		}
		permit = p
	}
	out, opts, trailer := k.reply, k.opts, &k.trailer
	if k.hedged {
		// Hedged attempts run at once: each has its reply and trailer.
		out = k.reply.(proto.Message).ProtoReflect().New().Interface()
		trailer = new(metadata.MD)
		opts = append(opts[:len(opts):len(opts)], grpc.Trailer(trailer))
	} else {
		k.trailer = nil
	}
	err := k.invoker(ctx, k.method, k.req, out, k.cc, opts...)
	if k.brk != nil {
		permit.Record(Classify(ctx, err))
	}
	if err == nil {
		if k.hedged {
			k.mu.Lock()
			if !k.won {
				k.won = true
				r := k.reply.(proto.Message)
				proto.Reset(r)
				proto.Merge(r, out.(proto.Message))
			}
			k.mu.Unlock()
		}
		return nil
	}
	if k.policy == nil {
		return err
	}
	return k.c.classify(ctx, err, *trailer)
}

// classify marks a failed attempt's error for the retrying policy.
func (c *ClientInterceptor) classify(ctx context.Context, err error, trailer metadata.MD) error {
	if ctx.Err() != nil {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err // not a status: a refusal of a bulwark component, which says itself
	}
	d, hasWait, stop := pushback(trailer, st)
	code := st.Code()
	if stop || code >= numCodes || !c.retryable[code] || (c.pushbackOnly[code] && !hasWait) {
		return bulwark.Permanent(err)
	}
	if hasWait {
		return &pushbackError{err: err, wait: d}
	}
	return err
}

// pushbackError is a retryable attempt's error with the server's pushback.
type pushbackError struct {
	err  error
	wait time.Duration
}

func (e *pushbackError) Error() string             { return e.err.Error() }
func (e *pushbackError) Unwrap() error             { return e.err }
func (e *pushbackError) RetryAfter() time.Duration { return e.wait }

// Stream is a grpc.StreamClientInterceptor: it gives the stream its key and
// its breaker, and retries its establishment under Retry for a method that
// may be sent again.
func (c *ClientInterceptor) Stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, keyed := c.prepare(ctx)
	var brk *breaker.Breaker
	if c.breakers != nil {
		key := cc.Target()
		if c.breakerKey != nil {
			key = c.breakerKey(key, method)
		}
		brk = c.breakers.Get(key)
	}
	var policy bulwark.Policy
	if keyed || (c.safe != nil && c.safe(method)) || (c.idempotent != nil && c.idempotent(method)) {
		policy = c.retry
	}
	var (
		cs       grpc.ClientStream
		attempts int
	)
	open := func(ctx context.Context) error {
		attempts++
		actx := ctx
		if attempts > 1 {
			actx = metadata.AppendToOutgoingContext(ctx, AttemptsHeader, strconv.Itoa(attempts-1))
		}
		var permit breaker.Permit
		if brk != nil {
			p, err := brk.Allow()
			if err != nil {
				return err
			}
			permit = p
		}
		s, err := streamer(actx, desc, cc, method, opts...)
		if err != nil {
			if brk != nil {
				permit.Record(Classify(ctx, err))
			}
			if policy == nil {
				return err
			}
			return c.classify(ctx, err, nil)
		}
		if brk != nil {
			s = &guardedStream{ClientStream: s, permit: permit, ctx: ctx}
		}
		cs = s
		return nil
	}
	var err error
	if policy != nil {
		err = policy.Do(ctx, open)
	} else {
		err = open(ctx)
	}
	if err != nil {
		return nil, Error(err)
	}
	return cs, nil
}

// guardedStream records the stream's outcome with its breaker when the
// stream ends.
type guardedStream struct {
	grpc.ClientStream
	permit breaker.Permit
	ctx    context.Context
	done   atomic.Bool
}

func (s *guardedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil && s.done.CompareAndSwap(false, true) {
		if errors.Is(err, io.EOF) {
			s.permit.Record(bulwark.Success)
		} else {
			s.permit.Record(Classify(s.ctx, err))
		}
	}
	return err
}
