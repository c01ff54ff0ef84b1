package otelbulwark

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/bulwark-go/bulwark"
)

// ScopeName is the instrumentation scope of the meter the Observer creates. The
// OpenTelemetry Prometheus exporter renders it as the otel_scope_name label.
const ScopeName = "github.com/bulwark-go/bulwark/otelbulwark"

// Version is the version of this module, without the leading "v": the
// instrumentation scope version of the meter the Observer creates, which the
// OpenTelemetry Prometheus exporter renders as the otel_scope_version label.
// It is bumped with every release (see CONTRIBUTING.md); the release check
// fails when it differs from the version the module is installed at.
const Version = "0.1.0"

// latencyBoundaries are the default histogram buckets, in seconds, from half
// a millisecond to ten seconds. A View in the application's SDK overrides them.
var latencyBoundaries = []float64{
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

var _ bulwark.ContextObserver = (*Observer)(nil)

// Observer records bulwark events as OpenTelemetry metrics: the instruments,
// names and attributes of the table in this module's README.md. Its
// instruments are created once and its attribute sets cached (up to 8192
// combinations; past that, each new one is built per event), so Observe does
// not allocate once the combinations seen have been cached, and costs a few
// atomic loads per event when no SDK is installed.
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
// An Observer is safe for concurrent use by multiple goroutines. Observe runs
// on the caller's goroutine and does no I/O; it takes a short internal lock
// only for state changes, ejections, endpoint removals, the first sight of an
// attribute combination, the first count of a counter for it after a
// collection, and the first limit change of a component instance. Use New;
// the zero Observer is not usable.
type Observer struct {
	fams     [numFamilies]family
	attrs    attrCache
	gauges   gaugeStore
	limits   limitStore
	sampled  atomic.Bool // a sampled pick was seen: in flight cannot be kept
	batching atomic.Bool // flush has run: counters add up in cells
	cellsMu  sync.Mutex
	cells    []pending // guarded by cellsMu; appended to, never changed
}

// pending is a cell of counter c for the attributes of entry.
type pending struct {
	c     adder
	entry *attrEntry
	cell  *cell
}

// Option configures New.
type Option interface {
	apply(*config)
}

type config struct {
	mp metric.MeterProvider
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithMeterProvider sets the MeterProvider the Observer creates its meter
// from. If nil or not given, the global provider (otel.GetMeterProvider),
// which forwards to an SDK installed later with otel.SetMeterProvider.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.mp = mp })
}

// New returns an Observer that records events on a meter named ScopeName, at
// Version and with the schema URL of the semantic conventions its attributes
// follow, from the configured MeterProvider. It creates every instrument up
// front and registers three callbacks, one for the state gauges, one for the
// limit gauges and one that hands the SDK the counts held since the last
// collection, which stay registered for the life of the MeterProvider: create
// one Observer per provider and share it between components. The SDK exports
// only the instruments that received measurements.
//
// The error, if any, joins the errors the MeterProvider returned while
// creating instruments (an SDK reports invalid names or conflicting
// registrations this way); the Observer returned with it is still usable and
// records on the instruments that were created.
func New(opts ...Option) (*Observer, error) {
	var cfg config
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&cfg)
		}
	}
	if cfg.mp == nil {
		cfg.mp = otel.GetMeterProvider()
	}
	meter := cfg.mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version),
		metric.WithSchemaURL(semconv.SchemaURL))
	o := &Observer{}
	o.attrs.init()
	o.gauges.init()
	o.limits.init()
	var errs []error
	states := make([]metric.Observable, 0, 2*numFamilies)
	limits := make([]metric.Observable, 0, 5*numFamilies)
	for i := range o.fams {
		f := &o.fams[i]
		errs = append(errs, f.init(meter, familyID(i)))
		states = append(states, f.state, f.ejected)
		limits = append(limits, f.limit, f.queued, f.baseline, f.probability)
		if f.limitInflight != nil {
			limits = append(limits, f.limitInflight)
		}
	}
	_, err := meter.RegisterCallback(o.gauges.observe(&o.fams), states...)
	errs = append(errs, err)
	_, err = meter.RegisterCallback(o.limits.observe(&o.fams), limits...)
	errs = append(errs, err)
	_, err = meter.RegisterCallback(o.flush, append(states, limits...)...)
	errs = append(errs, err)
	return o, errors.Join(errs...)
}

