package otelbulwark

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/bulwark-go/bulwark"
)

// ErrNilSource is returned by RegisterLimit and RegisterThrottle for a nil
// source.
var ErrNilSource = errors.New("otelbulwark: nil source")

// Limit is a concurrency limit whose state [Observer.RegisterLimit] reports:
// *limit.Limiter and *limit.Bulkhead are Limits. Limit returns the limit in
// force and InFlight the calls holding a slot. A Limit that also has a method
// Queued() int (as *limit.Bulkhead has) has its waiting calls reported, and
// one with Baseline() time.Duration (as *limit.Limiter has) its baseline
// latency. The methods are called at each collection, from the SDK's
// goroutine, concurrently with the limit's own use: they must be safe for
// that, and quick.
type Limit interface {
	Limit() int
	InFlight() int
}

// Throttle is a client-side throttle whose refusal probability
// [Observer.RegisterThrottle] reports: *throttle.Policy is one. Probability
// is called at each collection, from the SDK's goroutine: it must be safe for
// concurrent use, and quick.
type Throttle interface {
	Probability() float64
}

// maxLimitEntries bounds the limits kept from EventLimitChanged. Past it, the
// limit of a new component instance is not reported on the gauges (its
// adjustments are still counted): limiters made per key without end cannot
// make the Observer grow without end.
const maxLimitEntries = 4096

// limitKey identifies a limit: a component instance.
type limitKey struct {
	component string
	name      string
}

// limitEntry is the limit and baseline that the latest EventLimitChanged of
// one component instance reported.
type limitEntry struct {
	fam      familyID
	set      attribute.Set
	limit    atomic.Int64
	baseline atomic.Int64 // ns; 0 until measured
}

// registration is a source of gauge values registered by RegisterLimit or
// RegisterThrottle.
type registration struct {
	fam      familyID
	set      attribute.Set
	lim      Limit                // nil for a throttle
	queued   func() int           // nil if lim has no Queued method
	baseline func() time.Duration // nil if lim has no Baseline method
	thr      Throttle             // nil for a limit
}

// limitStore keeps what the limit gauges report: the limits that events set,
// read by the event path without a lock through an immutable map (copied on
// the rare insertion), and the registered sources.
type limitStore struct {
	read      atomic.Pointer[map[limitKey]*limitEntry]
	mu        sync.Mutex                 // guards the fields below, and insertions into read
	limits    map[limitKey]*registration // by RegisterLimit
	throttles map[limitKey]*registration // by RegisterThrottle
}

func (s *limitStore) init() {
	m := map[limitKey]*limitEntry{}
	s.read.Store(&m)
	s.limits = map[limitKey]*registration{}
	s.throttles = map[limitKey]*registration{}
}

// set records the limit and baseline of e, an EventLimitChanged. Once the
// component instance has been seen it does not allocate.
func (s *limitStore) set(fam familyID, e *bulwark.Event) {
	k := limitKey{component: e.Component, name: e.Name}
	en, ok := (*s.read.Load())[k]
	if !ok {
		if en = s.insert(fam, k); en == nil {
			return
		}
	}
	en.limit.Store(int64(e.Limit))
	en.baseline.Store(int64(e.Latency))
}

// insert adds the entry of k, unless the store is full (then it returns nil).
func (s *limitStore) insert(fam familyID, k limitKey) *limitEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.read.Load()
	if en, ok := old[k]; ok {
		return en
	}
	if len(old) >= maxLimitEntries {
		return nil
	}
	en := &limitEntry{fam: fam, set: namedSet(k)}
	m := maps.Clone(old)
	m[k] = en
	s.read.Store(&m)
	return en
}

func namedSet(k limitKey) attribute.Set {
	return attribute.NewSet(attrKey{shape: shapeNamed, component: k.component, name: k.name}.attributes()...)
}

// register adds r under k in regs, replacing any registration there, and
// returns the function that removes it (and, for a limit, the entry that
// events set for k).
func (s *limitStore) register(regs map[limitKey]*registration, k limitKey, r *registration) func() {
	s.mu.Lock()
	regs[k] = r
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if regs[k] != r {
				return // replaced by a later registration
			}
			delete(regs, k)
			if r.lim == nil {
				return
			}
			if old := *s.read.Load(); old[k] != nil {
				m := maps.Clone(old)
				delete(m, k)
				s.read.Store(&m)
			}
		})
	}
}

