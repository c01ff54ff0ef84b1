package bulwark

import (
	"errors"
	"fmt"
	"strconv"
)

// Endpoint is one server of a fleet: an address that is its identity, the zone
// or fault domain it runs in, and a relative weight. Endpoint is comparable, so
// it can key a map; two endpoints with the same Addr but another Zone or Weight
// are the same server described differently, and components compare Addr.
type Endpoint struct {
	// Addr identifies the endpoint, typically "host:port". It must not be empty.
	Addr string
	// Zone is the availability zone or fault domain. Empty means unknown.
	Zone string
	// Weight is the endpoint's share relative to others. If zero, 1. It must
	// not be negative.
	Weight int
}

// ErrInvalidEndpoint is returned, wrapped with the reason, for an endpoint that
// fails Validate.
var ErrInvalidEndpoint = errors.New("bulwark: invalid endpoint")

// Validate reports whether e can be used: Addr must be non-empty and Weight
// non-negative. The error wraps ErrInvalidEndpoint.
func (e Endpoint) Validate() error {
	if e.Addr == "" {
		return fmt.Errorf("%w: empty address", ErrInvalidEndpoint)
	}
	if e.Weight < 0 {
		return fmt.Errorf("%w %q: negative weight %d", ErrInvalidEndpoint, e.Addr, e.Weight)
	}
	return nil
}

// EffectiveWeight returns Weight, or 1 when Weight is zero.
func (e Endpoint) EffectiveWeight() int {
	if e.Weight == 0 {
		return 1
	}
	return e.Weight
}

// String returns Addr, followed by the zone and weight when they are set:
// "10.0.0.1:80 (zone=a, weight=3)".
func (e Endpoint) String() string {
	if e.Zone == "" && e.Weight == 0 {
		return e.Addr
	}
	s := e.Addr + " ("
	if e.Zone != "" {
		s += "zone=" + e.Zone
		if e.Weight != 0 {
			s += ", "
		}
	}
	if e.Weight != 0 {
		s += "weight=" + strconv.Itoa(e.Weight)
	}
	return s + ")"
}
