package bulwarkgrpc_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bulwark-go/bulwark/breaker"
	bulwarkgrpc "github.com/bulwark-go/bulwark/grpc"
	"github.com/bulwark-go/bulwark/grpc/internal/echo"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/limit"
)

// Status gives each refusal of a bulwark component its gRPC status, with the
// wait it asks for as a google.rpc.RetryInfo detail.
func ExampleStatus() {
	cb, _ := breaker.New(breaker.Config{ConsecutiveFailures: 1, OpenDuration: 30 * time.Second})
	_ = cb.Do(context.Background(), func(context.Context) error { return fmt.Errorf("down") })
	open := cb.Do(context.Background(), func(context.Context) error { return nil })

	for _, err := range []error{open, idempotency.ErrMismatch, &idempotency.InFlightError{Key: "k", Retry: time.Second}, limit.ErrRejected} {
		st := bulwarkgrpc.Status(err)
		fmt.Println(st.Code(), len(st.Details()))
	}
	// Output:
	// Unavailable 1
	// FailedPrecondition 0
	// Aborted 1
	// ResourceExhausted 0
}

// A server makes a unary method idempotent under the "idempotency-key"
// metadata: a duplicate call gets the first call's answer, and the handler
// runs once.
func ExampleServerInterceptor() {
	store, _ := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	defer store.Close()
	engine, _ := idempotency.New(idempotency.Config{Store: store})
	si, _ := bulwarkgrpc.NewServerInterceptor(bulwarkgrpc.ServerConfig{Idempotency: engine})

	runs := 0
	srv := grpc.NewServer(si.ServerOptions()...)
	echo.Register(srv, func(_ context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		runs++
		return wrapperspb.String(fmt.Sprintf("order %d for %s", runs, in.GetValue())), nil
	}, nil)
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	cc, _ := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer cc.Close()
	ctx := bulwarkgrpc.WithIdempotencyKey(context.Background(), "order-7")
	for range 2 {
		var hdr metadata.MD
		out, err := echo.Call(ctx, cc, echo.Create, "alice", grpc.Header(&hdr))
		fmt.Println(out, status.Code(err), hdr.Get(bulwarkgrpc.ReplayedHeader))
	}
	fmt.Println("handler runs:", runs)
	// Output:
	// order 1 for alice OK []
	// order 1 for alice OK [true]
	// handler runs: 1
}
