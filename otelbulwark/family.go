package otelbulwark

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/bulwark-go/bulwark"
)

// familyID names a group of instruments that share a metric-name prefix: one
// per capability, with related components folded together (hedge into retry,
// outlier into healthcheck) and told apart by the component attribute.
type familyID uint8

const (
	famOther familyID = iota // components this package does not know
	famBreaker
	famRetry
	famBalancer
	famHealthCheck
	famIdempotency
	famLimit
	famRateLimit
	famThrottle
	famTimeout
	famFallback
	famDiscovery
	numFamilies
)

var familyPrefix = [numFamilies]string{
	famOther:       "bulwark",
	famBreaker:     "bulwark.breaker",
	famRetry:       "bulwark.retry",
	famBalancer:    "bulwark.balancer",
	famHealthCheck: "bulwark.healthcheck",
	famIdempotency: "bulwark.idempotency",
	famLimit:       "bulwark.limit",
	famRateLimit:   "bulwark.ratelimit",
	famThrottle:    "bulwark.throttle",
	famTimeout:     "bulwark.timeout",
	famFallback:    "bulwark.fallback",
	famDiscovery:   "bulwark.discovery",
}

// familyOf maps an Event.Component to its family.
func familyOf(component string) familyID {
	switch component {
	case bulwark.ComponentBreaker:
		return famBreaker
	case bulwark.ComponentRetry, bulwark.ComponentHedge:
		return famRetry
	case bulwark.ComponentBalancer:
		return famBalancer
	case bulwark.ComponentHealthCheck, bulwark.ComponentOutlier:
		return famHealthCheck
	case bulwark.ComponentIdempotency:
		return famIdempotency
	case bulwark.ComponentBulkhead, bulwark.ComponentLimiter:
		return famLimit
	case bulwark.ComponentRateLimit:
		return famRateLimit
	case bulwark.ComponentThrottle:
		return famThrottle
	case bulwark.ComponentTimeout:
		return famTimeout
	case bulwark.ComponentFallback:
		return famFallback
	case bulwark.ComponentDiscovery:
		return famDiscovery
	}
	return famOther
}

// adder is what Int64Counter and Int64UpDownCounter have in common.
type adder interface {
	Add(ctx context.Context, incr int64, options ...metric.AddOption)
	Enabled(ctx context.Context) bool
}

// counter is a counter or up-down counter of a family, with its slot: its
// index among the family's counters, which picks its cell in an attrEntry.
type counter struct {
	adder
	slot uint8
}

// numCounters is the number of counters and up-down counters a family has at
// most: the slots of an attrEntry's cells.
const numCounters = 22

// family holds the instruments of one familyID. Every family has every
// instrument, so that an event of any kind from any component is recorded;
// the SDK exports only those that received measurements. inflight exists only
// for the balancer, whose picks and calls pair up, and limitInflight (a gauge
// of the same name, for the limits of RegisterLimit) for every other family.
type family struct {
	calls           counter
	callDuration    metric.Float64Histogram
	rejections      counter
	transitions     counter
	state           metric.Int64ObservableGauge
	retries         counter
	backoff         metric.Float64Histogram
	giveUps         counter
	hedges          counter
	budgetExhausted counter
	picks           counter
	inflight        counter // without adder but for famBalancer
	endpoints       counter
	endpointChanges counter
	ejections       counter
	ejected         metric.Int64ObservableGauge
	probes          counter
	probeDuration   metric.Float64Histogram
	claims          counter
	replays         counter
	conflicts       counter
	mismatches      counter
	leaseTakeovers  counter
	storeErrors     counter
	storeDuration   metric.Float64Histogram
	misuses         counter
	adjustments     counter
	limit           metric.Int64ObservableGauge
	limitInflight   metric.Int64ObservableGauge // nil for famBalancer
	queued          metric.Int64ObservableGauge
	baseline        metric.Float64ObservableGauge
	probability     metric.Float64ObservableGauge
	events          counter
}

// builder creates instruments under one prefix, collecting errors and putting
// a no-op instrument in place of any that the provider failed to return.
type builder struct {
	m      metric.Meter
	prefix string
	errs   []error
	slots  uint8 // counters created so far
}

func (b *builder) counter(name, unit, desc string) counter {
	c, err := b.m.Int64Counter(b.prefix+"."+name, metric.WithUnit(unit), metric.WithDescription(desc))
	b.errs = append(b.errs, err)
	if c == nil {
		c = noop.Int64Counter{}
	}
	return b.slot(c)
}

func (b *builder) upDown(name, unit, desc string) counter {
	c, err := b.m.Int64UpDownCounter(b.prefix+"."+name, metric.WithUnit(unit), metric.WithDescription(desc))
	b.errs = append(b.errs, err)
	if c == nil {
		c = noop.Int64UpDownCounter{}
	}
	return b.slot(c)
}

