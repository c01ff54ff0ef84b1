package consistenthash

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
)

// DefaultLoadFactor is the load factor c when BoundedConfig.LoadFactor is
// zero.
const DefaultLoadFactor = 1.25

// BoundedConfig configures a Bounded.
type BoundedConfig struct {
	// Placement orders the candidate nodes of each key: a *Ring, *Table or
	// *Rendezvous, which may keep changing. Required.
	Placement Placement
	// LoadFactor is c: a node takes a new request only while its in-flight
	// count is below ⌈c × (in-flight + 1) × weight / total weight⌉, that is
	// ⌈c × average⌉ for equal weights. Lower is better balanced and moves more
	// keys off their first owner. If zero, DefaultLoadFactor (1.25); it must be
	// at least 1 and finite.
	LoadFactor float64
}

// Bounded is consistent hashing with bounded loads (Mirrokni, Thorup and
// Zadimoghaddam, 2018): Acquire walks a key's owners in preference order and
// takes the first whose in-flight count is under the cap, so a key sticks to
// its node unless that node is overloaded, and no pick takes a node above
// ⌈c × average⌉ requests in flight (the average counting that request). Only
// if racing picks find every owner of a key full 64 walks in a row, which
// the pigeonhole argument of the paper rules out without races, does Acquire
// fall back to the least loaded owner.
//
// Bounded keeps one in-flight counter per node name; Acquire increments it
// and Lease.Release decrements it. When the placement's membership changes,
// Bounded follows it on the next Acquire, keeping the counts of the nodes that
// remain; releases of leases on a removed node still balance the totals.
//
// A Bounded is safe for concurrent use by multiple goroutines. Acquire never
// locks (except once after each membership change) and does not allocate
// unless more than eight owners of a key are full.
type Bounded struct {
	placement Placement
	c         float64
	total     atomic.Int64 // requests in flight, on any node
	state     atomic.Pointer[boundedState]

	mu       sync.Mutex          // guards counters; serializes state rebuilds
	counters map[string]*counter // by node name, kept across membership changes
}

type boundedState struct {
	set    *nodeSet
	ctr    []*counter // by node index of set
	weight []int64    // by node index
}

// counter is a node's in-flight count, alone on its cache line.
type counter struct {
	n atomic.Int64
	_ [56]byte
}

// Lease is one request in flight on a node, from Acquire to Release. It is a
// small value; Release may be called from any goroutine.
type Lease struct {
	name string
	ctr  *counter
	b    *Bounded
}

// NewBounded returns a Bounded over cfg.Placement. It returns an error
// wrapping ErrInvalidConfig when the placement is nil or the load factor is
// out of range.
func NewBounded(cfg BoundedConfig) (*Bounded, error) {
	switch {
	case cfg.Placement == nil:
		return nil, fmt.Errorf("%w: nil Placement", ErrInvalidConfig)
	case cfg.LoadFactor == 0:
		cfg.LoadFactor = DefaultLoadFactor
	case !(cfg.LoadFactor >= 1) || math.IsInf(cfg.LoadFactor, 1):
		return nil, fmt.Errorf("%w: LoadFactor %v is not a finite number >= 1", ErrInvalidConfig, cfg.LoadFactor)
	}
	return &Bounded{placement: cfg.Placement, c: cfg.LoadFactor, counters: map[string]*counter{}}, nil
}

// errFull is internal: no owner was under its cap in a walk.
var errFull = errors.New("consistenthash: all owners full")

// Acquire picks the node for key: the first of the key's owners whose
// in-flight count is under its cap, and counts one more request in flight on
// it. The caller must call Release on the returned Lease exactly once, when
// the request ends. Acquire returns ErrEmpty when the placement has no nodes.
func (b *Bounded) Acquire(key string) (Lease, error) {
	o := b.placement.Owners(key)
	if o.set == nil || len(o.set.nodes) == 0 {
		return Lease{}, ErrEmpty
	}
	st := b.state.Load()
	if st == nil || st.set != o.set {
		st = b.rebuild(o.set)
	}
	t := b.total.Add(1)
	// Loads only change between walks by other goroutines' requests, so a
	// walk that finds every owner full (possible only in a race) is retried
	// with the grown total; after many, the least loaded owner takes it.
	for range 64 {
		if l, err := st.pick(o, t, b); err == nil {
			return l, nil
		}
		t = b.total.Load()
	}
	return st.least(o, b), nil
}

func (st *boundedState) pick(o Owners, t int64, b *Bounded) (Lease, error) {
	for {
		name, i, ok := o.Next()
		if !ok {
			return Lease{}, errFull
		}
		c := st.ctr[i]
		limit := b.limit(t, st.weight[i], st.set.weight)
		for {
			n := c.n.Load()
			if n >= limit {
				break
			}
			if c.n.CompareAndSwap(n, n+1) {
				return Lease{name: name, ctr: c, b: b}, nil
			}
		}
	}
}

func (st *boundedState) least(o Owners, b *Bounded) Lease {
	var best Lease
	bn := int64(math.MaxInt64)
	for {
		name, i, ok := o.Next()
		if !ok {
			break
		}
		if n := st.ctr[i].n.Load(); n < bn {
			best, bn = Lease{name: name, ctr: st.ctr[i], b: b}, n
		}
	}
	best.ctr.n.Add(1)
	return best
}

// limit is the cap of a node of weight w out of total, with t requests in
// flight counting the new one: ⌈c·t·w/total⌉. The product t·w is exact, so
// when c·t·w/total is an integer the quotient is exactly that integer.
func (b *Bounded) limit(t, w, total int64) int64 {
	return int64(math.Ceil(b.c * float64(t*w) / float64(total)))
}

// rebuild makes the state for set, reusing the counters of known names.
func (b *Bounded) rebuild(set *nodeSet) *boundedState {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.state.Load()
	if cur != nil && cur.set == set {
		return cur
	}
	// A caller that read the placement just before it changed brings an
	// older set: it gets a state of its own for this one request, on the
	// shared counters, and the current state stays.
	stale := cur != nil && set.gen < cur.set.gen
	st := &boundedState{set: set, ctr: make([]*counter, len(set.nodes)), weight: make([]int64, len(set.nodes))}
	for i, n := range set.nodes {
		c := b.counters[n.Name]
		if c == nil {
			c = &counter{}
			if !stale {
				b.counters[n.Name] = c
			}
		}
		st.ctr[i] = c
		st.weight[i] = int64(n.Weight)
	}
	if stale {
		return st
	}
	// Forget idle counters of nodes that left; busy ones stay until their
	// leases end and a later rebuild finds them idle.
	for name, c := range b.counters {
		if set.find(name) < 0 && c.n.Load() == 0 {
			delete(b.counters, name)
		}
	}
	b.state.Store(st)
	return st
}

// Node returns the name of the node the lease is on.
func (l Lease) Node() string { return l.name }

// Release ends the request: the node's in-flight count drops by one. Call it
// exactly once per Lease; Release on the zero Lease does nothing.
func (l Lease) Release() {
	if l.ctr == nil {
		return
	}
	l.ctr.n.Add(-1)
	l.b.total.Add(-1)
}

// Load returns the number of requests in flight on the named node, and in
// all. It is meant for metrics and tests: it takes a lock.
func (b *Bounded) Load(name string) (node, total int64) {
	b.mu.Lock()
	c := b.counters[name]
	b.mu.Unlock()
	if c != nil {
		node = c.n.Load()
	}
	return node, b.total.Load()
}
