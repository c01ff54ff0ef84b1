// Package otelbulwark records the events of bulwark's components as
// OpenTelemetry metrics, and adds the ones that explain a request to its span.
// It uses only the OpenTelemetry API: the application installs the SDK and
// its exporters (Prometheus, OTLP, …).
//
//	obs, err := otelbulwark.New() // the global MeterProvider
//	if err != nil { … }
//	cb, err := breaker.New(breaker.Config{Name: "payments", Observer: obs})
//
// One Observer serves every component: pass it, or bulwark.Observers(obs,
// other), in each Config. With no SDK installed an event costs a few
// nanoseconds and no allocation (BenchmarkObserver/noSDK).
//
// # Metrics
//
// This table is the contract: the dashboard and the alert rules in
// examples/deploy are written against these names, and a test there checks
// that each name they use is exported. Each component belongs to a family
// that gives the metric-name prefix: breaker (bulwark.breaker), retry and
// hedge (bulwark.retry), balancer (bulwark.balancer), healthcheck and outlier
// (bulwark.healthcheck), idempotency (bulwark.idempotency); the component
// attribute tells the members of a family apart, and a component this package
// does not know gets the bare "bulwark" prefix. Every family has every
// instrument below, so that no event is dropped, but an SDK exports only the
// ones that received measurements; the Prometheus column names those the
// components emit today, as the OpenTelemetry Prometheus exporter renders them
// (dots become underscores, counters end in _total, seconds histograms in
// _seconds_bucket, _seconds_sum and _seconds_count; a unit in braces adds
// nothing).
//
//	event kind        instrument (type, unit)                  Prometheus name                                  attributes
//	----------------  ---------------------------------------  -----------------------------------------------  ---------------------------------------------
//	call              <f>.calls (counter)                      bulwark_breaker_calls_total                      component name endpoint zone outcome
//	call              <f>.call.duration (histogram, s)         bulwark_breaker_call_duration_seconds_bucket     component name endpoint zone outcome
//	rejected          <f>.rejections (counter)                 bulwark_breaker_rejections_total,                component name endpoint zone reason
//	                                                           bulwark_idempotency_rejections_total
//	state_change      <f>.transitions (counter)                bulwark_breaker_transitions_total,               component name endpoint zone from to reason
//	                                                           bulwark_balancer_transitions_total,
//	                                                           bulwark_healthcheck_transitions_total
//	state_change      <f>.state (gauge, 1 or 0)                bulwark_breaker_state, bulwark_balancer_state,   component name endpoint zone state
//	                                                           bulwark_healthcheck_state
//	retry             <f>.retries (counter)                    bulwark_retry_retries_total                      component name endpoint zone reason
//	retry             <f>.backoff (histogram, s)               bulwark_retry_backoff_seconds_bucket             component name endpoint zone reason
//	give_up           <f>.giveups (counter)                    bulwark_retry_giveups_total                      component name endpoint zone reason
//	hedge             <f>.hedges (counter)                     bulwark_retry_hedges_total                       component name endpoint zone reason
//	budget_exhausted  <f>.budget_exhausted (counter)           bulwark_retry_budget_exhausted_total             component name endpoint zone reason
//	pick              <f>.picks (counter)                      bulwark_balancer_picks_total                     component name endpoint zone
//	pick, call        bulwark.balancer.inflight (up-down)      bulwark_balancer_inflight                        component name endpoint zone
//	endpoint_added,   <f>.endpoints (up-down)                  bulwark_balancer_endpoints                       component name
//	endpoint_removed
//	ejected           <f>.ejections (counter)                  bulwark_healthcheck_ejections_total              component name endpoint zone reason
//	ejected,          <f>.ejected (gauge, 1 or 0)              bulwark_healthcheck_ejected                      component name endpoint zone
//	unejected
//	probe             <f>.probes (counter)                     bulwark_healthcheck_probes_total                 component name endpoint zone outcome
//	probe             <f>.probe.duration (histogram, s)        bulwark_healthcheck_probe_duration_seconds_bucket component name endpoint zone outcome
//	claimed           <f>.claims (counter)                     bulwark_idempotency_claims_total                 component name endpoint zone reason
//	replayed          <f>.replays (counter)                    bulwark_idempotency_replays_total                component name endpoint zone reason
//	conflict          <f>.conflicts (counter)                  bulwark_idempotency_conflicts_total              component name endpoint zone reason
//	mismatch          <f>.mismatches (counter)                 bulwark_idempotency_mismatches_total             component name endpoint zone reason
//	lease_takeover    <f>.lease_takeovers (counter)            bulwark_idempotency_lease_takeovers_total        component name endpoint zone reason
//	store_error       <f>.store_errors (counter)               bulwark_idempotency_store_errors_total           component name endpoint zone reason
//	idempotency kinds <f>.store.duration (histogram, s)        bulwark_idempotency_store_duration_seconds_bucket component name outcome
//	misuse            <f>.misuses (counter)                    bulwark_balancer_misuses_total, …                component name endpoint zone reason
//	(unknown kind)    <f>.events (counter)                     bulwark_<family>_events_total                    component name endpoint zone kind reason
//
// The attributes:
//   - component: Event.Component ("breaker", "retry", "hedge", "balancer",
//     "healthcheck", "outlier", "idempotency", or the user's own).
//   - name: Event.Name, the instance's name from its Config.
//   - endpoint and zone: Event.Endpoint.Addr and .Zone.
//   - outcome: "success", "failure" or "neutral" (Event.Outcome).
//   - reason: Event.Reason, a short cause ("open", "retry_after",
//     "attempts", "consecutive_failures", "fail-open", …).
//   - from, to and state: the states of EventStateChange: "closed", "open",
//     "half-open", "forced-open", "forced-closed" for a breaker; "normal",
//     "panic" for a balancer; "unknown", "healthy", "unhealthy", "draining"
//     for a health checker's endpoints; "pass", "warn", "fail", "draining"
//     for a service's own readiness.
//   - kind: the EventKind's String, for kinds this package does not know.
//
// Attributes with an empty value are left out. None carries a per-request
// value: idempotency keys, errors and attempt numbers go to spans, never to
// metrics. Two attributes can still grow with the deployment: endpoint costs
// one series per endpoint, and name is the group key for keyed breaker
// groups, so one series per host or tenant. Where those are unbounded, drop
// the attribute with an SDK View (an attribute filter); a View also changes
// the default histogram buckets (0.5 ms to 10 s).
//
// How the values are derived:
//   - The state gauges hold the last-known state of each component instance
//     (and, for per-endpoint states, of each endpoint): 1 for the state it is
//     in, 0 for each other state it has been in. A component that never
//     changed state has no series; a dashboard reads that as its initial
//     state. An endpoint's gauges go away when its component reports
//     endpoint_removed.
//   - A balancer's sampled pick (Attempt > 1, see balancer.Config.PickSample)
//     adds Attempt to picks. In flight is picks minus calls of component
//     "balancer", so it is meaningful only when every pick and every finished
//     call is reported: once the Observer sees a sampled pick, it stops
//     updating in flight. The balancer package reports picks but not
//     finished calls: the code that calls Pick.Done reports the call (an
//     EventCall with Component "balancer", the balancer's Name, the Endpoint,
//     Outcome and Latency) to feed in flight and call.duration, the latency
//     histogram per endpoint.
//   - store.duration records Event.Latency of idempotency events that carry
//     it, with outcome "failure" for store_error and "success" otherwise.
//
// The state and ejected gauges are kept only while their family's
// transitions (respectively ejections) counter is enabled, so that without an
// SDK a state change costs no lock.
//
// # Spans
//
// An Event carries no context, so an Observer cannot know which request an
// event belongs to. AddSpanEvent adds an event to the span of a context the
// caller has; see its documentation for the pattern.
package otelbulwark
