// Package grpcfleet is bulwark's gRPC path, end to end, in one process on
// loopback: an inventory service on three grpc-go servers, and a client that
// reads stock and reserves items through them while the servers fail.
//
// Each server has a ServerInterceptor (an adaptive concurrency limit that
// sheds in the tap handle, before a request is read, and idempotent
// reservations under the "idempotency-key" metadata, with one store shared by
// the fleet) and a grpc.health.v1 server fed by a healthz.Service. The
// client balances with bulwark's balancer as a grpc-go policy (Peak-EWMA, with
// outlier ejection), retries reads and keyed reservations under a retry
// budget with gRFC A6 pushback, and guards the target with a breaker. Run
// kills one server a third of the way through the load, restarts it at the
// half, and slows another by [Config].SlowBy from two thirds on, and then
// reports what the client saw ([Run] returns a [Report]; command grpcfleet,
// in cmd/grpcfleet, prints it).
//
// The service is written by hand (a grpc.ServiceDesc over the well-known
// wrapper types), so that nothing needs protoc.
package grpcfleet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bulwark-go/bulwark/breaker"
	bulwarkgrpc "github.com/bulwark-go/bulwark/grpc"
	"github.com/bulwark-go/bulwark/healthz"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/outlier"
	"github.com/bulwark-go/bulwark/retry"
)

// The inventory service.
const (
	service    = "bulwark.example.Inventory"
	methodGet  = "/" + service + "/GetStock" // a read: safe, hedged and retried
	methodSave = "/" + service + "/Reserve"  // a write: retried only with its key
)

// Config configures Run.
type Config struct {
	// Duration is how long the load runs. If zero, 3 s.
	Duration time.Duration
	// Workers is the number of concurrent clients. If zero, 8.
	Workers int
	// SlowBy is the latency added to the slowed server. If zero, 50 ms.
	SlowBy time.Duration
	// Seed seeds the clients' choices. If zero, 1.
	Seed uint64
}

// Report is what the client saw.
type Report struct {
	Calls          int64           // calls made
	ReadErrors     int64           // failed reads: must be 0
	ReserveErrors  int64           // failed keyed reservations: must be 0
	Reservations   int64           // reservations made (keys)
	Executions     int64           // reservations executed by the servers: must equal Reservations
	Replays        int64           // duplicate reservations answered from the store
	SlowShare      float64         // share of the calls after the slowdown that went to the slow server
	P50, P99       time.Duration   // client-visible latency of reads
	ServerCalls    [3]int64        // calls that reached each server's handler
	DuplicatesSent int64           // reservations sent a second time with the same key
	FirstError     error           // the first failed read, if any
	latencies      []time.Duration // guarded by run's mutex
}

// Broken returns the invariants that did not hold.
func (r *Report) Broken() []string {
	var out []string
	if r.ReadErrors > 0 {
		out = append(out, fmt.Sprintf("%d reads failed", r.ReadErrors))
	}
	if r.ReserveErrors > 0 {
		out = append(out, fmt.Sprintf("%d keyed reservations failed", r.ReserveErrors))
	}
	if r.Executions != r.Reservations {
		out = append(out, fmt.Sprintf("%d reservations executed for %d keys", r.Executions, r.Reservations))
	}
	return out
}

// String returns the report as the tour prints it.
func (r *Report) String() string {
	return fmt.Sprintf("grpc: %d calls, %d read errors, %d reservation errors; %d keys, %d executions, %d replays; "+
		"slow server share %.1f %%; read p50 %v p99 %v",
		r.Calls, r.ReadErrors, r.ReserveErrors, r.Reservations, r.Executions, r.Replays,
		100*r.SlowShare, r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond))
}

// server is one inventory server.
type server struct {
	addr   string
	srv    *grpc.Server
	health *bulwarkgrpc.HealthServer
	slow   atomic.Int64 // added latency in ns
	calls  atomic.Int64
	after  atomic.Int64 // calls after the slowdown began
}

// fleet is what the servers share, as a fleet shares Redis.
type fleet struct {
	store      *idempotency.MemoryStore
	executions atomic.Int64
	slowing    atomic.Bool
	afterAll   atomic.Int64
}

