package bulwarkgrpc

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/ratelimit"
)

// KeyHeader is the metadata key that carries a call's idempotency key, sent
// by the client interceptor and read by the server interceptor.
const KeyHeader = "idempotency-key"

// ReplayedHeader is the response header, set to "true", of a call whose
// response was replayed from the idempotency store.
const ReplayedHeader = "idempotent-replayed"

// CriticalityHeader is the metadata key from which the server interceptor
// reads a call's criticality when ServerConfig.TrustCriticality is set:
// "critical", "normal" or "sheddable", as limit.ParseCriticality reads them.
const CriticalityHeader = "bulwark-criticality"

// ErrInvalidConfig is wrapped by the errors of the constructors of this
// package for a Config they cannot use; the message names the field.
var ErrInvalidConfig = errors.New("bulwarkgrpc: invalid config")

// RateLimiter decides on calls by key without blocking; *ratelimit.Group
// satisfies it. The tap handle calls it on the connection's reader, so it
// must not do I/O.
type RateLimiter interface {
	AllowN(key string, now time.Time, n int) ratelimit.Result
}

// ServerConfig configures a ServerInterceptor. Every part is optional; the
// zero ServerConfig guards nothing.
type ServerConfig struct {
	// Limiter admits each call, unary and streaming, and sheds what it
	// refuses with ResourceExhausted and a pushback: a *limit.Limiter (an
	// adaptive concurrency limit) or a *limit.Bulkhead. A *limit.Limiter,
	// which never waits, admits in the tap handle, before the request is
	// read; any other Acquirer admits in the interceptors, since the tap must
	// not block. If nil, no concurrency limit.
	Limiter limit.Acquirer
	// RateLimit refuses calls over their rate with ResourceExhausted and a
	// pushback, in the tap handle (or the interceptors when the tap is not
	// installed). If nil, no rate limit.
	RateLimit RateLimiter
	// RateKey returns the key of a call for RateLimit, from its full method
	// name ("/pkg.Service/Method") and request metadata. If nil, the
	// tenant (see Tenant) followed by the method.
	RateKey func(method string, md metadata.MD) string
	// Criticality returns a call's criticality for Limiter, from its method
	// and metadata. If nil, every call is Normal, unless TrustCriticality.
	Criticality func(method string, md metadata.MD) limit.Criticality
	// TrustCriticality makes a criticality that the call carries in
	// CriticalityHeader win over Criticality: set it only behind a proxy of
	// yours that classifies calls, never where clients call directly.
	TrustCriticality bool
	// Tenant returns a call's tenant, for Limiter's TenantShare, the default
	// RateKey and the scope of idempotency keys. If nil, calls have none.
	Tenant func(method string, md metadata.MD) string

	// Idempotency, if not nil, makes unary methods idempotent under the
	// KeyHeader metadata key: the first call with a key runs the handler
	// and stores its response (or its final status); a duplicate gets the
	// stored response and status replayed, with ReplayedHeader, without
	// running the handler; a duplicate while the first is in flight gets
	// Aborted with a pushback; a key reused with another request gets
	// FailedPrecondition.
	//
	// A keyed unary call runs through idempotency.Do: the key is scoped by
	// tenant and method, the fingerprint is a SHA-256 of the method and the
	// request's deterministic protobuf encoding. What is stored for a key is
	// the JSON object that idempotency.EncodeResult makes of
	//
	//	{"code": 0, "type": "<response message full name>", "message": "<base64 protobuf>"}
	//	{"code": <status code>, "status": "<base64 google.rpc.Status>"}
	//
	// for a response and for a final error status (OK, and InvalidArgument,
	// NotFound, AlreadyExists, PermissionDenied, FailedPrecondition,
	// OutOfRange, Unimplemented, Unauthenticated); any other status releases
	// the key, so that a retry runs the handler again. A replay decodes the
	// response into a new message of the stored type, found in
	// protoregistry.GlobalTypes (generated code registers its types), or
	// returns the stored status with its details, and sets ReplayedHeader.
	// Any idempotency.Store works, so several servers share keys through
	// redisstore or pgstore.
	Idempotency *idempotency.Engine
	// IdempotentMethods lists the full method names that Idempotency
	// protects. If nil, every unary method.
	IdempotentMethods []string
	// RequireKey refuses a call to a protected method that carries no key
	// with InvalidArgument. If false, such a call runs unprotected.
	RequireKey bool
	// MaxKeyLength bounds a key's length in bytes; a longer one is refused
	// with InvalidArgument. If zero, 255. It must not be negative.
	MaxKeyLength int

	// Clock is the time source of RateLimit. If nil, the wall clock.
	Clock bulwark.Clock
}