// observe returns the callback that reports the limits, registered or set by
// events, and the registered throttles, on the gauges of fams.
func (s *limitStore) observe(fams *[numFamilies]family) metric.Callback {
	return func(_ context.Context, o metric.Observer) error {
		// The sources are called without the lock: they are the user's code.
		s.mu.Lock()
		limits, throttles := maps.Clone(s.limits), maps.Clone(s.throttles)
		s.mu.Unlock()
		events := *s.read.Load()
		for k, r := range limits {
			f := &fams[r.fam]
			opt := metric.WithAttributeSet(r.set)
			o.ObserveInt64(f.limit, int64(r.lim.Limit()), opt)
			if f.limitInflight != nil {
				o.ObserveInt64(f.limitInflight, int64(r.lim.InFlight()), opt)
			}
			if r.queued != nil {
				o.ObserveInt64(f.queued, int64(r.queued()), opt)
			}
			var b time.Duration
			if r.baseline != nil {
				b = r.baseline()
			}
			if en := events[k]; b <= 0 && en != nil {
				b = time.Duration(en.baseline.Load()) // not measured yet, or not known to the source: the last reported
			}
			if b > 0 {
				o.ObserveFloat64(f.baseline, b.Seconds(), opt)
			}
		}
		for k, en := range events {
			if limits[k] != nil {
				continue // the source itself says
			}
			f := &fams[en.fam]
			opt := metric.WithAttributeSet(en.set)
			o.ObserveInt64(f.limit, en.limit.Load(), opt)
			if b := en.baseline.Load(); b > 0 {
				o.ObserveFloat64(f.baseline, time.Duration(b).Seconds(), opt)
			}
		}
		for _, r := range throttles {
			o.ObserveFloat64(fams[r.fam].probability, r.thr.Probability(), metric.WithAttributeSet(r.set))
		}
		return nil
	}
}

// RegisterLimit reports the state of l on the gauges of the family of
// component (bulwark.limit for bulwark.ComponentLimiter and
// bulwark.ComponentBulkhead), with the attributes bulwark.component and
// bulwark.name set to component and name: <f>.limit (l.Limit()),
// <f>.inflight (l.InFlight()) and, for a Limit with these methods, <f>.queued
// (Queued) and <f>.baseline (Baseline, once positive; the baseline of the
// latest EventLimitChanged until then). The SDK reads them at each
// collection. Pass the component and name that l's own events carry
// (bulwark.ComponentLimiter and Config.Name for a *limit.Limiter), so that
// its gauges, its adjustments and its rejections share their attributes:
//
//	lim, err := limit.New(limit.Config{Name: "api", Observer: obs})
//	…
//	unregister, err := obs.RegisterLimit(bulwark.ComponentLimiter, lim.Name(), lim)
//
// Without a registration, the <f>.limit gauge of a component instance holds
// the limit that its latest EventLimitChanged set (Event.Limit), and
// <f>.baseline that event's Latency when positive, kept only while the
// family's <f>.adjustments counter is enabled. Events do not tell how many
// calls are in flight or queued: without a registration there is no
// <f>.inflight or <f>.queued gauge. Up to 4096 instances are kept from
// events; past that, a new instance's limit is not reported on the gauges
// (its adjustments are still counted).
//
// A registered limit is reported in place of the one its EventLimitChanged
// events set: its limit, in flight, queue and baseline come from l itself at
// each collection. A second registration with the same component and name
// replaces the first. unregister stops the reports, forgets the limit that
// events set for that component and name, and may be called more than once;
// call it when l is no longer used (a limiter per endpoint whose endpoint
// left). In the balancer family, whose inflight is the up-down counter of
// its picks, in flight is not reported.
//
// RegisterLimit returns ErrNilSource, and an unregister that does nothing,
// if l is nil. It is safe for concurrent use.
func (o *Observer) RegisterLimit(component, name string, l Limit) (unregister func(), err error) {
	if isNil(l) {
		return func() {}, ErrNilSource
	}
	k := limitKey{component: component, name: name}
	r := &registration{fam: familyOf(component), set: namedSet(k), lim: l}
	if q, ok := l.(interface{ Queued() int }); ok {
		r.queued = q.Queued
	}
	if b, ok := l.(interface{ Baseline() time.Duration }); ok {
		r.baseline = b.Baseline
	}
	return o.limits.register(o.limits.limits, k, r), nil
}

// RegisterThrottle reports t.Probability() on the <f>.probability gauge of
// the family of component (bulwark.throttle for bulwark.ComponentThrottle),
// with the attributes bulwark.component and bulwark.name set to component
// and name, read by the SDK at each collection. Pass the component and name
// that t's own events carry (bulwark.ComponentThrottle and Config.Name for a
// *throttle.Policy), so that the gauge and its rejections share their
// attributes. A second registration with the same component and name
// replaces the first; unregister stops the reports and may be called more
// than once.
//
// RegisterThrottle returns ErrNilSource, and an unregister that does
// nothing, if t is nil. It is safe for concurrent use.
func (o *Observer) RegisterThrottle(component, name string, t Throttle) (unregister func(), err error) {
	if isNil(t) {
		return func() {}, ErrNilSource
	}
	k := limitKey{component: component, name: name}
	r := &registration{fam: familyOf(component), set: namedSet(k), thr: t}
	return o.limits.register(o.limits.throttles, k, r), nil
}

// isNil reports whether v is nil or holds a nil pointer, map, func, … .
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Slice, reflect.Chan, reflect.Interface:
		return rv.IsNil()
	}
	return false
}
