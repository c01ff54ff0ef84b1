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
// throttle's probability. New takes options, as OpenTelemetry's
// instrumentations do; its callbacks stay registered for the life of the
// MeterProvider: create one Observer per provider.
//
// # Metrics
//
// Each component belongs to a family that gives the metric-name prefix
// (bulwark.breaker; bulwark.retry for retry and hedge; bulwark.limit for
// bulkhead and limiter; …), and every family has an instrument for every kind
// of event (<f>.calls, <f>.rejections, <f>.retries, …), so that none is
// dropped; an SDK exports those that received measurements. Every measurement
// has bulwark.component, bulwark.name (the instance's name from its Config)
// and, for an event about an endpoint, server.address, server.port and
// cloud.availability_zone; each instrument adds those that explain it
// (bulwark.outcome, bulwark.reason, error.type, …). None carries a
// per-request value: idempotency keys, errors and attempt numbers go to spans.
//
// The table of the metrics, with their Prometheus names, and the attributes
// and their values are in this module's README.md. That table is the
// contract: the dashboard and the alert rules in examples/deploy are written
// against its names, and a test there checks that each name they use is
// exported. README.md also says how the values are derived, and how to bound
// the series with an SDK View.
//
// # Spans
//
// The components that hold the context of the call an event belongs to pass
// it to [Observer.ObserveContext], which also adds the event to the span in
// that context: retries, give-ups, hedges, exhausted budgets and replays thus
// appear on the span of the request they happened to, with no wiring.
// [AddSpanEvent] says which kinds go to spans, and with which attributes.
package otelbulwark
