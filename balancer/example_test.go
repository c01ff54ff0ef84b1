package balancer_test

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
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
	pk.Done(balancer.Outcome{})
	same := true
	for range 100 {
		pk, _ := lb.Pick("customer-42", nil)
		same = same && pk.Endpoint().Addr == owner
		pk.Done(balancer.Outcome{})
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
		held[i].Done(balancer.Outcome{Latency: 3 * time.Millisecond})
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
			pk.Done(balancer.Outcome{})
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
