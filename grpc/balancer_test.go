package bulwarkgrpc_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bulwark-go/bulwark/bulwarktest"
	bulwarkgrpc "github.com/bulwark-go/bulwark/grpc"
	"github.com/bulwark-go/bulwark/grpc/internal/echo"
	"github.com/bulwark-go/bulwark/outlier"
	"github.com/bulwark-go/bulwark/retry"
)

// register registers a Builder under a name of the test's own and returns
// the name.
func register(t testing.TB, cfg bulwarkgrpc.BuilderConfig) string {
	t.Helper()
	cfg.Name = "bulwark_" + t.Name()
	b, err := bulwarkgrpc.NewBuilder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bulwarkgrpc.Register(b)
	return cfg.Name
}

func serviceConfig(name, lbJSON string) string {
	return fmt.Sprintf(`{"loadBalancingConfig": [{%q: %s}]}`, name, lbJSON)
}

// A server killed under load gives no error to the callers of an idempotent
// method: the calls in flight on it fail with Unavailable and are retried
// on the others, and new calls go to the others. The server is killed while
// calls are inside its handler, so that they fail after the server took
// them, which grpc-go does not retry by itself.
func TestKilledServerUnderLoad(t *testing.T) {
	var armed atomic.Bool
	entered := make(chan struct{}, 1)
	victim := func(ctx context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if armed.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-ctx.Done() // held until the server dies
			return nil, ctx.Err()
		}
		return in, nil
	}
	servers := []*testServer{startServer(t, victim), startServer(t, nil), startServer(t, nil)}
	name := register(t, bulwarkgrpc.BuilderConfig{})
	rp, err := retry.New(retry.Config{MaxAttempts: 5, Backoff: retry.Backoff{Base: time.Millisecond, Cap: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ci := newClientInterceptor(t, bulwarkgrpc.ClientConfig{Retry: rp, Idempotent: isGet})
	cc := dialServers(t, servers, serviceConfig(name, `{"algorithm": "least_request"}`), append(ci.DialOptions(), grpc.WithDisableRetry())...)

	const workers, perWorker, killAfter = 8, 300, 600
	var (
		completed atomic.Int64
		failures  atomic.Int64
		firstErr  sync.Once
		errMsg    string
		killed    = make(chan struct{})
		wg        sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				in := fmt.Sprintf("%d-%d", w, i)
				out, err := echo.Call(context.Background(), cc, echo.Get, in)
				if err != nil || out != in {
					failures.Add(1)
					firstErr.Do(func() { errMsg = fmt.Sprintf("Get(%q) = %q, %v", in, out, err) })
				}
				if completed.Add(1) == killAfter {
					go func() {
						armed.Store(true)
						<-entered // a call is inside the victim's handler
						servers[0].kill()
						close(killed)
					}()
				}
			}
		}()
	}
	wg.Wait()
	<-killed
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d calls failed; first: %s", n, workers*perWorker, errMsg)
	}
	if servers[0].calls.Load() == 0 {
		t.Errorf("the killed server took no calls before it died")
	}
	for i, s := range servers[1:] {
		if s.calls.Load() == 0 {
			t.Errorf("server %d took no calls", i+1)
		}
	}
}

