package consistenthash

import (
	"cmp"
	"container/heap"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
)

// DefaultSlots is the size of a Table when TableConfig.Slots is zero.
const DefaultSlots = 1 << 16

// maxSlots bounds TableConfig.Slots (64 MiB of table).
const maxSlots = 1 << 24

// TableConfig configures a Table.
type TableConfig struct {
	// Slots is the number of slots: a power of two, at most 16,777,216. Each
	// node's share is within one slot of exact, so with n nodes the most
	// loaded node holds at most about (1 + n/Slots) times the average. The
	// table costs 4 bytes per slot. Every node's share, Slots × weight / total
	// weight, must be at least one slot. If zero, DefaultSlots (65,536).
	Slots int
	// Nodes are the initial members, in any order.
	Nodes []Node
}

// Table is a slot table: a key's hash selects one of Slots slots, and each
// slot names its node, so a lookup is one hash and one load (Maglev class).
// Each node holds its weighted share of the slots to within one slot.
//
// Unlike Maglev, a Table is updated incrementally with minimal disruption:
// Add gives the new node its share by taking, from the nodes most above their
// new share, the slots whose rendezvous score for the new node is highest;
// Remove hands the removed node's slots to the nodes most below their share,
// each slot to the receiver that scores it highest. So a change moves exactly
// the keys the changed node gains or loses, and no other key ("stray" moves:
// none).
//
// The price of that is memory of history: a Table built by NewTable from a set
// of nodes is a function of that set, but after Add and Remove its placement
// depends on the sequence of changes, not only on the resulting set. Processes
// that must agree on placement without sharing that history should use Ring or
// Rendezvous, or rebuild their Table with NewTable from the same set.
//
// A Table is safe for concurrent use by multiple goroutines. Lookups never
// lock: Add and Remove publish a new immutable snapshot.
type Table struct {
	slots int
	mu    sync.Mutex // serializes Add and Remove
	snap  atomic.Pointer[tableSnap]
}

type tableSnap struct {
	set   *nodeSet
	owner []int32 // owner[slot]: node index; nil when there are no nodes
	count []int32 // count[i]: slots of node i
	shift uint8   // 64 - log2(slots)
}

// NewTable returns a Table holding cfg.Nodes. It returns an error wrapping
// ErrInvalidConfig, ErrInvalidNode or ErrDuplicateNode when the config or a
// node is invalid.
func NewTable(cfg TableConfig) (*Table, error) {
	switch {
	case cfg.Slots == 0:
		cfg.Slots = DefaultSlots
	case cfg.Slots < 0 || cfg.Slots > maxSlots || cfg.Slots&(cfg.Slots-1) != 0:
		return nil, fmt.Errorf("%w: Slots %d is not a power of two in [1, %d]", ErrInvalidConfig, cfg.Slots, maxSlots)
	}
	t := &Table{slots: cfg.Slots}
	s := &tableSnap{set: emptySet, shift: uint8(64 - bits.TrailingZeros(uint(cfg.Slots)))}
	if len(cfg.Nodes) > 0 {
		var err error
		if s, err = s.add(cfg.Nodes, cfg.Slots); err != nil {
			return nil, err
		}
	}
	t.snap.Store(s)
	return t, nil
}

// Get returns the name of the node that owns key. It returns ErrEmpty when
// the table has no nodes.
func (t *Table) Get(key string) (string, error) {
	s := t.snap.Load()
	if s.owner == nil {
		return "", ErrEmpty
	}
	return s.set.nodes[s.owner[sum64(key)>>s.shift]].Name, nil
}

// Nodes returns the current nodes sorted by name, with their effective
// weights. The index of a node in this slice is the index that Owners.Next
// reports for the same snapshot. Callers must not modify the slice.
func (t *Table) Nodes() []Node { return t.snap.Load().set.nodes }

