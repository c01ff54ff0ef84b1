package consistenthash

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// DefaultVirtualNodes is the number of ring points per unit of weight when
// RingConfig.VirtualNodes is zero.
const DefaultVirtualNodes = 160

// maxPoints bounds the size of a ring (16 Mi points, 256 MiB).
const maxPoints = 1 << 24

// RingConfig configures a Ring.
type RingConfig struct {
	// VirtualNodes is the number of points a node of weight 1 places on the
	// ring; a node of weight w places w × VirtualNodes points. More points
	// balance better and cost memory (16 bytes each) and build time. If zero,
	// DefaultVirtualNodes (160). Negative is an error, and so is a ring of more
	// than 16,777,216 points in all.
	VirtualNodes int
	// Nodes are the initial members, in any order.
	Nodes []Node
}

// Ring is a consistent-hash ring in the manner of Karger et al. and ketama:
// each node places points ("virtual nodes") on a 64-bit circle, and a key
// belongs to the first point clockwise from the key's hash. Adding a node
// moves to it only the keys on its new arcs; removing one moves only its own
// keys, each to the next point clockwise.
//
// The point of virtual node i of node name is XXH64(name followed by i as 8
// little-endian bytes): the fixed-width suffix makes the names of virtual nodes
// unambiguous. Placement depends only on the set of nodes, never on the order
// in which they were added.
//
// A Ring is safe for concurrent use by multiple goroutines. Lookups never lock:
// Add and Remove publish a new immutable snapshot, and a lookup sees either the
// placement before an update or the one after it, never a mixture.
type Ring struct {
	vnodes int
	mu     sync.Mutex // serializes Add and Remove
	snap   atomic.Pointer[ringSnap]
}

// point is a virtual node: its position on the circle and its node's index.
type point struct {
	hash uint64
	node int32
}

type ringSnap struct {
	set    *nodeSet
	points []point  // sorted by hash, then node index
	index  []uint32 // index[b]: the first point whose hash>>shift >= b; len 1<<bits + 1
	shift  uint8    // 64 - bits
	vnodes []int32  // vnodes[i]: points of node i
}

// NewRing returns a Ring holding cfg.Nodes. It returns an error wrapping
// ErrInvalidConfig, ErrInvalidNode or ErrDuplicateNode when the config or a
// node is invalid.
func NewRing(cfg RingConfig) (*Ring, error) {
	switch {
	case cfg.VirtualNodes < 0:
		return nil, fmt.Errorf("%w: negative VirtualNodes %d", ErrInvalidConfig, cfg.VirtualNodes)
	case cfg.VirtualNodes == 0:
		cfg.VirtualNodes = DefaultVirtualNodes
	case cfg.VirtualNodes > maxPoints:
		return nil, fmt.Errorf("%w: VirtualNodes %d above %d", ErrInvalidConfig, cfg.VirtualNodes, maxPoints)
	}
	r := &Ring{vnodes: cfg.VirtualNodes}
	s := &ringSnap{set: emptySet}
	if len(cfg.Nodes) > 0 {
		var err error
		if s, err = s.add(cfg.Nodes, r.vnodes); err != nil {
			return nil, err
		}
	}
	r.snap.Store(s)
	return r, nil
}

// Get returns the name of the node that owns key. It returns ErrEmpty when
// the ring has no nodes.
func (r *Ring) Get(key string) (string, error) {
	s := r.snap.Load()
	if len(s.points) == 0 {
		return "", ErrEmpty
	}
	return s.set.nodes[s.points[s.search(sum64(key))].node].Name, nil
}

// Nodes returns the current nodes sorted by name, with their effective
// weights (a zero weight reads as 1). The index of a node in this slice is the
// index that Owners.Next reports for the same snapshot. The slice is shared:
// callers must not modify it.
func (r *Ring) Nodes() []Node { return r.snap.Load().set.nodes }

// Owners returns a cursor over the distinct nodes owning key in preference
// order: first the node Get returns, then the next distinct nodes clockwise.
// The cursor is bound to the snapshot current when Owners is called, and
// yields every node exactly once. It does not allocate for its first eight
// owners.
func (r *Ring) Owners(key string) Owners {
	s := r.snap.Load()
	o := Owners{set: s.set, points: s.points}
	if len(s.points) > 0 {
		o.pos = s.search(sum64(key))
	}
	return o
}

