package consistenthash

import "math"

// Owners is a cursor over the distinct nodes that own a key, in preference
// order: the first is the key's owner, the next are where the key goes if its
// owner is skipped (a replica, a retry, a full node). Get it from a
// placement's Owners method; it stays bound to the snapshot of that call, so
// its indexes match that snapshot's Nodes().
//
// An Owners is a small value and is not safe for concurrent use; copy it to
// walk the same order twice. Next does not allocate for the first eight owners.
// The zero Owners yields nothing.
type Owners struct {
	set *nodeSet

	// Ring: the points and the next position to visit.
	points []point
	pos    int
	steps  int

	// Rendezvous (and Table after its first owner): the key's hash and the
	// score and index of the owner returned last.
	rendezvous bool
	h          uint64
	first      int32 // Table: the slot's owner, returned first; else -1
	lastU      uint64
	lastF      float64
	lastI      int32

	n    int      // owners returned so far
	seen [8]int32 // the first eight owners returned
	more []uint64 // bitset of the owners returned, once more than eight
}

// Nodes returns the nodes of the snapshot the cursor is bound to, sorted by
// name: the slice that the indexes from Next refer to, even if the placement
// changed since. Callers must not modify it.
func (o *Owners) Nodes() []Node {
	if o.set == nil {
		return nil
	}
	return o.set.nodes
}

// Next returns the next owner's name and its index in the Nodes() of the
// snapshot the cursor is bound to. It returns ok == false once every node was
// returned.
func (o *Owners) Next() (name string, index int, ok bool) {
	if o.set == nil || o.n >= len(o.set.nodes) {
		return "", -1, false
	}
	if !o.rendezvous {
		for o.steps < len(o.points) {
			i := o.points[o.pos].node
			o.pos++
			if o.pos == len(o.points) {
				o.pos = 0
			}
			o.steps++
			if o.mark(i) {
				return o.set.nodes[i].Name, int(i), true
			}
		}
		return "", -1, false
	}
	// The rendezvous order is a permutation: no need to mark what was seen.
	if o.n == 0 && o.first >= 0 {
		o.n++
		return o.set.nodes[o.first].Name, int(o.first), true
	}
	for {
		i := o.nextRendezvous()
		if i < 0 {
			return "", -1, false
		}
		if i != o.first {
			o.n++
			return o.set.nodes[i].Name, int(i), true
		}
	}
}

// nextRendezvous returns the node after (lastU or lastF, lastI) in the
// rendezvous order of o.h: decreasing score, then increasing index. The
// first call (lastI < 0) returns the winner.
func (o *Owners) nextRendezvous() int32 {
	s := o.set
	best := int32(-1)
	started := o.lastI >= 0
	if s.uniform {
		var bu uint64
		for i, nh := range s.hash {
			u := mix(o.h ^ nh)
			if started && (u > o.lastU || (u == o.lastU && int32(i) <= o.lastI)) {
				continue
			}
			if best < 0 || u > bu {
				best, bu = int32(i), u
			}
		}
		o.lastU = bu
	} else {
		var bf float64
		for i, nh := range s.hash {
			f := weightedScore(mix(o.h^nh), s.nodes[i].Weight)
			if started && (f > o.lastF || (f == o.lastF && int32(i) <= o.lastI)) {
				continue
			}
			if best < 0 || f > bf {
				best, bf = int32(i), f
			}
		}
		o.lastF = bf
	}
	if best >= 0 {
		o.lastI = best
	}
	return best
}

// weightedScore is the weighted rendezvous score w / -ln(u) with u uniform in
// (0, 1) (Schindelhauer and Schomaker's logarithmic method): a node wins a
// key with probability proportional to its weight.
func weightedScore(h uint64, w int) float64 {
	u := (float64(h>>11) + 0.5) * (1.0 / (1 << 53))
	return float64(w) / -math.Log(u)
}

// mark records i as returned and reports whether it was new.
func (o *Owners) mark(i int32) bool {
	if o.more != nil {
		w, b := i>>6, uint64(1)<<(i&63)
		if o.more[w]&b != 0 {
			return false
		}
		o.more[w] |= b
		o.n++
		return true
	}
	for _, j := range o.seen[:min(o.n, len(o.seen))] {
		if j == i {
			return false
		}
	}
	if o.n < len(o.seen) {
		o.seen[o.n] = i
		o.n++
		return true
	}
	o.more = make([]uint64, (len(o.set.nodes)+63)/64)
	for _, j := range o.seen {
		o.more[j>>6] |= 1 << (j & 63)
	}
	o.more[i>>6] |= 1 << (i & 63)
	o.n++
	return true
}
