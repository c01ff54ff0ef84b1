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
// Config.EndpointLimit and Config.AdaptiveEndpointLimit: a fixed number of
// requests, at least 1 (empty for the default, 0); "off" for none (-1);
// "adaptive" for an adaptive limit of at most the default, or
// "adaptive:N" of at most N.
func ParseEndpointLimit(s string) (limit int, adaptive bool, err error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return 0, false, nil
	case s == "off":
		return -1, false, nil
	case s == "adaptive":
		return 0, true, nil
	}
	num, adaptive := strings.CutPrefix(s, "adaptive:")
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 {
		return 0, false, fmt.Errorf("endpoint limit %q: want a number of requests of at least 1, off, adaptive or adaptive:N", s)
	}
	return n, adaptive, nil
}
