// Package healthcheck knows which endpoints of a fleet can take traffic, and
// tells the platform whether this service itself can.
//
// A [Checker] probes endpoints actively, as Envoy and HAProxy do: on an
// interval with jitter, with a per-probe timeout, a faster interval while an
// endpoint is unhealthy, and rise/fall thresholds between the states
// [Unknown], [Healthy], [Unhealthy] and [Draining]. One scheduler goroutine
// and a bounded pool of workers serve any number of endpoints. [HTTP] and
// [TCP] build the common probes; any func(ctx, Endpoint) error is a [Probe].
//
// An [OutlierDetector] watches real calls instead (passive health checking, as
// Envoy's outlier detection does): consecutive failures, consecutive gateway
// failures, success rate and failure percentage, with ejection times that grow
// with each ejection and a cap on the share of ejected hosts.
//
// Both are balancer.Judges: among the Followers of a balancer, they follow
// its endpoint set (SetEndpoints) and report their verdicts to it, and the
// detector is fed every call's outcome from Pick.Done. A new endpoint takes
// traffic after its first passing probe:
//
//	hc, err := healthcheck.New(healthcheck.Config{
//		Interval: time.Second,
//		Probe:    probe, // from healthcheck.HTTP(...)
//	})
//	od, err := healthcheck.NewOutlierDetector(healthcheck.OutlierConfig{})
//	lb, err := balancer.New(balancer.Config{Endpoints: eps, Followers: []balancer.Follower{hc, od}})
//	err = hc.Start(ctx)
//	defer hc.Close()
//
// Standalone, the caller gives each its endpoints with SetEndpoints, and a
// [Listener] hears of the changes.
//
// A [Service] serves the service's own /livez, /readyz and /startupz as
// Kubernetes expects, with application/health+json bodies
// (draft-inadarei-api-health-check), cached dependency checks, a degraded
// state for optional dependencies, and [Service.Drain] for graceful
// shutdown.
package healthcheck