func (f *fleet) start(addr string) (*server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	engine, err := idempotency.New(idempotency.Config{Store: f.store, Lease: 5 * time.Second, Wait: time.Second})
	if err != nil {
		return nil, err
	}
	lim, err := limit.New(limit.Config{Name: "inventory", MinLimit: 16})
	if err != nil {
		return nil, err
	}
	si, err := bulwarkgrpc.NewServerInterceptor(bulwarkgrpc.ServerConfig{
		Limiter: lim, Idempotency: engine, IdempotentMethods: []string{methodSave},
	})
	if err != nil {
		return nil, err
	}
	svc, err := healthz.New(healthz.Config{Name: "inventory"})
	if err != nil {
		return nil, err
	}
	hs, err := bulwarkgrpc.NewHealthServer(bulwarkgrpc.HealthConfig{Service: svc})
	if err != nil {
		return nil, err
	}
	s := &server{addr: lis.Addr().String(), srv: grpc.NewServer(si.ServerOptions()...), health: hs}
	s.srv.RegisterService(f.desc(s), nil)
	healthpb.RegisterHealthServer(s.srv, hs)
	go func() { _ = s.srv.Serve(lis) }()
	return s, nil
}

// handle answers one call on s.
func (f *fleet) handle(ctx context.Context, s *server, method string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	s.calls.Add(1)
	if f.slowing.Load() {
		s.after.Add(1)
		f.afterAll.Add(1)
	}
	if d := time.Duration(s.slow.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	if method == methodSave {
		f.executions.Add(1)
		return wrapperspb.String("reserved " + in.GetValue()), nil
	}
	return wrapperspb.String("42 of " + in.GetValue()), nil
}

func (f *fleet) desc(s *server) *grpc.ServiceDesc {
	unary := func(method string) grpc.MethodHandler {
		return func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, req any) (any, error) {
				return f.handle(ctx, s, method, req.(*wrapperspb.StringValue))
			}
			if icpt == nil {
				return h(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: method}, h)
		}
	}
	return &grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "GetStock", Handler: unary(methodGet)},
			{MethodName: "Reserve", Handler: unary(methodSave)},
		},
	}
}

// Run runs the fleet and its clients under the faults and returns the
// report. It registers its balancer under the name "bulwark_grpcfleet".
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Duration == 0 {
		cfg.Duration = 3 * time.Second
	}
	if cfg.Workers == 0 {
		cfg.Workers = 8
	}
	if cfg.SlowBy == 0 {
		cfg.SlowBy = 50 * time.Millisecond
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	store, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	f := &fleet{store: store}
	var servers [3]*server
	for i := range servers {
		if servers[i], err = f.start("127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	defer func() {
		for _, s := range servers {
			s.srv.Stop()
		}
	}()

	cc, err := dial(servers[:])
	if err != nil {
		return nil, err
	}
	defer cc.Close()

	rep := &Report{}
	var mu sync.Mutex // guards rep.latencies
	// The load stops when loadCtx ends; calls run under ctx, so that the
	// calls in flight then end normally.
	loadCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var reservations, dupes, readErrs, resErrs, calls atomic.Int64
	var firstErr atomic.Pointer[error]
	for w := range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
			for n := 0; loadCtx.Err() == nil; n++ {
				if rng.IntN(4) == 0 {
					key := fmt.Sprintf("w%d-%d", w, n)
					kctx := bulwarkgrpc.WithIdempotencyKey(ctx, key)
					reservations.Add(1)
					calls.Add(1)
					if err := call(kctx, cc, methodSave, key); err != nil {
						resErrs.Add(1)
					}
					if rng.IntN(3) == 0 { // the client did not see the answer: it sends again
						dupes.Add(1)
						calls.Add(1)
						if err := call(kctx, cc, methodSave, key); err != nil {
							resErrs.Add(1)
						}
					}
					continue
				}
				t0 := time.Now()
				calls.Add(1)
				err := call(ctx, cc, methodGet, "sku-1")
				if err != nil {
					readErrs.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				d := time.Since(t0)
				mu.Lock()
				rep.latencies = append(rep.latencies, d)
				mu.Unlock()
			}
		}()
	}
	// The timeline: kill server 1 at a third, restart it at the half, slow
	// server 2 from two thirds on.
	timeline := []struct {
		at time.Duration
		do func() error
	}{
		{cfg.Duration / 3, func() error { servers[1].srv.Stop(); return nil }},
		{cfg.Duration / 2, func() error {
			s, err := f.start(servers[1].addr)
			if err == nil {
				servers[1] = s
			}
			return err
		}},
		{2 * cfg.Duration / 3, func() error { servers[2].slow.Store(int64(cfg.SlowBy)); f.slowing.Store(true); return nil }},
	}
	var terr error
	for _, step := range timeline {
		select {
		case <-loadCtx.Done():
		case <-time.After(time.Until(start.Add(step.at))):
			if err := step.do(); err != nil && terr == nil {
				terr = err
			}
		}
	}
	wg.Wait()
	if terr != nil {
		return nil, fmt.Errorf("grpcfleet: timeline: %w", terr)
	}
	if e := firstErr.Load(); e != nil {
		rep.FirstError = *e
	}
	rep.Calls, rep.ReadErrors, rep.ReserveErrors = calls.Load(), readErrs.Load(), resErrs.Load()
	rep.Reservations, rep.DuplicatesSent = reservations.Load(), dupes.Load()
	rep.Executions = f.executions.Load()
	rep.Replays = rep.Reservations + rep.DuplicatesSent - rep.Executions
	for i, s := range servers {
		rep.ServerCalls[i] = s.calls.Load()
	}
	if all := f.afterAll.Load(); all > 0 {
		rep.SlowShare = float64(servers[2].after.Load()) / float64(all)
	}
	slices.Sort(rep.latencies)
	if n := len(rep.latencies); n > 0 {
		rep.P50, rep.P99 = rep.latencies[n/2], rep.latencies[n*99/100]
	}
	return rep, nil
}

