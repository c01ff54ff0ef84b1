package benchmarks

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/failsafegrpc"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/leastrequest" // registers least_request_experimental, as its users import it
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bulwark-go/bulwark/breaker"
	bulwarkgrpc "github.com/bulwark-go/bulwark/grpc"
	"github.com/bulwark-go/bulwark/retry"
)

// The gRPC benchmarks run real grpc-go servers on loopback TCP with a service
// written by hand (one unary method over google.protobuf.StringValue).

const grpcMethod = "/bench.Echo/Get"

// grpcServer starts a server that answers after delay (none if zero).
func grpcServer(b *testing.B, delay time.Duration) string {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "bench.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Get", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			if delay > 0 {
				time.Sleep(delay)
			}
			return in, nil
		}}},
	}, nil)
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func grpcDial(b *testing.B, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	b.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cc.Close() })
	return cc
}

func grpcCall(ctx context.Context, cc *grpc.ClientConn) error {
	return cc.Invoke(ctx, grpcMethod, wrapperspb.String("x"), new(wrapperspb.StringValue))
}

// The figures include cpu-ns/op, the process's CPU time per call (client and
// servers together): on a busy machine wall time per call mostly measures
// the wait for a core, and CPU time per call does not.

// BenchmarkGRPCUnary measures one unary call on loopback, bare and through
// each library's client interceptor with a retry policy (3 attempts) and a
// circuit breaker; the call succeeds at once, so the figures are what every
// call pays. grpc_retry is grpc-go's own retry policy from the service config.
func BenchmarkGRPCUnary(b *testing.B) {
	addr := grpcServer(b, 0)
	target := "passthrough:///" + addr
	rp, err := retry.New(retry.Config{MaxAttempts: 3})
	if err != nil {
		b.Fatal(err)
	}
	group, err := breaker.NewGroup(breaker.GroupConfig{Breaker: breaker.Config{Classify: bulwarkgrpc.Classify}})
	if err != nil {
		b.Fatal(err)
	}
	ci, err := bulwarkgrpc.NewClientInterceptor(bulwarkgrpc.ClientConfig{Retry: rp, Breakers: group, Idempotent: func(string) bool { return true }})
	if err != nil {
		b.Fatal(err)
	}
	fsRetry := retrypolicy.NewBuilder[any]().WithMaxRetries(2).Build()
	fsBreaker := circuitbreaker.NewWithDefaults[any]()
	conns := []struct {
		name string
		cc   *grpc.ClientConn
	}{
		{"bare", grpcDial(b, target, grpc.WithDisableRetry())},
		{"bulwark", grpcDial(b, target, append(ci.DialOptions(), grpc.WithDisableRetry())...)},
		{"grpc_retry", grpcDial(b, target, grpc.WithDefaultServiceConfig(`{"methodConfig": [{"name": [{"service": "bench.Echo"}],
			"retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "10s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}`))},
		{"failsafegrpc", grpcDial(b, target, grpc.WithDisableRetry(),
			grpc.WithUnaryInterceptor(failsafegrpc.NewUnaryClientInterceptor[any](fsRetry, fsBreaker)))},
	}
	for _, c := range conns {
		if err := grpcCall(context.Background(), c.cc); err != nil {
			b.Fatal(c.name, err)
		}
	}
	for _, c := range conns {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := cpuTime()
			ctx := context.Background()
			for b.Loop() {
				if err := grpcCall(ctx, c.cc); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
	}
	for _, c := range conns {
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			cpu := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if err := grpcCall(ctx, c.cc); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportCPU(b, cpu)
		})
	}
}

var registerBulwark sync.Once

// grpcFleet returns a connection to the servers at addrs through a manual
// resolver, with the load-balancing config lb.
func grpcFleet(b *testing.B, addrs []string, lb string) *grpc.ClientConn {
	b.Helper()
	registerBulwark.Do(func() {
		bld, err := bulwarkgrpc.NewBuilder(bulwarkgrpc.BuilderConfig{})
		if err != nil {
			b.Fatal(err)
		}
		bulwarkgrpc.Register(bld)
	})
	r := manual.NewBuilderWithScheme("benchfleet")
	var eps []resolver.Endpoint
	for _, a := range addrs {
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	r.InitialState(resolver.State{Endpoints: eps})
	cc := grpcDial(b, r.Scheme()+":///fleet", grpc.WithResolvers(r), grpc.WithDisableRetry(),
		grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig": [%s]}`, lb)))
	// Warm up: every endpoint connects.
	for range 64 {
		if err := grpcCall(context.Background(), cc); err != nil {
			b.Fatal(err)
		}
	}
	return cc
}

var grpcPolicies = []struct{ name, lb string }{
	{"bulwark_peak_ewma", `{"bulwark": {"algorithm": "peak_ewma"}}`},
	{"bulwark_least_request", `{"bulwark": {"algorithm": "least_request"}}`},
	{"bulwark_round_robin", `{"bulwark": {}}`},
	{"round_robin", `{"round_robin": {}}`},
	{"least_request", `{"least_request_experimental": {}}`},
}

// BenchmarkGRPCBalancer measures unary throughput through one ClientConn
// over three in-process servers, with 32 calls in flight, for bulwark's
// balancer and grpc-go's round_robin and least_request.
func BenchmarkGRPCBalancer(b *testing.B) {
	addrs := []string{grpcServer(b, 0), grpcServer(b, 0), grpcServer(b, 0)}
	for _, p := range grpcPolicies {
		cc := grpcFleet(b, addrs, p.lb)
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := cpuTime()
			b.SetParallelism(16) // 32 goroutines on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if err := grpcCall(ctx, cc); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportCPU(b, cpu)
		})
	}
}

// BenchmarkGRPCBalancerSlow is BenchmarkGRPCBalancer with one of the three
// servers 5 ms slower than the others, reporting the 99th percentile of the
// call latency (p99-µs) beside the time per call.
func BenchmarkGRPCBalancerSlow(b *testing.B) {
	addrs := []string{grpcServer(b, 0), grpcServer(b, 5*time.Millisecond), grpcServer(b, 0)}
	for _, p := range grpcPolicies {
		cc := grpcFleet(b, addrs, p.lb)
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				local := make([]time.Duration, 0, 1024)
				for pb.Next() {
					t0 := time.Now()
					if err := grpcCall(ctx, cc); err != nil {
						b.Error(err)
						return
					}
					local = append(local, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			})
			slices.Sort(lat)
			if n := len(lat); n > 0 {
				b.ReportMetric(float64(lat[n*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}
