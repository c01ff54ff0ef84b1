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
// Errors cross the wire by one table, on [Status]: bulwark's refusals become
// gRPC codes, with a pushback where they say when to retry; [Error] makes an
// error that gRPC sends with that status, and [Classify] counts a status for
// the health of the server. The client interceptor's retries follow gRFC A6,
// as [ClientConfig] says; what a server with Idempotency stores for a key is
// on [ServerConfig].Idempotency.
package bulwarkgrpc
