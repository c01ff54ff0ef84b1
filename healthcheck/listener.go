package healthcheck

import "github.com/bulwark-go/bulwark"

// Listener is told of changes as they happen, outside any lock, in order for
// each endpoint; methods must not block. A
// Checker calls HealthChanged and an OutlierDetector calls EjectionChanged;
// each calls its Listener from one goroutine at a time. A Checker or a
// detector among a balancer's Followers reports to the balancer directly,
// and needs a Listener only for the caller's own use.
type Listener interface {
	// HealthChanged is called by a Checker: healthy is true when ep becomes
	// Healthy, false when it becomes Unhealthy or Draining, or is removed
	// while Healthy.
	HealthChanged(ep bulwark.Endpoint, healthy bool)
	// EjectionChanged is called by an OutlierDetector: ejected is true when
	// ep is ejected, false when it comes back (or is removed while ejected).
	EjectionChanged(ep bulwark.Endpoint, ejected bool)
}