// dial returns the client of the fleet: bulwark's balancer with Peak-EWMA and
// outlier ejection, budgeted retries with A6 pushback, hedged reads, and a
// breaker for the target.
func dial(servers []*server) (*grpc.ClientConn, error) {
	b, err := bulwarkgrpc.NewBuilder(bulwarkgrpc.BuilderConfig{
		Name:     "bulwark_grpcfleet",
		Outliers: &outlier.Config{Rules: outlier.RuleConsecutiveGatewayFailures, BaseEjectionTime: time.Second, AlwaysEjectOne: true},
	})
	if err != nil {
		return nil, err
	}
	bulwarkgrpc.Register(b)
	budget, err := retry.NewBudget(retry.BudgetConfig{Ratio: 0.2, MinPerSecond: 50})
	if err != nil {
		return nil, err
	}
	rp, err := retry.New(retry.Config{MaxAttempts: 4, Budget: budget,
		Backoff: retry.Backoff{Base: 2 * time.Millisecond, Cap: 50 * time.Millisecond}})
	if err != nil {
		return nil, err
	}
	breakers, err := breaker.NewGroup(breaker.GroupConfig{Breaker: breaker.Config{
		FailureRate: 0.5, WindowCalls: 50, Classify: bulwarkgrpc.Classify}})
	if err != nil {
		return nil, err
	}
	ci, err := bulwarkgrpc.NewClientInterceptor(bulwarkgrpc.ClientConfig{
		Retry: rp, Breakers: breakers,
		Idempotent: func(m string) bool { return m == methodGet },
	})
	if err != nil {
		return nil, err
	}
	r := manual.NewBuilderWithScheme("grpcfleet")
	var eps []resolver.Endpoint
	for _, s := range servers {
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: s.addr}}})
	}
	r.InitialState(resolver.State{Endpoints: eps})
	opts := append(ci.DialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(r),
		grpc.WithDisableRetry(),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"bulwark_grpcfleet": {"algorithm": "peak_ewma"}}]}`),
	)
	return grpc.NewClient(r.Scheme()+":///inventory", opts...)
}

// call makes one unary call.
func call(ctx context.Context, cc *grpc.ClientConn, method, in string) error {
	return cc.Invoke(ctx, method, wrapperspb.String(in), new(wrapperspb.StringValue))
}