func (b *builder) slot(a adder) counter {
	c := counter{adder: a, slot: b.slots}
	b.slots++
	return c
}

func (b *builder) seconds(name, desc string) metric.Float64Histogram {
	h, err := b.m.Float64Histogram(b.prefix+"."+name, metric.WithUnit("s"), metric.WithDescription(desc),
		metric.WithExplicitBucketBoundaries(latencyBoundaries...))
	b.errs = append(b.errs, err)
	if h == nil {
		return noop.Float64Histogram{}
	}
	return h
}

func (b *builder) gauge(name, unit, desc string) metric.Int64ObservableGauge {
	g, err := b.m.Int64ObservableGauge(b.prefix+"."+name, metric.WithUnit(unit), metric.WithDescription(desc))
	b.errs = append(b.errs, err)
	if g == nil {
		return noop.Int64ObservableGauge{}
	}
	return g
}

func (b *builder) floatGauge(name, unit, desc string) metric.Float64ObservableGauge {
	g, err := b.m.Float64ObservableGauge(b.prefix+"."+name, metric.WithUnit(unit), metric.WithDescription(desc))
	b.errs = append(b.errs, err)
	if g == nil {
		return noop.Float64ObservableGauge{}
	}
	return g
}

func (f *family) init(m metric.Meter, id familyID) error {
	b := builder{m: m, prefix: familyPrefix[id]}
	f.calls = b.counter("calls", "{call}", "Finished calls, by outcome.")
	f.callDuration = b.seconds("call.duration", "Latency of finished calls.")
	f.rejections = b.counter("rejections", "{call}", "Calls refused without running, by reason.")
	f.transitions = b.counter("transitions", "{transition}", "State changes, by from and to state.")
	f.state = b.gauge("state", "{state}", "1 for the current state of each component or endpoint, 0 for states it has left.")
	f.retries = b.counter("retries", "{retry}", "Attempts scheduled after a failed one, by reason.")
	f.backoff = b.seconds("backoff", "Delay before each retry.")
	f.giveUps = b.counter("giveups", "{call}", "Retrying calls given up, by reason and error.type.")
	f.hedges = b.counter("hedges", "{attempt}", "Hedged attempts started.")
	f.budgetExhausted = b.counter("budget_exhausted", "{attempt}", "Retries or hedges not made because the budget was empty.")
	f.picks = b.counter("picks", "{pick}", "Endpoints picked.")
	if id == famBalancer {
		f.inflight = b.upDown("inflight", "{request}", "Picks whose call has not finished yet.")
	}
	f.endpoints = b.upDown("endpoints", "{endpoint}", "Endpoints in the set: added minus removed.")
	f.endpointChanges = b.counter("endpoint_changes", "{change}", "Endpoints added to and removed from the set, by bulwark.event.kind.")
	f.ejections = b.counter("ejections", "{ejection}", "Outlier ejections, by rule.")
	f.ejected = b.gauge("ejected", "{endpoint}", "1 while an endpoint is ejected, 0 after it came back.")
	f.probes = b.counter("probes", "{probe}", "Active health probes, by outcome.")
	f.probeDuration = b.seconds("probe.duration", "Latency of active health probes.")
	f.claims = b.counter("claims", "{key}", "Idempotency keys claimed.")
	f.replays = b.counter("replays", "{request}", "Stored responses replayed.")
	f.conflicts = b.counter("conflicts", "{request}", "Requests refused because their key was in flight.")
	f.mismatches = b.counter("mismatches", "{request}", "Requests refused because their key was reused with another payload.")
	f.leaseTakeovers = b.counter("lease_takeovers", "{key}", "Expired in-flight claims taken over.")
	f.storeErrors = b.counter("store_errors", "{error}", "Store failures, by reason.")
	f.storeDuration = b.seconds("store.duration", "Latency of store operations, where the component reports it.")
	f.misuses = b.counter("misuses", "{event}", "API misuses the component tolerated, by reason.")
	f.adjustments = b.counter("adjustments", "{adjustment}", "Moves of an adaptive concurrency limit, by reason.")
	f.limit = b.gauge("limit", "{request}", "The concurrency limit in force: calls that may run at once.")
	if id != famBalancer {
		f.limitInflight = b.gauge("inflight", "{request}", "Calls holding a slot of the concurrency limit.")
	}
	f.queued = b.gauge("queued", "{request}", "Calls waiting for a slot of the concurrency limit.")
	f.baseline = b.floatGauge("baseline", "s", "The latency an adaptive concurrency limit measured without queueing.")
	f.probability = b.floatGauge("probability", "1", "The probability with which a client-side throttle refuses its next request.")
	f.events = b.counter("events", "{event}", "Events of kinds this adapter does not know, by kind.")
	return errors.Join(b.errs...)
}
