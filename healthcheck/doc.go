// Package healthcheck knows which endpoints of a fleet can take traffic, by
// probing them.
//
// A [Checker] probes endpoints actively, as Envoy and HAProxy do: on an
// interval with jitter, with a per-probe timeout, a faster interval while an
// endpoint is unhealthy, and rise/fall thresholds between the states
// [Unknown], [Healthy], [Unhealthy] and [Draining]. One scheduler goroutine
// and a bounded pool of workers serve any number of endpoints. [HTTP] and
// [TCP] build the common probes; any func(ctx, Endpoint) error is a [Probe].
//
// A Checker is a balancer.Judge: among the Followers of a balancer, it
// follows its endpoint set ([Checker.SetEndpoints]) and reports its verdicts to it. A
// new endpoint takes traffic after its first passing probe:
//
//	hc, err := healthcheck.New(healthcheck.Config{Interval: time.Second, Probe: probe})
//	lb, err := balancer.New(balancer.Config{Endpoints: eps, Followers: []balancer.Follower{hc}})
//	err = hc.Start(ctx)
//	defer hc.Close()
//
// Standalone, the caller gives it endpoints with SetEndpoints, and a
// [Listener] hears of the changes.
//
// Passive health checking (ejecting endpoints whose real calls fail) is
// package outlier; the service's own /livez and /readyz are package healthz.
// Events ([Config].Observer): EventProbe for each probe, EventStateChange for
// each change of state, EventEndpointAdded and EventEndpointRemoved.
//
// Conventions, as in every bulwark package: [New] never starts a goroutine;
// [Checker.Start] starts the background work ([ErrStarted] on a second call,
// [ErrClosed] after Close) and [Checker.Close] stops it and waits for it. Configuration errors wrap
// [ErrInvalidConfig]. A probe that panics is not recovered: the panic goes on
// up its worker (as a breaker and the idempotency engine let a panic go on),
// so a bug in a probe is not mistaken for an unhealthy endpoint. Of bulwark's
// packages, healthcheck imports only the root.
package healthcheck
