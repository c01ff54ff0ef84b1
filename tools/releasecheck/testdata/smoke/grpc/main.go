// The smoke program of github.com/bulwark-go/bulwark/grpc, built and run by
// releasecheck from a fresh module: a grpc-go server with bulwark's server
// interceptor and health, a client through bulwark's balancer and client
// interceptor, and a duplicate keyed call that replays.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	bulwarkgrpc "github.com/bulwark-go/bulwark/grpc"
	"github.com/bulwark-go/bulwark/healthz"
	"github.com/bulwark-go/bulwark/idempotency"
)

const method = "/smoke.Echo/Create"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "grpc smoke:", err)
		os.Exit(1)
	}
	fmt.Println("grpc: a duplicate keyed call replayed, health SERVING")
}

func run() error {
	store, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	if err != nil {
		return err
	}
	defer store.Close()
	engine, err := idempotency.New(idempotency.Config{Store: store})
	if err != nil {
		return err
	}
	si, err := bulwarkgrpc.NewServerInterceptor(bulwarkgrpc.ServerConfig{Idempotency: engine})
	if err != nil {
		return err
	}
	svc, err := healthz.New(healthz.Config{})
	if err != nil {
		return err
	}
	hs, err := bulwarkgrpc.NewHealthServer(bulwarkgrpc.HealthConfig{Service: svc})
	if err != nil {
		return err
	}
	var runs atomic.Int64
	srv := grpc.NewServer(si.ServerOptions()...)
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "smoke.Echo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Create", Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
				return wrapperspb.String(fmt.Sprintf("run %d", runs.Add(1))), nil
			})
		}}},
	}, nil)
	healthpb.RegisterHealthServer(srv, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	b, err := bulwarkgrpc.NewBuilder(bulwarkgrpc.BuilderConfig{})
	if err != nil {
		return err
	}
	bulwarkgrpc.Register(b)
	ci, err := bulwarkgrpc.NewClientInterceptor(bulwarkgrpc.ClientConfig{})
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), append(ci.DialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"bulwark": {"algorithm": "peak_ewma"}}]}`))...)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx := bulwarkgrpc.WithIdempotencyKey(context.Background(), "smoke-1")
	var first, second wrapperspb.StringValue
	var hdr metadata.MD
	if err := cc.Invoke(ctx, method, wrapperspb.String("x"), &first); err != nil {
		return err
	}
	if err := cc.Invoke(ctx, method, wrapperspb.String("x"), &second, grpc.Header(&hdr)); err != nil {
		return err
	}
	if first.GetValue() != "run 1" || second.GetValue() != "run 1" || len(hdr.Get(bulwarkgrpc.ReplayedHeader)) != 1 {
		return fmt.Errorf("duplicate got %q after %q (header %v), want a replay of run 1", second.GetValue(), first.GetValue(), hdr)
	}
	resp, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health %v, want SERVING", resp.GetStatus())
	}
	return nil
}
