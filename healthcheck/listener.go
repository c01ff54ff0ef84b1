package healthcheck

import "github.com/bulwark-go/bulwark"

// Listener is told of health changes as they happen, outside any lock, in
// order for each endpoint, from one goroutine at a time; HealthChanged must
// not block. A Checker among a balancer's Followers reports to the balancer
// directly, and needs a Listener only for the caller's own use.
type Listener interface {
	// HealthChanged: healthy is true when ep becomes Healthy, false when it
	// becomes Unhealthy or Draining, or is removed while Healthy.
	HealthChanged(ep bulwark.Endpoint, healthy bool)
}
