package consistenthash

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Errors returned by this package. Callers classify them with errors.Is; the
// validation errors wrap ErrInvalidNode or ErrInvalidConfig with details.
var (
	// ErrEmpty is returned by lookups on a placement that has no nodes.
	ErrEmpty = errors.New("consistenthash: no nodes")
	// ErrInvalidNode is wrapped by errors about a node with an empty name,
	// a negative weight or a weight above MaxWeight.
	ErrInvalidNode = errors.New("consistenthash: invalid node")
	// ErrDuplicateNode is wrapped by errors about adding a node whose name is
	// already present (or given twice).
	ErrDuplicateNode = errors.New("consistenthash: duplicate node")
	// ErrUnknownNode is wrapped by errors about removing a node that is not
	// present.
	ErrUnknownNode = errors.New("consistenthash: unknown node")
	// ErrInvalidConfig is wrapped by errors about a Config field out of range.
	ErrInvalidConfig = errors.New("consistenthash: invalid config")
)

// MaxWeight is the largest Node.Weight accepted.
const MaxWeight = 1 << 20

// Node is a member of a placement: a cache shard, a partition, a backend.
type Node struct {
	// Name identifies the node; it is what lookups return. It must not be
	// empty, and names are compared byte for byte.
	Name string
	// Weight is the node's share relative to the other nodes: a node of
	// weight 2 receives twice the keys of a node of weight 1. Zero means 1;
	// negative weights and weights above MaxWeight are errors.
	Weight int
}

// nodeSet is the immutable membership shared by a snapshot: the nodes sorted
// by name, so that node indexes do not depend on the order of insertion.
type nodeSet struct {
	nodes   []Node   // sorted by Name; Weight >= 1
	hash    []uint64 // hash[i] = Hash(nodes[i].Name)
	weight  int64    // sum of the weights
	uniform bool     // all weights are equal
	gen     uint64   // how many changes led from the placement's first set to this one
}

func validNode(n Node) (Node, error) {
	switch {
	case n.Name == "":
		return n, fmt.Errorf("%w: empty name", ErrInvalidNode)
	case n.Weight < 0:
		return n, fmt.Errorf("%w: %q has negative weight %d", ErrInvalidNode, n.Name, n.Weight)
	case n.Weight > MaxWeight:
		return n, fmt.Errorf("%w: %q has weight %d, above MaxWeight", ErrInvalidNode, n.Name, n.Weight)
	case n.Weight == 0:
		n.Weight = 1
	}
	return n, nil
}

func newNodeSet(nodes []Node) *nodeSet {
	s := &nodeSet{nodes: nodes, hash: make([]uint64, len(nodes)), uniform: true}
	for i, n := range nodes {
		s.hash[i] = sum64(n.Name)
		s.weight += int64(n.Weight)
		if n.Weight != nodes[0].Weight {
			s.uniform = false
		}
	}
	return s
}

func cmpNode(a, b Node) int { return strings.Compare(a.Name, b.Name) }

// find returns the index of the node called name, or -1.
func (s *nodeSet) find(name string) int {
	if i, ok := slices.BinarySearchFunc(s.nodes, name, func(n Node, name string) int {
		return strings.Compare(n.Name, name)
	}); ok {
		return i
	}
	return -1
}

// with returns the set plus add, and for each old index its new index. It
// fails, changing nothing, on an invalid or duplicate node.
func (s *nodeSet) with(add []Node) (*nodeSet, []int32, error) {
	fresh := make([]Node, 0, len(add))
	for _, n := range add {
		n, err := validNode(n)
		if err != nil {
			return nil, nil, err
		}
		if s.find(n.Name) >= 0 {
			return nil, nil, fmt.Errorf("%w: %q", ErrDuplicateNode, n.Name)
		}
		fresh = append(fresh, n)
	}
	slices.SortFunc(fresh, cmpNode)
	for i := 1; i < len(fresh); i++ {
		if fresh[i].Name == fresh[i-1].Name {
			return nil, nil, fmt.Errorf("%w: %q given twice", ErrDuplicateNode, fresh[i].Name)
		}
	}
	merged := make([]Node, 0, len(s.nodes)+len(fresh))
	remap := make([]int32, len(s.nodes))
	i, j := 0, 0
	for i < len(s.nodes) || j < len(fresh) {
		if j == len(fresh) || (i < len(s.nodes) && s.nodes[i].Name < fresh[j].Name) {
			remap[i] = int32(len(merged))
			merged = append(merged, s.nodes[i])
			i++
		} else {
			merged = append(merged, fresh[j])
			j++
		}
	}
	ns := newNodeSet(merged)
	ns.gen = s.gen + 1
	return ns, remap, nil
}

// without returns the set minus the named nodes, and for each old index its
// new index or -1. It fails, changing nothing, on an unknown name.
func (s *nodeSet) without(names []string) (*nodeSet, []int32, error) {
	gone := make([]bool, len(s.nodes))
	for _, name := range names {
		i := s.find(name)
		if i < 0 {
			return nil, nil, fmt.Errorf("%w: %q", ErrUnknownNode, name)
		}
		if gone[i] {
			return nil, nil, fmt.Errorf("%w: %q given twice", ErrUnknownNode, name)
		}
		gone[i] = true
	}
	kept := make([]Node, 0, len(s.nodes))
	remap := make([]int32, len(s.nodes))
	for i, n := range s.nodes {
		if gone[i] {
			remap[i] = -1
			continue
		}
		remap[i] = int32(len(kept))
		kept = append(kept, n)
	}
	ns := newNodeSet(kept)
	ns.gen = s.gen + 1
	return ns, remap, nil
}

// emptySet is the membership of a placement built without nodes.
var emptySet = &nodeSet{uniform: true}
