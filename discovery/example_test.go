package discovery_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/discovery"
)

// fleet prints each endpoint set it is given; a *balancer.Balancer would
// start picking from it.
type fleet struct{}

func (fleet) Update(eps []bulwark.Endpoint) error {
	fmt.Println("update:", eps)
	return nil
}

// A Watcher following a resolver of your own, here a stand-in for a
// Kubernetes or Consul client: the answer changes, fails, and the fleet
// keeps its last good set. The fake clock makes the example deterministic;
// in production, leave Clock nil.
func ExampleWatcher() {
	answers := [][]string{{"10.0.0.1:80", "10.0.0.2:80"}, {"10.0.0.2:80", "10.0.0.3:80"}}
	res := discovery.ResolverFunc(func(ctx context.Context) ([]bulwark.Endpoint, time.Duration, error) {
		if len(answers) == 0 {
			return nil, 0, fmt.Errorf("catalog unreachable")
		}
		var eps []bulwark.Endpoint
		for _, a := range answers[0] {
			eps = append(eps, bulwark.Endpoint{Addr: a})
		}
		answers = answers[1:]
		return eps, 15 * time.Second, nil
	})
	resolved := make(chan struct{}, 1)
	obs := bulwark.ObserverFunc(func(e bulwark.Event) {
		if e.Kind != bulwark.EventCall {
			return
		}
		if e.Err != nil {
			fmt.Printf("failed: %v; next try in %v\n", e.Err, e.Delay)
		}
		resolved <- struct{}{}
	})
	clk := bulwarktest.NewClock(time.Time{})
	w, err := discovery.New(discovery.Config{Resolver: res, Updater: fleet{}, Observer: obs, Clock: clk})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	if err := w.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	for i := range 3 {
		<-resolved
		clk.BlockUntil(context.Background(), 1) // the Watcher waits for the TTL
		if i < 2 {
			clk.Advance(15 * time.Second)
		}
	}
	// Output:
	// update: [10.0.0.1:80 10.0.0.2:80]
	// update: [10.0.0.2:80 10.0.0.3:80]
	// failed: catalog unreachable; next try in 1s
}

// DNS SRV records feeding a fleet: the records' weights become the
// endpoints' weights. The example runs a DNS server on loopback; in
// production, leave Servers empty to use those of /etc/resolv.conf.
func ExampleDNS() {
	ns := startExampleDNSServer()
	defer ns.close()

	dns, err := discovery.NewDNS(discovery.DNSConfig{
		Name:    "_http._tcp.api.internal",
		SRV:     true,
		Network: "ip4",
		Zone:    "eu-1a",
		Servers: []string{ns.addr},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	eps, ttl, err := dns.Resolve(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ep := range eps {
		fmt.Println(ep)
	}
	fmt.Println("ask again in", ttl)
	// Output:
	// 10.0.0.1:8080 (zone=eu-1a, weight=3)
	// 10.0.0.2:8080 (zone=eu-1a, weight=1)
	// ask again in 1m0s
}

// startExampleDNSServer serves the example's records.
func startExampleDNSServer() *dnsServer {
	s, err := newDNSServer()
	if err != nil {
		panic(err)
	}
	s.set("_http._tcp.api.internal", srv(10, 3, 8080, "a.api.internal", 60), srv(10, 1, 8080, "b.api.internal", 60))
	s.set("a.api.internal", a("10.0.0.1", 300))
	s.set("b.api.internal", a("10.0.0.2", 300))
	return s
}