// Owners returns a cursor over all nodes for key: first the owner of the
// key's slot (Get's answer), then the other nodes in the rendezvous order of
// that slot, so the replica set of a key changes minimally too. The first
// Next is O(1); each later one costs O(nodes). It does not allocate.
func (t *Table) Owners(key string) Owners {
	s := t.snap.Load()
	if s.owner == nil {
		return Owners{}
	}
	slot := sum64(key) >> s.shift
	return Owners{set: s.set, rendezvous: true, h: slotHash(slot), first: s.owner[slot], lastI: -1}
}

// Add adds nodes, each taking its share of slots from the nodes most above
// theirs. It fails, changing nothing, with an error wrapping ErrInvalidNode,
// ErrDuplicateNode or ErrInvalidConfig (a node's share would fall below one
// slot).
func (t *Table) Add(nodes ...Node) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, err := t.snap.Load().add(nodes, t.slots)
	if err != nil {
		return err
	}
	t.snap.Store(s)
	return nil
}

// Remove removes the named nodes, handing their slots to the nodes most
// below their share. It fails, changing nothing, with an error wrapping
// ErrUnknownNode.
func (t *Table) Remove(names ...string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, err := t.snap.Load().remove(names)
	if err != nil {
		return err
	}
	t.snap.Store(s)
	return nil
}

// slotHash spreads slot numbers over uint64 for rendezvous scoring.
func slotHash(slot uint64) uint64 { return mix(slot*prime1 + prime5) }

func checkShares(set *nodeSet, slots int) error {
	for _, n := range set.nodes {
		if int64(slots)*int64(n.Weight) < set.weight {
			return fmt.Errorf("%w: %d Slots leave node %q (weight %d of %d) less than one slot",
				ErrInvalidConfig, slots, n.Name, n.Weight, set.weight)
		}
	}
	return nil
}

func (s *tableSnap) add(nodes []Node, slots int) (*tableSnap, error) {
	set, remap, err := s.set.with(nodes)
	if err != nil {
		return nil, err
	}
	if err := checkShares(set, slots); err != nil {
		return nil, err
	}
	next := &tableSnap{set: set, shift: s.shift, count: make([]int32, len(set.nodes))}
	if s.owner == nil {
		next.deal(slots)
		return next, nil
	}
	next.owner = make([]int32, slots)
	for slot, i := range s.owner {
		next.owner[slot] = remap[i]
	}
	present := make([]bool, len(set.nodes))
	weight := int64(0)
	for old, i := range remap {
		present[i] = true
		next.count[i] = s.count[old]
		weight += int64(set.nodes[i].Weight)
	}
	for x := range set.nodes {
		if !present[x] {
			weight += int64(set.nodes[x].Weight)
			next.grant(int32(x), present, weight)
			present[x] = true
		}
	}
	return next, nil
}

// deal assigns the slots of an empty table: each node receives its share,
// rounded by largest remainder, of the slots in a pseudo-random order.
func (s *tableSnap) deal(slots int) {
	set := s.set
	total := int64(0)
	rem := make([]int32, len(set.nodes))
	for i, n := range set.nodes {
		q := int64(slots) * int64(n.Weight)
		s.count[i] = int32(q / set.weight)
		total += int64(s.count[i])
		rem[i] = int32(i)
	}
	slices.SortStableFunc(rem, func(a, b int32) int {
		ra := int64(slots) * int64(set.nodes[a].Weight) % set.weight
		rb := int64(slots) * int64(set.nodes[b].Weight) % set.weight
		return cmp.Compare(rb, ra)
	})
	for _, i := range rem[:int64(slots)-total] {
		s.count[i]++
	}
	order := make([]uint64, slots)
	for slot := range order {
		order[slot] = slotHash(uint64(slot))&^(maxSlots-1) | uint64(slot)
	}
	slices.Sort(order)
	s.owner = make([]int32, slots)
	k := 0
	for i, c := range s.count {
		for range c {
			s.owner[order[k]&(maxSlots-1)] = int32(i)
			k++
		}
	}
}