// ServerInterceptor guards the calls of a gRPC server: concurrency limits and
// shedding, rate limits, and idempotent unary methods. Install all of it with
// ServerOptions, or its parts one by one: Tap (grpc.InTapHandle), Unary and
// Stream (grpc.ChainUnaryInterceptor, grpc.ChainStreamInterceptor). Without the
// tap, the interceptors do its work, after the request has been read.
//
// A ServerInterceptor is safe for concurrent use by multiple goroutines. Use
// NewServerInterceptor; the zero ServerInterceptor is not usable.
type ServerInterceptor struct {
	limiter     limit.Acquirer
	tapAdmits   bool // limiter never waits, so the tap may admit
	rate        RateLimiter
	rateKey     func(string, metadata.MD) string
	criticality func(string, metadata.MD) limit.Criticality
	trustCrit   bool
	tenant      func(string, metadata.MD) string
	engine      *idempotency.Engine
	methods     map[string]bool // nil: all
	requireKey  bool
	maxKey      int
	clk         bulwark.Clock
}

// NewServerInterceptor returns a ServerInterceptor for cfg, or an error
// wrapping ErrInvalidConfig for a negative MaxKeyLength or IdempotentMethods
// without Idempotency.
func NewServerInterceptor(cfg ServerConfig) (*ServerInterceptor, error) {
	if cfg.MaxKeyLength < 0 {
		return nil, fmt.Errorf("%w: MaxKeyLength %d is negative", ErrInvalidConfig, cfg.MaxKeyLength)
	}
	if cfg.IdempotentMethods != nil && cfg.Idempotency == nil {
		return nil, fmt.Errorf("%w: IdempotentMethods without Idempotency", ErrInvalidConfig)
	}
	s := &ServerInterceptor{
		limiter:     cfg.Limiter,
		rate:        cfg.RateLimit,
		rateKey:     cfg.RateKey,
		criticality: cfg.Criticality,
		trustCrit:   cfg.TrustCriticality,
		tenant:      cfg.Tenant,
		engine:      cfg.Idempotency,
		requireKey:  cfg.RequireKey,
		maxKey:      cfg.MaxKeyLength,
		clk:         clockOrWall(cfg.Clock),
	}
	if s.maxKey == 0 {
		s.maxKey = 255
	}
	if _, ok := cfg.Limiter.(*limit.Limiter); ok {
		s.tapAdmits = true
	}
	if cfg.IdempotentMethods != nil {
		s.methods = make(map[string]bool, len(cfg.IdempotentMethods))
		for _, m := range cfg.IdempotentMethods {
			s.methods[m] = true
		}
	}
	return s, nil
}

// ServerOptions returns the options that install the whole interceptor: the
// tap handle and the unary and stream interceptors. A server takes one tap
// handle only (grpc.InTapHandle panics on a second).
func (s *ServerInterceptor) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InTapHandle(s.Tap),
		grpc.ChainUnaryInterceptor(s.Unary),
		grpc.ChainStreamInterceptor(s.Stream),
	}
}

// admission is what the tap handle decided for a call, carried in its
// context to the interceptors.
type admission struct {
	permit   limit.Permit
	admitted bool        // permit holds a slot
	stop     func() bool // stops the release at the end of the stream
}

type admissionKey struct{}

// Tap is a tap.ServerInHandle: it applies RateLimit and, for a
// *limit.Limiter, the concurrency limit, before the request is read or a
// goroutine is spent on it. A refused call ends with ResourceExhausted and a
// google.rpc.RetryInfo detail (a tap cannot send trailers, so the wait goes
// in the status). An admitted call's slot is returned by the interceptors
// when the handler ends, or when the stream ends if no interceptor ran (an
// unknown method, a request that could not be read).
func (s *ServerInterceptor) Tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if s.rate != nil {
		if err := s.checkRate(info.FullMethodName, info.Header); err != nil {
			return ctx, Error(err)
		}
	}
	a := &admission{}
	if s.limiter != nil && s.tapAdmits {
		lctx := s.limitContext(ctx, info.FullMethodName, info.Header)
		p, err := s.limiter.Acquire(lctx)
		if err != nil {
			return ctx, Error(err)
		}
		a.permit, a.admitted = p, true
		a.stop = context.AfterFunc(ctx, func() { a.permit.Done(context.Canceled) })
	}
	return context.WithValue(ctx, admissionKey{}, a), nil
}

