package proxy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
)

// ParseBackends reads a comma-separated list of backends, each
// "host:port[/zone[/weight]]": "10.0.0.1:80/a/2,10.0.0.2:80/b".
func ParseBackends(s string) ([]bulwark.Endpoint, error) {
	var eps []bulwark.Endpoint
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, "/")
		if len(parts) > 3 {
			return nil, fmt.Errorf("backend %q: want host:port[/zone[/weight]]", item)
		}
		ep := bulwark.Endpoint{Addr: parts[0]}
		if len(parts) > 1 {
			ep.Zone = parts[1]
		}
		if len(parts) > 2 {
			w, err := strconv.Atoi(parts[2])
			if err != nil {
				return nil, fmt.Errorf("backend %q: weight: %w", item, err)
			}
			ep.Weight = w
		}
		if err := ep.Validate(); err != nil {
			return nil, err
		}
		eps = append(eps, ep)
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("no backends in %q", s)
	}
	return eps, nil
}

// ParseAlgorithm reads an algorithm by its name: round_robin, least_request,
// peak_ewma, consistent_hash or random.
func ParseAlgorithm(s string) (balancer.Algorithm, error) {
	for _, a := range []balancer.Algorithm{balancer.RoundRobin, balancer.LeastRequest, balancer.PeakEWMA, balancer.ConsistentHash, balancer.Random} {
		if a.String() == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown algorithm %q: want round_robin, least_request, peak_ewma, consistent_hash or random", s)
}

// ParseEndpointLimit reads a backend's concurrency limit, for
// Config.EndpointLimit: "adaptive" (or empty) for an adaptive limit (0),
// "off" for none (-1), or a fixed number of requests, at least 1.
func ParseEndpointLimit(s string) (int, error) {
	switch s = strings.TrimSpace(s); s {
	case "", "adaptive":
		return 0, nil
	case "off":
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("endpoint limit %q: want adaptive, off or a number of requests of at least 1", s)
	}
	return n, nil
}