// ObserveContext records e as Observe does and adds it to the span in ctx,
// as AddSpanEvent does. A bulwark.Event has no context field, but the
// components that hold the context of the call an event belongs to pass it
// along: they call ObserveContext, in place of Observe, for the events they
// emit with that context (see bulwark.ContextObserver for which). Retries,
// give-ups, hedges, exhausted budgets and replays thus appear on the span of
// the request they happened to, with no wiring. Events that come through
// Observe, without a context, are recorded as metrics only; code that holds
// both the event and the context can call AddSpanEvent itself.
func (o *Observer) ObserveContext(ctx context.Context, e bulwark.Event) {
	o.Observe(e)
	AddSpanEvent(ctx, e)
}

// Observe records e on the instruments of its component's family, as the
// table in this module's README.md says. Events of an unknown component are
// recorded under the "bulwark." prefix, and events of a kind this version does
// not know on the family's events counter, so that nothing is dropped silently.
func (o *Observer) Observe(e bulwark.Event) {
	ctx := context.Background()
	fid := familyOf(e.Component)
	f := &o.fams[fid]
	switch e.Kind {
	case bulwark.EventCall:
		o.measure(ctx, f.calls, f.callDuration, shapeCall, &e, e.Latency.Seconds())
		if f.inflight.adder != nil && !o.sampled.Load() && f.inflight.Enabled(ctx) {
			o.add(ctx, f.inflight, o.attrs.get(shapeBase, &e), -1)
		}
	case bulwark.EventRejected:
		o.count(ctx, f.rejections, shapeRejection, &e)
	case bulwark.EventStateChange:
		if f.transitions.Enabled(ctx) {
			o.add(ctx, f.transitions, o.attrs.get(shapeTransition, &e), 1)
			o.gauges.setState(fid, &e)
		}
	case bulwark.EventRetry:
		o.measure(ctx, f.retries, f.backoff, shapeReason, &e, e.Delay.Seconds())
	case bulwark.EventGiveUp:
		o.count(ctx, f.giveUps, shapeGiveUp, &e)
	case bulwark.EventHedge:
		o.count(ctx, f.hedges, shapeReason, &e)
	case bulwark.EventBudgetExhausted:
		o.count(ctx, f.budgetExhausted, shapeReason, &e)
	case bulwark.EventPick:
		// A sampled pick stands for Weight picks; it cannot pair with the
		// calls it stands for, so once one is seen in flight stops.
		var a *attrEntry // both counters have the same attributes: look them up once
		if f.picks.Enabled(ctx) {
			a = o.attrs.get(shapeBase, &e)
			o.add(ctx, f.picks, a, max(int64(e.Weight), 1))
		}
		if e.Weight > 1 && fid == famBalancer && !o.sampled.Load() {
			o.sampled.Store(true)
		}
		if f.inflight.adder != nil && !o.sampled.Load() && f.inflight.Enabled(ctx) {
			if a == nil {
				a = o.attrs.get(shapeBase, &e)
			}
			o.add(ctx, f.inflight, a, 1)
		}
	case bulwark.EventEndpointAdded:
		if f.endpoints.Enabled(ctx) {
			o.add(ctx, f.endpoints, o.attrs.get(shapeNamed, &e), 1)
		}
		o.count(ctx, f.endpointChanges, shapeChange, &e)
	case bulwark.EventEndpointRemoved:
		if f.endpoints.Enabled(ctx) {
			o.add(ctx, f.endpoints, o.attrs.get(shapeNamed, &e), -1)
		}
		o.count(ctx, f.endpointChanges, shapeChange, &e)
		o.gauges.forget(&e)
	case bulwark.EventEjected:
		if f.ejections.Enabled(ctx) {
			o.add(ctx, f.ejections, o.attrs.get(shapeReason, &e), 1)
			o.gauges.setEjected(fid, &e, true)
		}
	case bulwark.EventUnejected:
		if f.ejections.Enabled(ctx) {
			o.gauges.setEjected(fid, &e, false)
		}
	case bulwark.EventProbe:
		o.measure(ctx, f.probes, f.probeDuration, shapeOutcome, &e, e.Latency.Seconds())
	case bulwark.EventClaimed:
		o.store(ctx, f, f.claims, &e)
	case bulwark.EventReplayed:
		o.store(ctx, f, f.replays, &e)
	case bulwark.EventConflict:
		o.store(ctx, f, f.conflicts, &e)
	case bulwark.EventMismatch:
		o.store(ctx, f, f.mismatches, &e)
	case bulwark.EventLeaseTakeover:
		o.store(ctx, f, f.leaseTakeovers, &e)
	case bulwark.EventStoreError:
		o.store(ctx, f, f.storeErrors, &e)
	case bulwark.EventMisuse:
		o.count(ctx, f.misuses, shapeReason, &e)
	case bulwark.EventLimitChanged:
		if f.adjustments.Enabled(ctx) {
			o.add(ctx, f.adjustments, o.attrs.get(shapeReason, &e), 1)
			o.limits.set(fid, &e)
		}
	default:
		o.count(ctx, f.events, shapeKind, &e)
	}
}

