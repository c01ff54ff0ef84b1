package balancer

import (
	"fmt"
	"math"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/consistenthash"
)

// hashIndex is the consistent-hash ring of one endpoint set, with the entry
// index of each ring node. It changes only when the set does, so a key keeps
// its owner through health changes.
type hashIndex struct {
	ring    *consistenthash.Ring
	toEntry []int32 // by ring node index (Nodes() order): index into the set
}

func newHashIndex(set []bulwark.Endpoint, vnodes int) (*hashIndex, error) {
	if len(set) == 0 {
		return nil, nil
	}
	nodes := make([]consistenthash.Node, len(set))
	pos := make(map[string]int32, len(set))
	for i, ep := range set {
		nodes[i] = consistenthash.Node{Name: ep.Addr, Weight: ep.Weight}
		pos[ep.Addr] = int32(i)
	}
	ring, err := consistenthash.NewRing(consistenthash.RingConfig{VirtualNodes: vnodes, Nodes: nodes})
	if err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}
	h := &hashIndex{ring: ring}
	for _, n := range ring.Nodes() {
		h.toEntry = append(h.toEntry, pos[n.Name])
	}
	return h, nil
}

// pickHash walks key's owners on the ring and takes the first that is in p,
// not tried, under its bound of LoadFactor × its weighted share of the
// requests in flight, and admitted by its limiter and breaker. If every eligible owner is
// over its bound, it takes the first of them; if none is eligible, it falls
// back as pickSlow does.
//
// When every owner before the one it takes was tried, the walk is kept in
// tried, and a retry of the key goes on from there: it skips the same owners
// as a walk from the start would, for the same reason, without the hashing
// and the steps.
func (b *Balancer) pickHash(s *snapshot, p *pool, key string, tried *Tried, stale bool) (Pick, error) {
	var walk consistenthash.Owners
	own := &walk
	resumed := tried != nil && tried.ring == s.hash && tried.n > 0 && tried.key == key
	if resumed {
		own = &tried.own
	} else {
		walk = s.hash.ring.Owners(key)
	}
	clean := true // every owner walked so far was tried
	// With m calls in flight counting this one, an endpoint of weight w in a
	// pool of weight W may hold at most ⌈c·m·w/W⌉ of them. An idle endpoint
	// is always under its bound, so m is summed only for a busy one.
	cm := -1.0 // c·m, computed once, when the first busy owner is met
	over := int32(-1)
	for {
		_, ni, ok := own.Next()
		if !ok {
			break
		}
		i := s.hash.toEntry[ni]
		e := &s.entries[i]
		if tried != nil && tried.has(e.st) {
			continue
		}
		if !member(p.kind, e) {
			clean = false
			continue
		}
		load := e.st.inflight.Load()
		if load > 0 && cm < 0 {
			m := int64(1)
			for k := range b.total {
				m += b.total[k].n.Load()
			}
			cm = b.loadFactor * float64(m)
		}
		// c·m·w/W in this order: dividing first can round a whole bound up
		// past its integer, and the ceiling would then allow one more.
		if load > 0 && float64(load) >= math.Ceil(cm*float64(e.w)/float64(p.total)) {
			if over < 0 {
				over = i
			}
			clean = false
			continue
		}
		pk, _, err := b.admit(e, nil, stale) // not tried: checked above; a refusal is met again by scan
		if err == nil {
			if tried != nil {
				tried.add(e.st)
				switch {
				case !clean:
					tried.ring = nil
				case !resumed:
					tried.ring, tried.key, tried.own = s.hash, key, walk
				}
			}
			return pk, nil
		}
		clean = false
	}
	if tried != nil {
		tried.ring = nil
	}
	if over >= 0 {
		if pk, _, err := b.admit(&s.entries[over], tried, stale); err == nil {
			return pk, nil
		}
	}
	return b.scan(s, p, tried, stale, refused{})
}
