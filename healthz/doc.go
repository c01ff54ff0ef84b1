// Package healthz serves the service's own health endpoints, /livez, /readyz
// and /startupz, as Kubernetes expects, with application/health+json bodies
// (draft-inadarei-api-health-check).
//
// A [Service] runs the checks ([Check]) of its [Config] with a timeout each,
// caches their results for a TTL, reports a failing optional dependency as
// degraded ("warn") without failing readiness, and [Service.Drain] fails
// readiness at once for a graceful shutdown:
//
//	svc, err := healthz.New(healthz.Config{Ready: []healthz.Check{{Name: "db", Run: db.PingContext}}})
//	mux.Handle("GET /readyz", svc.Readyz())
//	mux.Handle("GET /livez", svc.Livez())
//	// on SIGTERM: svc.Drain(); then srv.Shutdown(ctx)
//
// Probing the endpoints of other services is package healthcheck.
//
// [Service.Readyz], [Service.Livez] and [Service.Startupz] are the handlers
// of each endpoint; the Service itself serves all three under any prefix
// ([Service.ServeHTTP]), and [Service.MarkStarted] ends the startup phase.
//
// A Service has no background work: checks run when a request asks and the
// cached result is stale. [New]'s errors wrap [ErrInvalidConfig]; a check
// that panics fails (its panic becomes the check's error, so that one bad
// check cannot take down the health endpoint). Events ([Config].Observer):
// EventStateChange when readiness changes, EventProbe for each check run,
// both with Component "healthcheck". Of bulwark's packages, healthz imports
// only the root.
package healthz