// checkRate returns the refusal of a call over its rate, or nil.
func (s *ServerInterceptor) checkRate(method string, md metadata.MD) error {
	key := ""
	if s.rateKey != nil {
		key = s.rateKey(method, md)
	} else {
		if s.tenant != nil {
			key = s.tenant(method, md)
		}
		key += method
	}
	res := s.rate.AllowN(key, s.clk.Now(), 1)
	if res.Allowed {
		return nil
	}
	return &ratelimit.LimitError{Key: key, Wait: res.RetryAfter, Reason: "rate"}
}

// limitContext returns ctx with the call's criticality and tenant.
func (s *ServerInterceptor) limitContext(ctx context.Context, method string, md metadata.MD) context.Context {
	c := limit.Normal
	if s.criticality != nil {
		c = s.criticality(method, md)
	}
	if s.trustCrit {
		if vs := md.Get(CriticalityHeader); len(vs) == 1 {
			if tc, ok := limit.ParseCriticality(vs[0]); ok {
				c = tc
			}
		}
	}
	if c != limit.Normal {
		ctx = limit.WithCriticality(ctx, c)
	}
	if s.tenant != nil {
		if t := s.tenant(method, md); t != "" {
			ctx = limit.WithTenant(ctx, t)
		}
	}
	return ctx
}

// admit applies, in an interceptor, what the tap did not. It returns the
// permit to end with the handler's error, if any, and the context to run
// the handler with.
func (s *ServerInterceptor) admit(ctx context.Context, method string) (context.Context, *limit.Permit, error) {
	a, _ := ctx.Value(admissionKey{}).(*admission)
	var md metadata.MD
	if a == nil || (s.limiter != nil && !s.tapAdmits) {
		md, _ = metadata.FromIncomingContext(ctx)
	}
	if a == nil && s.rate != nil {
		if err := s.checkRate(method, md); err != nil {
			return ctx, nil, err
		}
	}
	if a != nil && a.admitted {
		if !a.stop() {
			return ctx, nil, nil // the stream already ended and released the slot
		}
		return ctx, &a.permit, nil
	}
	if s.limiter == nil {
		return ctx, nil, nil
	}
	lctx := s.limitContext(ctx, method, md)
	p, err := s.limiter.Acquire(lctx)
	if err != nil {
		return ctx, nil, err
	}
	return lctx, &p, nil
}

// end ends p with the handler's error, counting a refusal for overload
// (Unavailable, ResourceExhausted) as a drop.
func end(p *limit.Permit, err error) {
	if p == nil {
		return
	}
	switch status.Code(err) {
	case codes.OK:
		p.Done(nil)
	case codes.Canceled:
		p.Done(context.Canceled)
	case codes.DeadlineExceeded:
		p.Done(context.DeadlineExceeded)
	case codes.Unavailable, codes.ResourceExhausted:
		p.Drop()
	default:
		p.Done(err)
	}
}

// refuse sets the pushback trailer of err, if it has a wait, and returns err
// as a status error.
func refuse(ctx context.Context, err error) error {
	if md := pushbackTrailer(err); md != nil {
		_ = grpc.SetTrailer(ctx, md)
	}
	return Error(err)
}

// Unary is a grpc.UnaryServerInterceptor: it admits the call (unless the tap
// did), then runs it under Idempotency when the method is protected.
func (s *ServerInterceptor) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	ctx, p, err := s.admit(ctx, info.FullMethod)
	if err != nil {
		return nil, refuse(ctx, err)
	}
	defer func() {
		if r := recover(); r != nil {
			end(p, errPanic)
			panic(r)
		}
		end(p, err)
	}()
	if s.engine != nil && (s.methods == nil || s.methods[info.FullMethod]) {
		return s.idempotent(ctx, req, info.FullMethod, handler)
	}
	return handler(ctx, req)
}

var errPanic = errors.New("bulwarkgrpc: handler panicked")

// Stream is a grpc.StreamServerInterceptor: it admits the stream (unless the
// tap did) and returns its slot when the handler ends. Streams are not made
// idempotent.
func (s *ServerInterceptor) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	ctx, p, err := s.admit(ss.Context(), info.FullMethod)
	if err != nil {
		if md := pushbackTrailer(err); md != nil {
			ss.SetTrailer(md)
		}
		return Error(err)
	}
	defer func() {
		if r := recover(); r != nil {
			end(p, errPanic)
			panic(r)
		}
		end(p, err)
	}()
	if ctx != ss.Context() {
		ss = &contextStream{ServerStream: ss, ctx: ctx}
	}
	return handler(srv, ss)
}