// Add adds nodes to the ring. It fails, changing nothing, with an error
// wrapping ErrInvalidNode, ErrDuplicateNode or ErrInvalidConfig (the ring
// would exceed its maximum size).
func (r *Ring) Add(nodes ...Node) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.snap.Load().add(nodes, r.vnodes)
	if err != nil {
		return err
	}
	r.snap.Store(s)
	return nil
}

// Remove removes the named nodes from the ring. It fails, changing nothing,
// with an error wrapping ErrUnknownNode when a name is not present.
func (r *Ring) Remove(names ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.snap.Load().remove(names)
	if err != nil {
		return err
	}
	r.snap.Store(s)
	return nil
}

// search returns the position of the first point at or clockwise after h.
// The index narrows the search to the points sharing h's top bits, about
// two of them, so a lookup touches three cache lines at most.
func (s *ringSnap) search(h uint64) int {
	b := h >> s.shift
	lo, hi := int(s.index[b]), int(s.index[b+1])
	pts := s.points[lo:hi]
	if len(pts) > 8 {
		i, _ := slices.BinarySearchFunc(pts, h, func(p point, h uint64) int { return cmp.Compare(p.hash, h) })
		lo += i
	} else {
		for _, p := range pts {
			if p.hash >= h {
				break
			}
			lo++
		}
	}
	if lo == len(s.points) {
		lo = 0
	}
	return lo
}

func (s *ringSnap) add(nodes []Node, vnodes int) (*ringSnap, error) {
	set, remap, err := s.set.with(nodes)
	if err != nil {
		return nil, err
	}
	total := int64(0)
	for _, n := range set.nodes {
		total += int64(n.Weight) * int64(vnodes)
	}
	if total > maxPoints {
		return nil, fmt.Errorf("%w: %d ring points (VirtualNodes × total weight) above %d", ErrInvalidConfig, total, maxPoints)
	}
	counts := make([]int32, len(set.nodes))
	for old, i := range remap {
		counts[i] = s.vnodes[old]
	}
	// The new nodes are the indexes no old node maps to.
	isOld := make([]bool, len(set.nodes))
	for _, i := range remap {
		isOld[i] = true
	}
	var fresh []point
	var buf []byte
	for i, n := range set.nodes {
		if isOld[i] {
			continue
		}
		k := n.Weight * vnodes
		counts[i] = int32(k)
		buf = append(buf[:0], n.Name...)
		buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0)
		suffix := buf[len(n.Name):]
		for v := range k {
			putLE64(suffix, uint64(v))
			fresh = append(fresh, point{xxhash.Sum64(buf), int32(i)})
		}
	}
	slices.SortFunc(fresh, cmpPoint)
	pts := make([]point, 0, len(s.points)+len(fresh))
	j := 0
	for _, p := range s.points {
		p.node = remap[p.node]
		for j < len(fresh) && cmpPoint(fresh[j], p) < 0 {
			pts = append(pts, fresh[j])
			j++
		}
		pts = append(pts, p)
	}
	pts = append(pts, fresh[j:]...)
	return newRingSnap(set, pts, counts), nil
}

func (s *ringSnap) remove(names []string) (*ringSnap, error) {
	set, remap, err := s.set.without(names)
	if err != nil {
		return nil, err
	}
	counts := make([]int32, len(set.nodes))
	for old, i := range remap {
		if i >= 0 {
			counts[i] = s.vnodes[old]
		}
	}
	pts := make([]point, 0, len(s.points))
	for _, p := range s.points {
		if i := remap[p.node]; i >= 0 {
			pts = append(pts, point{p.hash, i})
		}
	}
	return newRingSnap(set, pts, counts), nil
}

func newRingSnap(set *nodeSet, pts []point, counts []int32) *ringSnap {
	s := &ringSnap{set: set, points: pts, vnodes: counts}
	// About two points per bucket: the index costs 2 bytes per point.
	nb := max(bits.Len(uint(len(pts)))-1, 1)
	s.shift = uint8(64 - nb)
	s.index = make([]uint32, 1<<nb+1)
	j := 0
	for b := range 1 << nb {
		for j < len(pts) && pts[j].hash>>s.shift < uint64(b) {
			j++
		}
		s.index[b] = uint32(j)
	}
	s.index[1<<nb] = uint32(len(pts))
	return s
}

func cmpPoint(a, b point) int {
	if c := cmp.Compare(a.hash, b.hash); c != 0 {
		return c
	}
	return cmp.Compare(a.node, b.node)
}

func putLE64(b []byte, v uint64) {
	_ = b[7]
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}
