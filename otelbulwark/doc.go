// Package otelbulwark records the events of bulwark's components as
// OpenTelemetry metrics, and adds the ones that explain a request to its span.
// It uses only the OpenTelemetry API: the application installs the SDK and
// its exporters (Prometheus, OTLP, …).
//
//	obs, err := otelbulwark.New() // the global MeterProvider
//	if err != nil { … }
//	cb, err := breaker.New(breaker.Config{Name: "payments", Observer: obs})
//
// [New] returns an [*Observer], a [bulwark.ContextObserver]. One Observer
// serves every component: pass it, or [bulwark.Observers](obs, other), in
// each Config. With no SDK installed an event costs a few nanoseconds and no
// allocation (BenchmarkObserver/noSDK); with an SDK, an event allocates
// nothing once its combination of attributes has been seen (state changes,
// ejections and endpoint removals aside: they update the gauges under a
// lock). [WithMeterProvider] picks the provider; [AddSpanEvent] puts an event
// on a span by hand; [Observer.RegisterLimit] and [Observer.RegisterThrottle]
// add the gauges that events cannot give: calls in flight and queued, and a
// throttle's probability.
//
// # Metrics
//
// This table is the contract: the dashboard and the alert rules in
// examples/deploy are written against these names, and a test there checks
// that each name they use is exported. Each component belongs to a family
// that gives the metric-name prefix: breaker (bulwark.breaker), retry and
// hedge (bulwark.retry), balancer (bulwark.balancer), healthcheck and outlier
// (bulwark.healthcheck), idempotency (bulwark.idempotency), bulkhead and
// limiter (bulwark.limit), ratelimit (bulwark.ratelimit), throttle
// (bulwark.throttle), timeout (bulwark.timeout), fallback (bulwark.fallback),
// discovery (bulwark.discovery); the bulwark.component attribute tells the
// members of a family apart, and a component this package does not know gets
// the bare "bulwark" prefix. Every family has every instrument below (but
// the gauge inflight, which the balancer family has as the up-down counter of
// its picks), so that no event is dropped, but an SDK exports only the ones
// that received measurements; the Prometheus column names those the
// components emit today, as the OpenTelemetry Prometheus exporter renders them
// (dots become underscores, counters end in _total, seconds histograms in
// _seconds_bucket, _seconds_sum and _seconds_count, seconds gauges in
// _seconds, unit 1 in _ratio; a unit in braces adds nothing).
//
//	event kind        instrument (type, unit)                  Prometheus name                                   attributes beyond the base
//	----------------  ---------------------------------------  ------------------------------------------------  ---------------------------------------------
//	call              <f>.calls (counter)                      bulwark_breaker_calls_total,                      bulwark.outcome bulwark.reason
//	                                                           bulwark_timeout_calls_total,
//	                                                           bulwark_fallback_calls_total,
//	                                                           bulwark_discovery_calls_total
//	call              <f>.call.duration (histogram, s)         bulwark_breaker_call_duration_seconds_bucket, …   bulwark.outcome bulwark.reason
//	rejected          <f>.rejections (counter)                 bulwark_breaker_rejections_total,                 bulwark.reason bulwark.criticality
//	                                                           bulwark_balancer_rejections_total,
//	                                                           bulwark_idempotency_rejections_total,
//	                                                           bulwark_limit_rejections_total,
//	                                                           bulwark_ratelimit_rejections_total,
//	                                                           bulwark_throttle_rejections_total
//	state_change      <f>.transitions (counter)                bulwark_breaker_transitions_total,                bulwark.previous_state bulwark.state bulwark.reason
//	                                                           bulwark_balancer_transitions_total,
//	                                                           bulwark_healthcheck_transitions_total,
//	                                                           bulwark_discovery_transitions_total
//	state_change      <f>.state (gauge, 1 or 0)                bulwark_breaker_state, bulwark_balancer_state,    bulwark.state
//	                                                           bulwark_healthcheck_state, bulwark_discovery_state
//	retry             <f>.retries (counter)                    bulwark_retry_retries_total                       bulwark.reason
//	retry             <f>.backoff (histogram, s)               bulwark_retry_backoff_seconds_bucket              bulwark.reason
//	give_up           <f>.giveups (counter)                    bulwark_retry_giveups_total                       bulwark.reason error.type
//	hedge             <f>.hedges (counter)                     bulwark_retry_hedges_total                        bulwark.reason
//	budget_exhausted  <f>.budget_exhausted (counter)           bulwark_retry_budget_exhausted_total              bulwark.reason
//	pick              <f>.picks (counter)                      bulwark_balancer_picks_total                      —
//	pick, call        bulwark.balancer.inflight (up-down)      bulwark_balancer_inflight                         —
//	endpoint_added,   <f>.endpoints (up-down)                  bulwark_balancer_endpoints,                       — (no endpoint attributes)
//	endpoint_removed                                           bulwark_discovery_endpoints
//	endpoint_added,   <f>.endpoint_changes (counter)           bulwark_discovery_endpoint_changes_total, …       bulwark.event.kind bulwark.reason (no endpoint
//	endpoint_removed                                                                                             attributes)
//	ejected           <f>.ejections (counter)                  bulwark_healthcheck_ejections_total               bulwark.reason
//	ejected,          <f>.ejected (gauge, 1 or 0)              bulwark_healthcheck_ejected                       —
//	unejected
//	probe             <f>.probes (counter)                     bulwark_healthcheck_probes_total                  bulwark.outcome
//	probe             <f>.probe.duration (histogram, s)        bulwark_healthcheck_probe_duration_seconds_bucket bulwark.outcome
//	claimed           <f>.claims (counter)                     bulwark_idempotency_claims_total                  bulwark.reason
//	replayed          <f>.replays (counter)                    bulwark_idempotency_replays_total                 bulwark.reason
//	conflict          <f>.conflicts (counter)                  bulwark_idempotency_conflicts_total               bulwark.reason
//	mismatch          <f>.mismatches (counter)                 bulwark_idempotency_mismatches_total              bulwark.reason
//	lease_takeover    <f>.lease_takeovers (counter)            bulwark_idempotency_lease_takeovers_total         bulwark.reason
//	store_error       <f>.store_errors (counter)               bulwark_idempotency_store_errors_total,           bulwark.reason
//	                                                           bulwark_ratelimit_store_errors_total
//	idempotency kinds <f>.store.duration (histogram, s)        bulwark_idempotency_store_duration_seconds_bucket bulwark.outcome (no endpoint attributes)
//	and store_error                                            bulwark_ratelimit_store_duration_seconds_bucket
//	misuse            <f>.misuses (counter)                    bulwark_balancer_misuses_total, …                 bulwark.reason
//	limit_changed     <f>.adjustments (counter)                bulwark_limit_adjustments_total                   bulwark.reason
//	limit_changed,    <f>.limit (gauge)                        bulwark_limit_limit                               — (component and name only)
//	RegisterLimit
//	limit_changed,    <f>.baseline (gauge, s)                  bulwark_limit_baseline_seconds                    — (component and name only)
//	RegisterLimit
//	RegisterLimit     <f>.inflight (gauge)                     bulwark_limit_inflight                            — (component and name only)
//	RegisterLimit     <f>.queued (gauge)                       bulwark_limit_queued                              — (component and name only)
//	RegisterThrottle  <f>.probability (gauge, 1)               bulwark_throttle_probability_ratio                — (component and name only)
//	(unknown kind)    <f>.events (counter)                     bulwark_<family>_events_total                     bulwark.event.kind bulwark.reason
//
// The attributes follow the OpenTelemetry semantic conventions where one
// fits (the endpoint, its zone, the class of error) and are in the bulwark
// namespace otherwise. The Prometheus exporter renders the dots as
// underscores: server_address, bulwark_name, error_type, …. Every measurement
// has the base attributes:
//   - bulwark.component: Event.Component ("breaker", "retry", "hedge",
//     "balancer", "healthcheck", "outlier", "idempotency", "bulkhead",
//     "limiter", "ratelimit", "throttle", "timeout", "fallback",
//     "discovery", or the user's own).
//   - bulwark.name: Event.Name, the instance's name from its Config.
//   - server.address, server.port and cloud.availability_zone, for events
//     about an endpoint: Event.Endpoint.Addr split into host and port
//     ("10.0.0.1:8080" gives "10.0.0.1" and 8080; an address without a
//     numeric port goes whole into server.address, with no server.port), and
//     Event.Endpoint.Zone.
//
// And, per instrument as the table says:
//   - bulwark.outcome: "success", "failure" or "neutral" (Event.Outcome).
//     For a fallback, "success" is a value served in place of the error and
//     "failure" a fallback that failed too.
//   - bulwark.reason: Event.Reason, a short cause ("open", "retry_after",
//     "attempts", "consecutive_failures", "fail-open", …). On calls, only the
//     components that set one have it: "timeout" for a call that overran its
//     timeout; "rejected", "deadline" or "error", the error a fallback stood
//     in for; "resolve", "invalid", "empty" or "update", a failed discovery.
//     On rejections by a bulkhead or limiter: "limit", "queue_full",
//     "wait_timeout", "shed" or "tenant" (a tenant over its share of the
//     limit); by a rate limiter: "rate", "burst" or "deadline"; by a
//     throttle: "throttled". On a rate limiter's store errors, what it did
//     when Redis did not answer: "fail-open", "fail-closed" or "fallback".
//     On adjustments: "increase", "decrease", "drop", "probe" or "restore".
//   - bulwark.criticality: on rejections whose Event.Err is, or wraps, a
//     *limit.RejectedError, the refused call's criticality: "sheddable",
//     "normal" or "critical". Its Tenant is never an attribute: tenants are
//     unbounded, and the tenant reason says what an alert needs.
//   - error.type, on give-ups only: "permanent" when the last error was not
//     retryable (Reason "permanent" or "not_retryable": a declined card, a
//     4xx), "canceled" when the caller canceled (Reason "canceled"), and
//     "transient" otherwise: retryable errors that the retries did not fix
//     before a limit (attempts, elapsed, deadline, budget, retry_after)
//     stopped them. The give-up alert of examples/deploy leaves out
//     "permanent" and "canceled": a permanent give-up is the dependency's
//     answer, not its failure.
//   - bulwark.previous_state and bulwark.state: the states of
//     EventStateChange (From and To; on the state gauge, the state the
//     series is about): "closed", "open", "half-open", "forced-open",
//     "forced-closed" for a breaker; "normal", "panic" for a balancer;
//     "unknown", "healthy", "unhealthy", "draining" for a health checker's
//     endpoints; "pass", "warn", "fail", "draining" for a service's own
//     readiness; "unknown", "ok", "failing" for a discovery watcher.
//   - bulwark.event.kind: the EventKind's String, for kinds this package does
//     not know, and "endpoint_added" or "endpoint_removed" on endpoint
//     changes.
//
// Attributes with an empty value are left out. None carries a per-request
// value: idempotency keys, errors and attempt numbers go to spans, never to
// metrics. Two attributes can still grow with the deployment: the endpoint
// attributes cost one series per endpoint, and bulwark.name is the group key
// for keyed breaker groups, so one series per host or tenant. Where those are
// unbounded, drop the attribute with an SDK View (an attribute filter); a
// View also changes the default histogram buckets (0.5 ms to 10 s).
//
// The meter is named [ScopeName], at [Version], with the schema URL of the
// semantic conventions the attributes follow; the Prometheus exporter
// renders the first two as the otel_scope_name and otel_scope_version labels.
//
// How the values are derived:
//   - The state gauges hold the last-known state of each component instance
//     (and, for per-endpoint states, of each endpoint): 1 for the state it is
//     in, 0 for each other state it has been in. A component that never
//     changed state has no series; a dashboard reads that as its initial
//     state. An endpoint's gauges go away when its component reports
//     endpoint_removed.
//   - The balancer ([github.com/bulwark-go/bulwark/balancer]) reports each
//     pick (EventPick, sampled per its Config.PickSample) and, from Pick.Done, each finished call (an
//     EventCall with Component "balancer", the Endpoint, Outcome and
//     Latency). In flight is picks minus calls of component "balancer", and
//     call.duration of the balancer family is the latency histogram per
//     endpoint. Nothing needs to be reported by hand: an EventCall for a
//     balancer emitted by the caller as well would count each call twice and
//     drive in flight below zero. A sampled pick (Weight > 1) adds Weight
//     to picks but cannot pair with the calls it stands for, so once the
//     Observer sees one it stops updating in flight.
//   - store.duration records Event.Latency of idempotency events that carry
//     it, with bulwark.outcome "failure" for store_error and "success"
//     otherwise, and of a rate limiter's store errors (the time Redis took
//     not to answer).
//   - The limit gauge holds, for each component instance, the limit its
//     latest limit_changed event set (Event.Limit), and the baseline gauge
//     its Event.Latency once positive, unless the instance is registered
//     with RegisterLimit: then the limit comes from the instance itself at
//     each collection, and so do in flight, the baseline of a limiter and
//     the queue of a bulkhead. Events do not tell how many calls are in
//     flight: without a registration there is no inflight gauge. Up to 4096
//     instances are kept from events.
//   - Admitted calls are not events (admission is the hot path, and stays
//     free): the share of the load a limit sheds is its rejections over the
//     requests of the service, such as the count of the semantic-convention
//     http.server.request.duration (which otelhttp records), as the
//     dashboard and the shedding alert of examples/deploy compute it.
//
// The state and ejected gauges are kept only while their family's
// transitions (respectively ejections) counter is enabled, and the limit and
// baseline that events set while adjustments is, so that without an SDK a
// state change costs no lock and a limit change nothing.
//
// Once the SDK has collected (it runs the Observer's callbacks, as a
// Prometheus scrape or a periodic OTLP export does), the counters and up-down
// counters add up in the Observer, one atomic add an event, and are handed to
// the SDK at the start of each collection, before it reads them: what is
// exported is the same, but an event costs a fraction of the SDK's Add, which
// de-duplicates the attributes and looks up their series on every call. The
// histograms are recorded on the SDK at once. Until a first collection, and
// if the SDK runs none of the Observer's callbacks (a View drops all its
// gauges), counts go to the SDK at once.
//
// # Spans
//
// A [bulwark.Event] has no context field, but the components that hold the
// context of the call an event belongs to pass it along: *Observer is a
// [bulwark.ContextObserver], and its [Observer.ObserveContext] records the
// metrics and adds the event to the span in that context (see
// [AddSpanEvent] for which kinds, and with which attributes). Retries,
// give-ups, hedges, exhausted budgets and replays thus appear on the span of
// the request they happened to, with no wiring. Events that come through
// Observe, without a context (see [bulwark.ContextObserver] for which), are
// recorded as metrics only; code that holds both the event and the context
// can call AddSpanEvent itself.
package otelbulwark
