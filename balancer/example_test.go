package balancer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/healthcheck"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/outlier"
	"github.com/bulwark-go/bulwark/retry"
)

// A least-request HTTP client over three backends, one of which answers 503:
// every GET is retried on another backend, and the caller sees no failure.
func ExampleTransport() {
	var eps []bulwark.Endpoint
	for i, status := range []int{http.StatusOK, http.StatusServiceUnavailable, http.StatusOK} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			fmt.Fprintf(w, "backend %d", i)
		}))
		defer srv.Close()
		u, _ := url.Parse(srv.URL)
		eps = append(eps, bulwark.Endpoint{Addr: u.Host})
	}
	lb, err := balancer.New(balancer.Config{Algorithm: balancer.LeastRequest, Endpoints: eps})
	if err != nil {
		fmt.Println(err)
		return
	}
	policy, err := retry.New(retry.Config{
		MaxAttempts: 3,
		Delay:       func(int, time.Duration, error) time.Duration { return 0 }, // no wait in an example
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	client := &http.Client{Transport: &balancer.Transport{Balancer: lb, Policy: policy}}

	ok := 0
	for range 20 {
		resp, err := client.Get("http://catalog.internal/items")
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && string(body) != "backend 1" {
			ok++
		}
	}
	fmt.Printf("%d of 20 requests answered 200 OK\n", ok)
	// Output:
	// 20 of 20 requests answered 200 OK
}

// Sticky routing by customer id: each customer's calls go to the endpoint
// that owns the id on the ring, unless that endpoint already holds more than
// 1.25 × its share of the calls in flight; then they go to the next owner.
func Example_stickyRouting() {
	lb, err := balancer.New(balancer.Config{
		Algorithm:  balancer.ConsistentHash,
		LoadFactor: 1.25,
		Endpoints: []bulwark.Endpoint{
			{Addr: "orders-0:8080"}, {Addr: "orders-1:8080"}, {Addr: "orders-2:8080"}, {Addr: "orders-3:8080"},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	pk, _ := lb.Pick("customer-42", nil)
	owner := pk.Endpoint().Addr
	pk.Done(balancer.Result{})
	same := true
	for range 100 {
		pk, _ := lb.Pick("customer-42", nil)
		same = same && pk.Endpoint().Addr == owner
		pk.Done(balancer.Result{})
	}
	fmt.Println("customer-42 always on its owner:", same)

	// A burst from one hot customer: calls held in flight spread over the
	// next owners once the owner is at its bound of ⌈1.25 × 8 / 4⌉ = 3.
	var held []balancer.Pick
	perEndpoint := map[string]int{}
	for range 8 {
		pk, _ := lb.Pick("customer-42", nil)
		held = append(held, pk)
		perEndpoint[pk.Endpoint().Addr]++
	}
	fmt.Println("the owner holds", perEndpoint[owner], "of 8 calls in flight, on", len(perEndpoint), "endpoints in all")
	for i := range held {
		held[i].Done(balancer.Result{Latency: 3 * time.Millisecond})
	}
	// Output:
	// customer-42 always on its owner: true
	// the owner holds 3 of 8 calls in flight, on 3 endpoints in all
}

// orchestrator is a balancer.Judge that passes on the readiness an
// orchestrator publishes, as any source of health can: here, set by hand.
type orchestrator struct {
	report func(bulwark.Endpoint, bool)
}

func (o *orchestrator) Attach(report func(bulwark.Endpoint, bool)) (pending bool, err error) {
	o.report = report
	return false, nil // an endpoint is ready until told otherwise
}

func (o *orchestrator) SetEndpoints([]bulwark.Endpoint) error { return nil }

// Zone-aware picking: a client in eu-1a stays in its zone while at least 70 %
// of the zone's weight is eligible, and spills the rest over in proportion
// when less is.
func Example_zoneAware() {
	eps := []bulwark.Endpoint{
		{Addr: "a-1:80", Zone: "eu-1a"}, {Addr: "a-2:80", Zone: "eu-1a"}, {Addr: "a-3:80", Zone: "eu-1a"},
		{Addr: "b-1:80", Zone: "eu-1b"}, {Addr: "b-2:80", Zone: "eu-1b"}, {Addr: "b-3:80", Zone: "eu-1b"},
		{Addr: "c-1:80", Zone: "eu-1c"}, {Addr: "c-2:80", Zone: "eu-1c"}, {Addr: "c-3:80", Zone: "eu-1c"},
	}
	readiness := &orchestrator{}
	lb, err := balancer.New(balancer.Config{Algorithm: balancer.LeastRequest, Zone: "eu-1a", Endpoints: eps,
		Followers: []balancer.Follower{readiness}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lb.Close()
	localShare := func() float64 {
		local := 0
		for range 10000 {
			pk, _ := lb.Pick("", nil)
			if pk.Endpoint().Zone == "eu-1a" {
				local++
			}
			pk.Done(balancer.Result{})
		}
		return float64(local) / 10000
	}
	fmt.Printf("all ready: %.0f %% local\n", 100*localShare())

	// Two of the three local endpoints are not ready: a third of the zone
	// is left, so 1/3 ÷ 0.7 ≈ 48 % of the picks stay local.
	readiness.report(eps[0], false)
	readiness.report(eps[1], false)
	fmt.Printf("one local endpoint left: about %.0f %% local\n", 10*math.Round(10*localShare()))
	// Output:
	// all ready: 100 % local
	// one local endpoint left: about 50 % local
}

// The fleet in one place: the balancer owns the endpoint set, and an active
// checker and an outlier detector follow it and judge which endpoints can
// take calls; no forwarder sits between them. A change of the fleet is one
// Update. (Add a *breaker.Group to Followers, and have Breaker return its
// breakers, for per-endpoint breakers that follow the set too.)
func Example_fleet() {
	clk := bulwarktest.NewClock(time.Time{})
	probed := make(chan string, 16)
	checker, err := healthcheck.New(healthcheck.Config{
		Interval: 5 * time.Second,
		Probe: func(_ context.Context, ep bulwark.Endpoint) error {
			if ep.Addr == "10.0.0.3:80" {
				return errors.New("connection refused")
			}
			return nil
		},
		Observer: bulwark.ObserverFunc(func(e bulwark.Event) {
			if e.Kind == bulwark.EventProbe {
				probed <- e.Endpoint.Addr
			}
		}),
		Clock: clk,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	detector, err := outlier.New(outlier.Config{MaxEjectionPercent: 50, Clock: clk})
	if err != nil {
		fmt.Println(err)
		return
	}
	eps := []bulwark.Endpoint{{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.2:80"}, {Addr: "10.0.0.3:80"}}
	lb, err := balancer.New(balancer.Config{Endpoints: eps, Followers: []balancer.Follower{checker, detector}, Clock: clk})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lb.Close()
	picked := func() []string {
		seen := map[string]bool{}
		for range 30 {
			pk, err := lb.Pick("", nil)
			if err != nil {
				return []string{err.Error()}
			}
			seen[pk.Endpoint().Addr] = true
			pk.Done(balancer.Result{})
		}
		return slices.Sorted(maps.Keys(seen))
	}

	// Before the first probes, every endpoint is pending: the picks go to
	// them all rather than failing, and no panic is declared.
	fmt.Println("before the first probes:", picked())
	if err := checker.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer checker.Close()
	for range eps {
		<-probed
	}
	fmt.Println("after them:", picked())

	// The fleet changes: one call, which the checker and the detector
	// follow. The new endpoint takes calls once its first probe passes.
	if err := lb.Update([]bulwark.Endpoint{eps[0], eps[1], {Addr: "10.0.0.4:80"}}); err != nil {
		fmt.Println(err)
		return
	}
	<-probed
	fmt.Println("after the update:", picked())
	_, checked := checker.State(eps[2])
	fmt.Println("10.0.0.3:80 still checked:", checked)
	// Output:
	// before the first probes: [10.0.0.1:80 10.0.0.2:80 10.0.0.3:80]
	// after them: [10.0.0.1:80 10.0.0.2:80]
	// after the update: [10.0.0.1:80 10.0.0.2:80 10.0.0.4:80]
	// 10.0.0.3:80 still checked: false
}

// A retry loop of any transport: one Tried for the call, given to each Pick,
// sends each retry to an endpoint not tried yet; with ConsistentHash, to the
// key's next owner on the ring.
func Example_retry() {
	lb, err := balancer.New(balancer.Config{Algorithm: balancer.ConsistentHash, Endpoints: []bulwark.Endpoint{
		{Addr: "orders-0:8080"}, {Addr: "orders-1:8080"}, {Addr: "orders-2:8080"}, {Addr: "orders-3:8080"},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	policy, err := retry.New(retry.Config{MaxAttempts: 3, Delay: func(int, time.Duration, error) time.Duration { return 0 }})
	if err != nil {
		fmt.Println(err)
		return
	}
	var tried balancer.Tried
	err = policy.Do(context.Background(), func(ctx context.Context) error {
		pk, err := lb.Pick("customer-42", &tried)
		if err != nil {
			return err
		}
		ep := pk.Endpoint()
		err = nil
		if retry.Attempt(ctx) < 3 {
			err = fmt.Errorf("%s: connection refused", ep.Addr) // the owners are down
		}
		pk.Done(balancer.Result{Err: err, Gateway: err != nil})
		fmt.Println("attempt", retry.Attempt(ctx), "on", ep.Addr)
		return err
	})
	fmt.Println("error:", err)
	// Output:
	// attempt 1 on orders-1:8080
	// attempt 2 on orders-2:8080
	// attempt 3 on orders-0:8080
	// error: <nil>
}

// A concurrency limit per endpoint: here a fixed one of 2 calls (a
// limit.Limiter whose limit cannot move; the default one adapts). Calls go
// to an endpoint with room; when both are full, Pick refuses at once.
func ExampleConfig_limiter() {
	lb, err := balancer.New(balancer.Config{
		Algorithm: balancer.LeastRequest,
		Endpoints: []bulwark.Endpoint{{Addr: "orders-0:8080"}, {Addr: "orders-1:8080"}},
		Limiter: func(ep bulwark.Endpoint) (balancer.Limiter, error) {
			return limit.New(limit.Config{Name: "orders/" + ep.Addr, InitialLimit: 2, MinLimit: 2, MaxLimit: 2, Headroom: -1})
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	var calls []balancer.Pick
	for {
		pk, err := lb.Pick("", nil)
		if err != nil {
			fmt.Printf("call %d: refused; ErrUnavailable %v, limit.ErrRejected %v\n",
				len(calls)+1, errors.Is(err, balancer.ErrUnavailable), errors.Is(err, limit.ErrRejected))
			break
		}
		calls = append(calls, pk)
	}
	perEndpoint := map[string]int{}
	for i := range calls {
		perEndpoint[calls[i].Endpoint().Addr]++
		calls[i].Done(balancer.Result{Latency: 20 * time.Millisecond})
	}
	fmt.Println("in flight when refused:", perEndpoint)
	pk, err := lb.Pick("", nil)
	fmt.Println("after the calls ended:", err == nil)
	pk.Done(balancer.Result{})
	// Output:
	// call 5: refused; ErrUnavailable true, limit.ErrRejected true
	// in flight when refused: map[orders-0:8080:2 orders-1:8080:2]
	// after the calls ended: true
}
