package bulwarkgrpc_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bulwark-go/bulwark/grpc/internal/echo"
)

// testServer is a real grpc-go server on a loopback TCP port.
type testServer struct {
	addr  string
	srv   *grpc.Server
	calls atomic.Int64 // unary calls that reached the handler
	stop  sync.Once
}

// startServer starts a server answering with h (nil: echo the input) on
// 127.0.0.1, stopped at the end of the test.
func startServer(t testing.TB, h echo.Handler, opts ...grpc.ServerOption) *testServer {
	t.Helper()
	return startServerWith(t, h, nil, opts...)
}

// startServerWith is startServer with setup, which registers more services
// before the server starts.
func startServerWith(t testing.TB, h echo.Handler, setup func(*grpc.Server), opts ...grpc.ServerOption) *testServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: lis.Addr().String(), srv: grpc.NewServer(opts...)}
	if h == nil {
		h = func(_ context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			return in, nil
		}
	}
	counted := func(ctx context.Context, method string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		s.calls.Add(1)
		return h(ctx, method, in)
	}
	echo.Register(s.srv, counted, func(_ context.Context, in *wrapperspb.StringValue, send func(*wrapperspb.StringValue) error) error {
		for range 3 {
			if err := send(in); err != nil {
				return err
			}
		}
		return nil
	})
	if setup != nil {
		setup(s.srv)
	}
	go func() { _ = s.srv.Serve(lis) }()
	t.Cleanup(s.kill)
	return s
}

// kill stops the server at once: its connections close and calls in flight
// fail.
func (s *testServer) kill() { s.stop.Do(s.srv.Stop) }

// dial returns a client of addr, closed at the end of the test.
func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// dialServers returns a client of the servers through a manual resolver,
// with the service config sc, closed at the end of the test.
func dialServers(t testing.TB, servers []*testServer, sc string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	r := manual.NewBuilderWithScheme("bulwarktest")
	var eps []resolver.Endpoint
	for _, s := range servers {
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: s.addr}}})
	}
	r.InitialState(resolver.State{Endpoints: eps})
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(sc),
	}, opts...)
	cc, err := grpc.NewClient(r.Scheme()+":///fleet", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}