// grant gives node x its share of the table, with weight the total weight
// of the present nodes and x: the slots come from the present nodes most
// above their new share, and from each, the slots x scores highest.
func (s *tableSnap) grant(x int32, present []bool, weight int64) {
	set, slots := s.set, len(s.owner)
	exact := func(i int) float64 { return float64(slots) * float64(set.nodes[i].Weight) / float64(weight) }
	want := int(exact(int(x)) + 0.5)
	h := &surplusHeap{}
	for i, ok := range present {
		if ok && s.count[i] > 0 {
			h.items = append(h.items, surplus{float64(s.count[i]) - exact(i), int32(i)})
		}
	}
	heap.Init(h)
	take := make([]int32, len(set.nodes))
	for range want {
		if h.Len() == 0 {
			break
		}
		top := &h.items[0]
		take[top.node]++
		top.by--
		if take[top.node] == s.count[top.node] {
			heap.Pop(h)
		} else {
			heap.Fix(h, 0)
		}
	}
	// The candidates in decreasing order of x's score; ties by slot.
	xh := set.hash[x]
	cand := make([]uint64, 0, slots)
	for slot, i := range s.owner {
		if i >= 0 && take[i] > 0 {
			cand = append(cand, ^mix(slotHash(uint64(slot))^xh)&^(maxSlots-1)|uint64(slot))
		}
	}
	slices.Sort(cand)
	for _, c := range cand {
		slot := c & (maxSlots - 1)
		if i := s.owner[slot]; take[i] > 0 {
			take[i]--
			s.count[i]--
			s.owner[slot] = x
			s.count[x]++
		}
	}
}

func (s *tableSnap) remove(names []string) (*tableSnap, error) {
	set, remap, err := s.set.without(names)
	if err != nil {
		return nil, err
	}
	next := &tableSnap{set: set, shift: s.shift, count: make([]int32, len(set.nodes))}
	if len(set.nodes) == 0 {
		return next, nil
	}
	slots := len(s.owner)
	next.owner = make([]int32, slots)
	var freed []int32
	for slot, i := range s.owner {
		j := remap[i]
		next.owner[slot] = j
		if j < 0 {
			freed = append(freed, int32(slot))
		}
	}
	for old, i := range remap {
		if i >= 0 {
			next.count[i] = s.count[old]
		}
	}
	// Decide how many freed slots each node receives: one at a time, to the
	// node furthest below its share.
	h := &surplusHeap{}
	for i, n := range set.nodes {
		exact := float64(slots) * float64(n.Weight) / float64(set.weight)
		h.items = append(h.items, surplus{float64(next.count[i]) - exact, int32(i)})
	}
	// A min-heap of surplus is a max-heap of deficit: flip the signs.
	for k := range h.items {
		h.items[k].by = -h.items[k].by
	}
	heap.Init(h)
	give := make([]int32, len(set.nodes))
	var receivers []int32
	for range freed {
		top := &h.items[0]
		if give[top.node] == 0 {
			receivers = append(receivers, top.node)
		}
		give[top.node]++
		top.by--
		heap.Fix(h, 0)
	}
	// Each freed slot goes to the receiver, among those still owed slots,
	// that scores it highest.
	for _, slot := range freed {
		sh := slotHash(uint64(slot))
		best, bu := int32(-1), uint64(0)
		for _, r := range receivers {
			if give[r] == 0 {
				continue
			}
			if u := mix(sh ^ set.hash[r]); best < 0 || u > bu {
				best, bu = r, u
			}
		}
		give[best]--
		next.owner[slot] = best
		next.count[best]++
	}
	return next, nil
}

// surplus is a node's slots minus its exact share, kept in a max-heap.
type surplus struct {
	by   float64
	node int32
}

type surplusHeap struct{ items []surplus }

func (h *surplusHeap) Len() int { return len(h.items) }
func (h *surplusHeap) Less(a, b int) bool {
	x, y := h.items[a], h.items[b]
	return x.by > y.by || (x.by == y.by && x.node < y.node)
}
func (h *surplusHeap) Swap(a, b int) { h.items[a], h.items[b] = h.items[b], h.items[a] }
func (h *surplusHeap) Push(x any)    { h.items = append(h.items, x.(surplus)) }
func (h *surplusHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}