// contextStream is a ServerStream with another context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *contextStream) Context() context.Context { return c.ctx }

// stored is what Idempotency keeps for a call, encoded by idempotency.Do as
// JSON: {"code": n, "type": "pkg.Reply", "message": "<base64 protobuf>"} for
// a response, {"code": n, "status": "<base64 google.rpc.Status>"} for a final
// error status.
type stored struct {
	Code    uint32 `json:"code"`
	Type    string `json:"type,omitempty"`
	Message []byte `json:"message,omitempty"`
	Status  []byte `json:"status,omitempty"`
}

// finalCode reports whether a status is the call's final answer, stored and
// replayed: OK, and the codes that blame the request. The others
// (Unavailable, DeadlineExceeded, ResourceExhausted, Aborted, Internal,
// Unknown, DataLoss, Canceled) release the key so that a retry runs again.
func finalCode(c codes.Code) bool {
	switch c {
	case codes.OK, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented, codes.Unauthenticated:
		return true
	}
	return false
}

// idempotent runs a unary call under the idempotency engine.
func (s *ServerInterceptor) idempotent(ctx context.Context, req any, method string, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	keys := md.Get(KeyHeader)
	switch {
	case len(keys) == 0 && !s.requireKey:
		return handler(ctx, req)
	case len(keys) == 0:
		return nil, Error(fmt.Errorf("%w: missing %s metadata", idempotency.ErrInvalidKey, KeyHeader))
	case len(keys) > 1:
		return nil, Error(fmt.Errorf("%w: %d values of %s", idempotency.ErrInvalidKey, len(keys), KeyHeader))
	case keys[0] == "" || len(keys[0]) > s.maxKey:
		return nil, Error(fmt.Errorf("%w: length %d not in [1, %d]", idempotency.ErrInvalidKey, len(keys[0]), s.maxKey))
	}
	msg, ok := req.(proto.Message)
	if !ok {
		return nil, status.Errorf(codes.Internal, "bulwarkgrpc: request %T of %s is not a proto message", req, method)
	}
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "bulwarkgrpc: encoding the request: %v", err)
	}
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write(body)
	fp := h.Sum(nil)
	tenant := ""
	if s.tenant != nil {
		tenant = s.tenant(method, md)
	}
	key := "grpc:" + strconv.Itoa(len(tenant)) + ":" + tenant + method + ":" + keys[0]

	var (
		resp    any
		respErr error
		ran     bool
	)
	rec, err := idempotency.Do(ctx, s.engine, key, fp, func(ctx context.Context) (stored, error) {
		ran = true
		resp, respErr = handler(ctx, req)
		st := status.Convert(respErr)
		if !finalCode(st.Code()) {
			return stored{}, respErr
		}
		if respErr != nil {
			b, err := proto.Marshal(st.Proto())
			if err != nil {
				return stored{}, respErr
			}
			return stored{Code: uint32(st.Code()), Status: b}, nil
		}
		m, ok := resp.(proto.Message)
		if !ok {
			return stored{}, bulwark.Permanent(fmt.Errorf("bulwarkgrpc: response %T is not a proto message", resp))
		}
		b, err := proto.Marshal(m)
		if err != nil {
			return stored{}, bulwark.Permanent(fmt.Errorf("bulwarkgrpc: encoding the response: %w", err))
		}
		return stored{Type: string(m.ProtoReflect().Descriptor().FullName()), Message: b}, nil
	})
	if ran {
		return resp, respErr
	}
	if err != nil {
		return nil, refuse(ctx, err)
	}
	return replay(ctx, rec)
}

// replay returns the stored response or status of a call.
func replay(ctx context.Context, rec stored) (any, error) {
	_ = grpc.SetHeader(ctx, metadata.Pairs(ReplayedHeader, "true"))
	if codes.Code(rec.Code) != codes.OK {
		sp := &spb.Status{}
		if err := proto.Unmarshal(rec.Status, sp); err != nil {
			return nil, status.Errorf(codes.Internal, "bulwarkgrpc: stored status: %v", err)
		}
		return nil, status.ErrorProto(sp)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(rec.Type))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "bulwarkgrpc: stored response type %q: %v", rec.Type, err)
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(rec.Message, m); err != nil {
		return nil, status.Errorf(codes.Internal, "bulwarkgrpc: stored response: %v", err)
	}
	return m, nil
}