// count adds one to c with the attributes of shape, if c is enabled.
func (o *Observer) count(ctx context.Context, c counter, s shape, e *bulwark.Event) {
	if c.Enabled(ctx) {
		o.add(ctx, c, o.attrs.get(s, e), 1)
	}
}

// add adds n to c with the attributes of a. Once a collection has run flush,
// n goes to a's cell for c, an atomic add, and flush gives the SDK the sum at
// the next collection: the SDK's own Add, which de-duplicates the attributes
// and finds their aggregator on every call, costs several times more. Until
// then, and for an attribute set the cache did not keep, n goes to the SDK at
// once, so that counts are not held when no collection runs flush (the SDK
// skips the callbacks of instruments that every View drops).
func (o *Observer) add(ctx context.Context, c counter, a *attrEntry, n int64) {
	if !a.cached || !o.batching.Load() {
		c.Add(ctx, n, a.add...)
		return
	}
	cl := a.cells[c.slot].Load()
	if cl == nil {
		cl = o.newCell(c, a)
	}
	cl.n.Add(n)
}

// newCell returns a's cell for c, creating it.
func (o *Observer) newCell(c counter, a *attrEntry) *cell {
	o.cellsMu.Lock()
	defer o.cellsMu.Unlock()
	if cl := a.cells[c.slot].Load(); cl != nil {
		return cl
	}
	cl := new(cell)
	cl.fresh.Store(true)
	a.cells[c.slot].Store(cl)
	o.cells = append(o.cells, pending{c: c.adder, entry: a, cell: cl})
	return cl
}

// flush is a callback that the SDK runs at the start of each collection,
// before it reads the instruments: it adds the counts held in cells to their
// counters, so that the collection sees every count, and from then on lets
// add hold counts.
func (o *Observer) flush(ctx context.Context, _ metric.Observer) error {
	o.batching.Store(true)
	o.cellsMu.Lock()
	cells := o.cells
	o.cellsMu.Unlock()
	for _, p := range cells {
		// A fresh cell is added even at zero (an up-down counter's +1 and
		// -1), so that its series exists as it would without cells.
		if n := p.cell.n.Swap(0); n != 0 || p.cell.fresh.Swap(false) {
			p.c.Add(ctx, n, p.entry.add...)
		}
	}
	return nil
}

// measure adds one to c and records v on h, both with the attributes of shape,
// for those of them that are enabled.
func (o *Observer) measure(ctx context.Context, c counter, h metric.Float64Histogram, s shape, e *bulwark.Event, v float64) {
	ce, he := c.Enabled(ctx), h.Enabled(ctx)
	if !ce && !he {
		return
	}
	a := o.attrs.get(s, e)
	if ce {
		o.add(ctx, c, a, 1)
	}
	if he {
		h.Record(ctx, v, a.rec...)
	}
}

// store counts an idempotency event on c and, when the event carries the
// latency of the store operation, records it on the store.duration histogram
// with bulwark.outcome "failure" for a store error and "success" otherwise.
func (o *Observer) store(ctx context.Context, f *family, c counter, e *bulwark.Event) {
	o.count(ctx, c, shapeReason, e)
	if e.Latency > 0 && f.storeDuration.Enabled(ctx) {
		s := bulwark.Event{Component: e.Component, Name: e.Name, Outcome: bulwark.Success}
		if e.Kind == bulwark.EventStoreError {
			s.Outcome = bulwark.Failure
		}
		f.storeDuration.Record(ctx, e.Latency.Seconds(), o.attrs.get(shapeStore, &s).rec...)
	}
}
