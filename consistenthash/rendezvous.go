package consistenthash

import (
	"sync"
	"sync/atomic"
)

// Placement is what Ring, Table and Rendezvous have in common, and what
// Bounded walks. Its methods are safe for concurrent use; Get and Owners
// never block on Add or Remove.
type Placement interface {
	// Get returns the name of the node that owns key, or ErrEmpty.
	Get(key string) (string, error)
	// Owners returns a cursor over the distinct nodes owning key, in
	// preference order, starting with Get's answer.
	Owners(key string) Owners
	// Nodes returns the current nodes sorted by name; callers must not
	// modify the slice.
	Nodes() []Node
	// Add adds nodes; on error nothing changes.
	Add(nodes ...Node) error
	// Remove removes the named nodes; on error nothing changes.
	Remove(names ...string) error
}

var (
	_ Placement = (*Ring)(nil)
	_ Placement = (*Table)(nil)
	_ Placement = (*Rendezvous)(nil)
)

// RendezvousConfig configures a Rendezvous.
type RendezvousConfig struct {
	// Nodes are the initial members, in any order.
	Nodes []Node
}

// Rendezvous is weighted highest-random-weight hashing (Thaler and
// Ravishankar): every node scores every key, and the highest score wins. A
// node's chance to win is proportional to its weight (the logarithmic method
// of Schindelhauer and Schomaker), placement depends only on the set of nodes,
// and a change of membership moves exactly the keys that the changed node wins
// or loses. A lookup costs O(nodes), so it suits small sets (tens of nodes);
// use Table or Ring for large ones.
//
// A Rendezvous is safe for concurrent use by multiple goroutines. Lookups never
// lock: Add and Remove publish a new immutable snapshot.
type Rendezvous struct {
	mu  sync.Mutex // serializes Add and Remove
	set atomic.Pointer[nodeSet]
}

// NewRendezvous returns a Rendezvous holding cfg.Nodes. It returns an error
// wrapping ErrInvalidNode or ErrDuplicateNode when a node is invalid.
func NewRendezvous(cfg RendezvousConfig) (*Rendezvous, error) {
	set, _, err := emptySet.with(cfg.Nodes)
	if err != nil {
		return nil, err
	}
	r := &Rendezvous{}
	r.set.Store(set)
	return r, nil
}

// Get returns the name of the node that owns key. It returns ErrEmpty when
// there are no nodes.
func (r *Rendezvous) Get(key string) (string, error) {
	s := r.set.Load()
	if len(s.nodes) == 0 {
		return "", ErrEmpty
	}
	return s.nodes[s.winner(sum64(key))].Name, nil
}

// winner returns the index of the node with the highest score for h; ties go
// to the lower index. s must not be empty.
func (s *nodeSet) winner(h uint64) int {
	best := 0
	if s.uniform {
		bu := mix(h ^ s.hash[0])
		for i := 1; i < len(s.hash); i++ {
			if u := mix(h ^ s.hash[i]); u > bu {
				best, bu = i, u
			}
		}
		return best
	}
	bf := weightedScore(mix(h^s.hash[0]), s.nodes[0].Weight)
	for i := 1; i < len(s.hash); i++ {
		if f := weightedScore(mix(h^s.hash[i]), s.nodes[i].Weight); f > bf {
			best, bf = i, f
		}
	}
	return best
}

// Nodes returns the current nodes sorted by name, with their effective
// weights. The index of a node in this slice is the index that Owners.Next
// reports for the same snapshot. Callers must not modify the slice.
func (r *Rendezvous) Nodes() []Node { return r.set.Load().nodes }

// Owners returns a cursor over all nodes in decreasing order of their score
// for key: the first is Get's answer. Each Next costs O(nodes) and does not
// allocate.
func (r *Rendezvous) Owners(key string) Owners {
	return Owners{set: r.set.Load(), rendezvous: true, h: sum64(key), first: -1, lastI: -1}
}

// Add adds nodes. It fails, changing nothing, with an error wrapping
// ErrInvalidNode or ErrDuplicateNode.
func (r *Rendezvous) Add(nodes ...Node) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	set, _, err := r.set.Load().with(nodes)
	if err != nil {
		return err
	}
	r.set.Store(set)
	return nil
}

// Remove removes the named nodes. It fails, changing nothing, with an error
// wrapping ErrUnknownNode.
func (r *Rendezvous) Remove(names ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	set, _, err := r.set.Load().without(names)
	if err != nil {
		return err
	}
	r.set.Store(set)
	return nil
}
