package otelbulwark

import (
	"context"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/bulwark-go/bulwark"
)

// gaugeKey identifies one state gauge series group: a component instance, or
// one of its endpoints.
type gaugeKey struct {
	fam        familyID
	ejected    bool // the ejected gauge rather than the state gauge
	component  string
	name       string
	addr, zone string
}

// gaugeEntry is the last-known state of one gaugeKey.
type gaugeEntry struct {
	cur    string                   // current state, for the state gauge
	states map[string]attribute.Set // every state seen, with its attributes
	out    bool                     // ejected now, for the ejected gauge
	set    attribute.Set            // attributes of the ejected gauge
}

// gaugeStore keeps the last-known state of each component and endpoint, which
// the SDK reads through the callback of the state and ejected gauges. State
// changes are rare, so a mutex serves.
type gaugeStore struct {
	mu      sync.Mutex
	entries map[gaugeKey]*gaugeEntry // guarded by mu
	n       atomic.Int64             // len(entries), read without mu by forget
}

func (g *gaugeStore) init() { g.entries = map[gaugeKey]*gaugeEntry{} }

func baseAttributes(e *bulwark.Event) []attribute.KeyValue {
	k := attrKey{shape: shapeBase, component: e.Component, name: e.Name, addr: e.Endpoint.Addr, zone: e.Endpoint.Zone}
	return k.attributes()
}

// entry returns the entry of k, creating it; g.mu must be held.
func (g *gaugeStore) entry(k gaugeKey) *gaugeEntry {
	en, ok := g.entries[k]
	if !ok {
		en = &gaugeEntry{}
		g.entries[k] = en
		g.n.Store(int64(len(g.entries)))
	}
	return en
}

// setState records the move of e (an EventStateChange) from e.From to e.To.
func (g *gaugeStore) setState(fam familyID, e *bulwark.Event) {
	if e.To == "" {
		return
	}
	k := gaugeKey{fam: fam, component: e.Component, name: e.Name, addr: e.Endpoint.Addr, zone: e.Endpoint.Zone}
	g.mu.Lock()
	defer g.mu.Unlock()
	en := g.entry(k)
	if en.states == nil {
		en.states = make(map[string]attribute.Set, 3)
	}
	for _, s := range [2]string{e.From, e.To} {
		if _, ok := en.states[s]; !ok && s != "" {
			en.states[s] = attribute.NewSet(append(baseAttributes(e), keyState.String(s))...)
		}
	}
	en.cur = e.To
}

// setEjected records that e's endpoint was ejected (out) or came back.
func (g *gaugeStore) setEjected(fam familyID, e *bulwark.Event, out bool) {
	k := gaugeKey{fam: fam, ejected: true, component: e.Component, name: e.Name, addr: e.Endpoint.Addr, zone: e.Endpoint.Zone}
	g.mu.Lock()
	defer g.mu.Unlock()
	en, ok := g.entries[k]
	if !ok {
		if !out {
			return // back from an ejection this Observer never saw
		}
		en = g.entry(k)
		en.set = attribute.NewSet(baseAttributes(e)...)
	}
	en.out = out
}

// forget drops the gauges of the endpoint that e (an EventEndpointRemoved)
// removed from its component, so that a departed endpoint stops being
// reported.
func (g *gaugeStore) forget(e *bulwark.Event) {
	if g.n.Load() == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for k := range g.entries {
		if k.component == e.Component && k.name == e.Name && k.addr == e.Endpoint.Addr {
			delete(g.entries, k)
		}
	}
	g.n.Store(int64(len(g.entries)))
}

// observe returns the callback that reports every entry on the gauges of fams.
func (g *gaugeStore) observe(fams *[numFamilies]family) metric.Callback {
	return func(_ context.Context, o metric.Observer) error {
		g.mu.Lock()
		defer g.mu.Unlock()
		for k, en := range g.entries {
			f := &fams[k.fam]
			if k.ejected {
				o.ObserveInt64(f.ejected, b2i(en.out), metric.WithAttributeSet(en.set))
				continue
			}
			for s, set := range en.states {
				o.ObserveInt64(f.state, b2i(s == en.cur), metric.WithAttributeSet(set))
			}
		}
		return nil
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
