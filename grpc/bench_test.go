package bulwarkgrpc

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	gbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/retry"
)

// BenchmarkClientInterceptor measures what the client interceptor adds to a
// unary call, with an invoker that returns at once: the whole stack (retry
// with a budget, a breaker per target) against the bare invoker.
func BenchmarkClientInterceptor(b *testing.B) {
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	budget, _ := retry.NewBudget(retry.BudgetConfig{})
	rp, _ := retry.New(retry.Config{Budget: budget})
	group, _ := breaker.NewGroup(breaker.GroupConfig{Breaker: breaker.Config{Classify: Classify}})
	ci, err := NewClientInterceptor(ClientConfig{Retry: rp, Breakers: group, Idempotent: func(string) bool { return true }})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///bench", grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	req, reply := wrapperspb.String("x"), new(wrapperspb.StringValue)
	ctx := context.Background()
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = invoker(ctx, "/bench.Echo/Get", req, reply, cc)
		}
	})
	b.Run("bulwark", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := ci.Unary(ctx, "/bench.Echo/Get", req, reply, cc, invoker); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bulwark/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			reply := new(wrapperspb.StringValue)
			for pb.Next() {
				_ = ci.Unary(ctx, "/bench.Echo/Get", req, reply, cc, invoker)
			}
		})
	})
}

// fakePicker is a READY pick_first child.
type fakePicker struct{}

func (fakePicker) Pick(gbalancer.PickInfo) (gbalancer.PickResult, error) {
	return gbalancer.PickResult{}, nil
}

// BenchmarkPicker measures one pick and its Done through the Builder's
// picker over 3 READY endpoints, for each algorithm.
func BenchmarkPicker(b *testing.B) {
	for _, algo := range []balancer.Algorithm{balancer.RoundRobin, balancer.LeastRequest, balancer.PeakEWMA, balancer.ConsistentHash} {
		b.Run(algo.String(), func(b *testing.B) {
			eps := []bulwark.Endpoint{{Addr: "a:1"}, {Addr: "b:1"}, {Addr: "c:1"}}
			core, err := balancer.New(balancer.Config{Algorithm: algo, Endpoints: eps})
			if err != nil {
				b.Fatal(err)
			}
			defer core.Close()
			p := &picker{core: core, pickers: map[string]gbalancer.Picker{}, clk: bulwark.WallClock()}
			for _, ep := range eps {
				p.pickers[ep.Addr] = fakePicker{}
				p.ready = append(p.ready, fakePicker{})
			}
			info := gbalancer.PickInfo{FullMethodName: "/bench.Echo/Get", Ctx: context.Background()}
			b.ReportAllocs()
			for b.Loop() {
				res, err := p.Pick(info)
				if err != nil {
					b.Fatal(err)
				}
				res.Done(gbalancer.DoneInfo{})
			}
		})
	}
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }
