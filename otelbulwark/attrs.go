package otelbulwark

import (
	"errors"
	"maps"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/limit"
)

// The attribute keys of every metric: OpenTelemetry semantic conventions
// where one fits (the endpoint, its zone, the class of error), and names in
// the bulwark namespace for the rest. Empty values are left out.
const (
	keyComponent = attribute.Key("bulwark.component")
	keyName      = attribute.Key("bulwark.name")
	keyAddress   = semconv.ServerAddressKey         // the endpoint's host
	keyPort      = semconv.ServerPortKey            // the endpoint's port, when it has one
	keyZone      = semconv.CloudAvailabilityZoneKey // the endpoint's zone
	keyOutcome   = attribute.Key("bulwark.outcome")
	keyReason    = attribute.Key("bulwark.reason")
	keyCrit      = attribute.Key("bulwark.criticality")
	keyPrevState = attribute.Key("bulwark.previous_state")
	keyState     = attribute.Key("bulwark.state")
	keyKind      = attribute.Key("bulwark.event.kind")
	keyErrorType = semconv.ErrorTypeKey
)

// The error.type values of a give-up.
const (
	errorTypePermanent = "permanent" // no retry could have fixed the last error
	errorTypeCanceled  = "canceled"  // the caller gave up
	errorTypeTransient = "transient" // retryable errors that the retries did not fix
)

// giveUpErrorType classifies the Reason of an EventGiveUp: "permanent" for the
// reasons that say the last error was not retryable, "canceled" when the
// caller canceled, and "transient" for the limits (attempts, elapsed,
// deadline, budget, retry_after) that stopped retries of retryable errors.
func giveUpErrorType(reason string) string {
	switch reason {
	case "permanent", "not_retryable":
		return errorTypePermanent
	case "canceled":
		return errorTypeCanceled
	}
	return errorTypeTransient
}

// criticality returns the criticality of the call that e, an EventRejected,
// refused, when its Err is a *limit.RejectedError: "sheddable", "normal" or
// "critical"; "" otherwise. It does not allocate.
func criticality(e *bulwark.Event) string {
	re, ok := errors.AsType[*limit.RejectedError](e.Err)
	if !ok || re == nil {
		return ""
	}
	switch re.Criticality {
	case limit.Sheddable, limit.Normal, limit.Critical:
		return re.Criticality.String()
	}
	return ""
}

// shape says which Event fields make up the attributes of a measurement.
type shape uint8

const (
	shapeNamed      shape = iota // component, name
	shapeBase                    // + endpoint, zone
	shapeOutcome                 // + outcome
	shapeCall                    // + outcome, reason
	shapeReason                  // + reason
	shapeRejection               // + reason, criticality
	shapeGiveUp                  // + reason, error.type
	shapeTransition              // + previous state, state, reason
	shapeKind                    // + kind, reason
	shapeStore                   // component, name, outcome
	shapeChange                  // component, name, kind, reason
)

// maxCachedSets bounds the attribute cache. Past it, a new combination is
// built for each measurement (allocating) rather than kept: a component that
// puts unbounded values in Reason cannot make the Observer grow without end.
const maxCachedSets = 8192

// attrKey is what an attribute set is made of: the shape and the Event fields
// that shape uses, the others left zero so that they do not split entries.
type attrKey struct {
	shape      shape
	outcome    bulwark.Outcome
	kind       bulwark.EventKind
	component  string
	name       string
	addr, zone string
	a, b, c    string // reason; or reason, criticality; or from, to, reason
}

// attrEntry is a cached attribute set, wrapped in the option slices that the
// instruments take, so that a measurement passes them without allocating,
// with the cells in which its counters add up between collections (see
// Observer.add), one a counter slot, created on first use.
type attrEntry struct {
	add    []metric.AddOption
	rec    []metric.RecordOption
	cached bool // kept in the cache; only a cached entry has cells
	cells  [numCounters]atomic.Pointer[cell]
}

// cell is the count a counter has added for one attribute set since the last
// collection, alone on its cache line so that cells on different cores do not
// contend.
type cell struct {
	n     atomic.Int64
	fresh atomic.Bool // not flushed yet
	_     [52]byte
}