// A slow server gets under 5 % of Peak-EWMA picks.
func TestSlowServerPeakEWMA(t *testing.T) {
	slow := func(_ context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		time.Sleep(100 * time.Millisecond) // the fault: a server 100 ms slower than the others
		return in, nil
	}
	servers := []*testServer{startServer(t, nil), startServer(t, slow), startServer(t, nil)}
	name := register(t, bulwarkgrpc.BuilderConfig{})
	cc := dialServers(t, servers, serviceConfig(name, `{"algorithm": "peak_ewma"}`))
	waitReady(t, cc, servers)

	const workers, perWorker = 4, 250
	var wg sync.WaitGroup
	start := servers[1].calls.Load()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				if _, err := echo.Call(context.Background(), cc, echo.Get, "x"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := servers[1].calls.Load() - start
	if share := float64(got) / (workers * perWorker); share >= 0.05 {
		t.Errorf("slow server took %d of %d calls (%.1f %%), want under 5 %%", got, workers*perWorker, 100*share)
	}
}

// waitReady makes calls until every server has answered one, so that the
// connection's endpoints are all READY; the calls are not counted.
func waitReady(t *testing.T, cc *grpc.ClientConn, servers []*testServer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		for s.calls.Load() == 0 {
			if _, err := echo.Call(ctx, cc, echo.Get, "warm-up"); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A key keeps its server while that server is under its bound, moves to the
// key's next owner when the server is overloaded past the bound, and comes
// back when the load is gone.
func TestHashKeyBoundedLoad(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // value -> server addr
	hold := make(chan struct{})
	entered := make(chan struct{}, 1)
	servers := make([]*testServer, 3)
	for i := range servers {
		i := i
		servers[i] = startServer(t, func(_ context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			mu.Lock()
			seen[in.GetValue()] = servers[i].addr
			mu.Unlock()
			if in.GetValue() == "hold" {
				entered <- struct{}{}
				<-hold
			}
			return in, nil
		})
	}
	name := register(t, bulwarkgrpc.BuilderConfig{})
	cc := dialServers(t, servers, serviceConfig(name, `{"algorithm": "consistent_hash", "hashHeader": "x-user", "loadFactor": 1.25}`))
	waitReadyKeyed(t, cc, servers)
	where := func(v string) string {
		mu.Lock()
		defer mu.Unlock()
		return seen[v]
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-user", "alice")
	for i := range 50 {
		if _, err := echo.Call(ctx, cc, echo.Get, fmt.Sprintf("seq-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	owner := where("seq-0")
	for i := range 50 {
		if got := where(fmt.Sprintf("seq-%d", i)); got != owner {
			t.Fatalf("call %d of key alice went to %s, want its owner %s", i, got, owner)
		}
	}
	// One call of the key held in flight on the owner: with two calls in
	// flight the owner's bound is ⌈1.25 × 2 / 3⌉ = 1, so the next call of
	// the key goes to its next owner.
	done := make(chan error, 1)
	go func() {
		_, err := echo.Call(ctx, cc, echo.Get, "hold")
		done <- err
	}()
	<-entered
	if got := where("hold"); got != owner {
		t.Fatalf("held call went to %s, want the owner %s", got, owner)
	}
	if _, err := echo.Call(ctx, cc, echo.Get, "over"); err != nil {
		t.Fatal(err)
	}
	if got := where("over"); got == owner {
		t.Errorf("call of the key while its owner is over its bound went to the owner %s", owner)
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := echo.Call(ctx, cc, echo.Get, "back"); err != nil {
		t.Fatal(err)
	}
	if got := where("back"); got != owner {
		t.Errorf("call of the key after the load went went to %s, want its owner %s", got, owner)
	}
}

// waitReadyKeyed makes calls with many keys until every server has answered
// one.
func waitReadyKeyed(t *testing.T, cc *grpc.ClientConn, servers []*testServer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; ; i++ {
		all := true
		for _, s := range servers {
			all = all && s.calls.Load() > 0
		}
		if all {
			return
		}
		kctx := metadata.AppendToOutgoingContext(ctx, "x-user", fmt.Sprintf("warm-%d", i))
		if _, err := echo.Call(kctx, cc, echo.Get, "warm-up"); err != nil {
			t.Fatal(err)
		}
	}
}

// An endpoint whose calls keep failing with Unavailable is ejected by the
// outlier detector and takes no calls while the others can; the client's
// zone is preferred while it is healthy.
func TestOutlierEjectionAndZones(t *testing.T) {
	bad := func(context.Context, string, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return nil, status.Error(codes.Unavailable, "broken")
	}
	servers := []*testServer{startServer(t, nil), startServer(t, bad), startServer(t, nil), startServer(t, nil)}
	clk := bulwarktest.NewClock(time.Unix(0, 0)) // ejections never end in this test
	name := register(t, bulwarkgrpc.BuilderConfig{
		Zone:     "a",
		Clock:    clk,
		Outliers: &outlier.Config{Rules: outlier.RuleConsecutiveGatewayFailures, ConsecutiveGatewayFailures: 3, AlwaysEjectOne: true},
	})
	zones := []string{"a", "a", "a", "b"}
	r := manual.NewBuilderWithScheme("bulwarkzones")
	var eps []resolver.Endpoint
	for i, s := range servers {
		eps = append(eps, bulwarkgrpc.SetEndpoint(resolver.Endpoint{Addresses: []resolver.Address{{Addr: s.addr}}}, zones[i], 1))
	}
	r.InitialState(resolver.State{Endpoints: eps})
	cc, err := grpc.NewClient(r.Scheme()+":///zones", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(r), grpc.WithDisableRetry(),
		grpc.WithDefaultServiceConfig(serviceConfig(name, `{"algorithm": "round_robin", "minLocalShare": 0.5}`)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	waitReadyAll(t, cc, servers, []int{0, 2})
	// The warm-up may have sent the broken endpoint calls of its own: when
	// it was the first READY, it was ejected alone, and panic mode (no
	// eligible endpoint among those judged) fell back to it until the
	// others were READY. Counted from here, it takes at most the three
	// failures that eject it, if the warm-up did not already.
	failures := 0
	broken, remote := servers[1].calls.Load(), servers[3].calls.Load()
	t.Logf("the warm-up sent the broken endpoint %d calls", broken)
	for range 300 {
		if _, err := echo.Call(context.Background(), cc, echo.Get, "x"); err != nil {
			failures++
		}
	}
	if failures > 3 {
		t.Errorf("%d calls failed, want at most 3 before the broken endpoint is ejected", failures)
	}
	if got := servers[1].calls.Load() - broken; got > 3 {
		t.Errorf("broken endpoint took %d calls, want at most 3", got)
	}
	if got := servers[3].calls.Load() - remote; got != 0 {
		t.Errorf("the other zone's endpoint took %d calls, want 0 while two of three in zone a serve (minLocalShare 0.5)", got)
	}
}

// waitReadyAll makes calls until each of the servers of index in which has
// answered one; failures are ignored.
func waitReadyAll(t *testing.T, cc *grpc.ClientConn, servers []*testServer, which []int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, i := range which {
		for servers[i].calls.Load() == 0 {
			if ctx.Err() != nil {
				t.Fatalf("server %d never answered", i)
			}
			_, _ = echo.Call(ctx, cc, echo.Get, "warm-up")
		}
	}
}
