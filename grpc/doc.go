// Package bulwarkgrpc brings bulwark to gRPC: client interceptors (retries
// with gRFC A6 behaviour, hedging, breakers, adaptive throttling, the
// idempotency key in metadata), a grpc-go load-balancing policy over
// bulwark's balancer (round robin, least request, Peak-EWMA, bounded
// consistent hashing, zones, slow start, outlier ejection), server
// interceptors (concurrency limits and shedding before the request is read,
// rate limits, idempotent unary methods), and grpc.health.v1 both ways (a
// server fed by healthz.Service, a probe for healthcheck.Checker).
//
//	ci, err := bulwarkgrpc.NewClientInterceptor(bulwarkgrpc.ClientConfig{Retry: retryPolicy, Idempotent: isRead})
//	bulwarkgrpc.Register(builder) // once, from main: {"loadBalancingConfig": [{"bulwark": {"algorithm": "peak_ewma"}}]}
//	cc, err := grpc.NewClient(target, append(ci.DialOptions(), grpc.WithDisableRetry(), creds)...)
//	si, err := bulwarkgrpc.NewServerInterceptor(bulwarkgrpc.ServerConfig{Limiter: lim, Idempotency: engine})
//	srv := grpc.NewServer(si.ServerOptions()...)
//
// The pieces: [NewClientInterceptor] and [ClientConfig]; [NewBuilder],
// [BuilderConfig] and [Register] for the load-balancing policy (registered
// only by that explicit call, never in init); [NewServerInterceptor] and
// [ServerConfig]; [NewHealthServer] and [HealthProbe] for grpc.health.v1.
// The constructors never start a goroutine and their errors wrap
// [ErrInvalidConfig].
//
// # Status codes
//
// [Status] and [Error] map errors to gRPC statuses, and [Classify] maps statuses
// back to bulwark outcomes, by one table, chosen by gRPC's status code guide
// (UNAVAILABLE when the client can retry the call as it is, ABORTED when a
// concurrency conflict must be retried later, FAILED_PRECONDITION when
// retrying cannot help until something changes). A "pushback" is a
// PushbackHeader trailer (gRFC A6) where the error is sent by an interceptor,
// and a google.rpc.RetryInfo detail in every case (a tap handle can send no
// trailer); the client interceptor honours both.
//
//	error                                  code                 pushback            client retries
//	breaker.ErrOpen (open breaker)         UNAVAILABLE          open time left      no (retry.Config.MaxOpenWait)
//	limit.ErrRejected (shedding)           RESOURCE_EXHAUSTED   when estimated      with a pushback
//	ratelimit.ErrLimited (over a rate)     RESOURCE_EXHAUSTED   next token          with a pushback
//	throttle.ErrThrottled (client sheds)   UNAVAILABLE          -                   no (never sent)
//	balancer.ErrNoEndpoints/ErrUnavailable UNAVAILABLE          -                   yes
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
// A key reused with another request is FAILED_PRECONDITION rather than
// ALREADY_EXISTS: the client's own request does not exist, the key is bound to
// another one, and only a new key helps. A duplicate never sees ALREADY_EXISTS
// from this package: it gets the first call's response replayed.
//
// For the health of a server (breakers, throttling, outlier ejection,
// Peak-EWMA), Classify counts UNAVAILABLE, DEADLINE_EXCEEDED,
// RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN and DATA_LOSS as failures, the
// caller's own cancellation as nothing, and every other code as a success:
// the server answered; the request was at fault.
//
// # Retries (gRFC A6)
//
// The client interceptor retries a call only when it may run more than once:
// its method is Idempotent or Safe, or the call carries an idempotency key
// (KeyHeader, see WithIdempotencyKey), which a server with Idempotency runs
// once. Each later attempt carries AttemptsHeader, the number of attempts
// before it; the next attempt waits for the retry policy's backoff, and never
// less than the server's pushback; a negative or malformed pushback ends the
// call. Retries spend from the retry policy's budget. With the Builder's
// balancer, a retry goes to an endpoint that the call has not tried yet where
// one is READY. Safe methods may be hedged instead (ClientConfig.Hedge).
//
// # Idempotent unary methods
//
// A ServerInterceptor with Idempotency runs a keyed unary call through
// idempotency.Do: the key is scoped by tenant and method, the fingerprint is
// a SHA-256 of the method and the request's deterministic protobuf encoding.
// What is stored for a key is the JSON object that idempotency.EncodeResult
// makes of
//
//	{"code": 0, "type": "<response message full name>", "message": "<base64 protobuf>"}
//	{"code": <status code>, "status": "<base64 google.rpc.Status>"}
//
// for a response and for a final error status (OK, and INVALID_ARGUMENT,
// NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, FAILED_PRECONDITION,
// OUT_OF_RANGE, UNIMPLEMENTED, UNAUTHENTICATED); any other status releases the
// key, so that a retry runs the handler again. A replay decodes the response
// into a new message of the stored type, found in protoregistry.GlobalTypes
// (generated code registers its types), or returns the stored status with its
// details, and sets ReplayedHeader. Any idempotency.Store works, so several
// servers share keys through redisstore or pgstore.
//
// # Tests and the echo service
//
// The tests run real grpc-go servers on loopback TCP, with a service written
// by hand (a grpc.ServiceDesc over google.protobuf.StringValue), so that no
// protoc is needed.
package bulwarkgrpc