// attrCache maps attrKeys to entries. Lookups read an immutable map through
// an atomic pointer and take no lock; misses go to a dirty map under mu,
// which is published as the new read map once it has missed as many times as
// it has entries, as sync.Map does, so that publishing costs O(1) amortized.
type attrCache struct {
	read   atomic.Pointer[map[attrKey]*attrEntry]
	mu     sync.Mutex
	dirty  map[attrKey]*attrEntry // guarded by mu; a superset of *read
	misses int                    // guarded by mu
}

func (c *attrCache) init() {
	m := map[attrKey]*attrEntry{}
	c.read.Store(&m)
	c.dirty = map[attrKey]*attrEntry{}
}

func keyOf(s shape, e *bulwark.Event) attrKey {
	k := attrKey{shape: s, component: e.Component, name: e.Name}
	if s == shapeNamed {
		return k
	}
	switch s {
	case shapeStore:
		k.outcome = e.Outcome
		return k
	case shapeChange:
		k.kind, k.a = e.Kind, e.Reason
		return k
	}
	k.addr, k.zone = e.Endpoint.Addr, e.Endpoint.Zone
	switch s {
	case shapeOutcome:
		k.outcome = e.Outcome
	case shapeCall:
		k.outcome, k.a = e.Outcome, e.Reason
	case shapeReason, shapeGiveUp:
		k.a = e.Reason
	case shapeRejection:
		k.a, k.b = e.Reason, criticality(e)
	case shapeTransition:
		k.a, k.b, k.c = e.From, e.To, e.Reason
	case shapeKind:
		k.kind, k.a = e.Kind, e.Reason
	}
	return k
}

// get returns the entry for the attributes of e in shape s.
func (c *attrCache) get(s shape, e *bulwark.Event) *attrEntry {
	k := keyOf(s, e)
	if a, ok := (*c.read.Load())[k]; ok {
		return a
	}
	return c.miss(k)
}

func (c *attrCache) miss(k attrKey) *attrEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.dirty[k]
	if !ok {
		a = newEntry(attribute.NewSet(k.attributes()...))
		if len(c.dirty) >= maxCachedSets {
			return a
		}
		a.cached = true
		c.dirty[k] = a
	}
	c.misses++
	if c.misses >= len(c.dirty) {
		m := maps.Clone(c.dirty)
		c.read.Store(&m)
		c.misses = 0
	}
	return a
}

func newEntry(set attribute.Set) *attrEntry {
	opt := metric.WithAttributeSet(set)
	return &attrEntry{add: []metric.AddOption{opt}, rec: []metric.RecordOption{opt}}
}

// attributes lists the key's attributes, leaving out empty ones.
func (k attrKey) attributes() []attribute.KeyValue {
	kv := make([]attribute.KeyValue, 0, 8)
	add := func(key attribute.Key, v string) {
		if v != "" {
			kv = append(kv, key.String(v))
		}
	}
	add(keyComponent, k.component)
	add(keyName, k.name)
	if k.addr != "" {
		host, port, ok := splitAddr(k.addr)
		add(keyAddress, host)
		if ok {
			kv = append(kv, keyPort.Int(port))
		}
	}
	add(keyZone, k.zone)
	switch k.shape {
	case shapeOutcome, shapeStore:
		add(keyOutcome, k.outcome.String())
	case shapeCall:
		add(keyOutcome, k.outcome.String())
		add(keyReason, k.a)
	case shapeReason:
		add(keyReason, k.a)
	case shapeRejection:
		add(keyReason, k.a)
		add(keyCrit, k.b)
	case shapeGiveUp:
		add(keyReason, k.a)
		add(keyErrorType, giveUpErrorType(k.a))
	case shapeTransition:
		add(keyPrevState, k.a)
		add(keyState, k.b)
		add(keyReason, k.c)
	case shapeKind, shapeChange:
		add(keyKind, k.kind.String())
		add(keyReason, k.a)
	}
	return kv
}

// splitAddr splits an Endpoint.Addr into server.address and server.port, as
// the semantic conventions want them: "10.0.0.1:8080" into "10.0.0.1" and
// 8080, "[::1]:80" into "::1" and 80. An address without a numeric port is
// returned whole, with ok false.
func splitAddr(addr string) (host string, port int, ok bool) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil || h == "" {
		return addr, 0, false
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return addr, 0, false
	}
	return h, n, true
}
