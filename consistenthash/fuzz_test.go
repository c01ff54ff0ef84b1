package consistenthash

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
)

// maxFuzzOps bounds the work of one fuzz input: longer inputs only repeat
// the kinds of sequences shorter ones explore.
const maxFuzzOps = 4096

var fuzzSeeds = [][]byte{
	{},
	{0, 1, 1, 0, 2, 1, 0, 3, 2, 3, 7, 2, 1},
	{0, 5, 0, 0, 6, 3, 0, 7, 1, 2, 5, 2, 6, 2, 7, 3, 9},
	{0, 1, 0, 0, 1, 0, 2, 1, 2, 1, 3, 0},
	[]byte("the quick brown fox jumps over the lazy dog, twice: the quick brown fox"),
}

// fuzzOps runs the operations encoded in ops against p and checks after
// each one the invariants of every placement: lookups land on members, a
// change moves only the keys of the changed node, owner walks are complete
// and start with Get; canonical placements equal a fresh build of the set.
func fuzzOps(t *testing.T, p Placement, fresh func([]Node) (Placement, error), ops []byte, check func(Placement)) {
	ops = ops[:min(len(ops), maxFuzzOps)]
	model := map[string]int{}
	sample := keys(64)
	place := func() []string {
		out := make([]string, len(sample))
		for i, k := range sample {
			n, err := p.Get(k)
			if len(model) == 0 {
				if !errors.Is(err, ErrEmpty) {
					t.Fatalf("Get(%q) on empty = %q, %v; want ErrEmpty", k, n, err)
				}
				continue
			}
			if _, ok := model[n]; err != nil || !ok {
				t.Fatalf("Get(%q) = %q, %v; want a member of %v", k, n, err, model)
			}
			out[i] = n
		}
		return out
	}
	before := place()
	for len(ops) >= 2 {
		op, arg := ops[0]%4, ops[1]
		ops = ops[2:]
		name := fmt.Sprint("n", arg%24)
		var changed string
		switch op {
		case 0, 1:
			err := p.Add(Node{Name: name, Weight: int(arg/24) % 4})
			if _, dup := model[name]; dup {
				if !errors.Is(err, ErrDuplicateNode) {
					t.Fatalf("Add(%q) of a member = %v, want ErrDuplicateNode", name, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("Add(%q) = %v", name, err)
			}
			model[name] = max(1, int(arg/24)%4)
			changed = name
		case 2:
			err := p.Remove(name)
			if _, ok := model[name]; !ok {
				if !errors.Is(err, ErrUnknownNode) {
					t.Fatalf("Remove(%q) of a stranger = %v, want ErrUnknownNode", name, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("Remove(%q) = %v", name, err)
			}
			delete(model, name)
			changed = name
		case 3:
			k := fmt.Sprint("key", arg)
			o := p.Owners(k)
			first, _ := p.Get(k)
			var got []string
			for {
				n, i, ok := o.Next()
				if !ok {
					break
				}
				if nodes := o.Nodes(); nodes[i].Name != n {
					t.Fatalf("Owners(%q).Next() = %q, %d; Nodes()[%d] = %q", k, n, i, i, nodes[i].Name)
				}
				got = append(got, n)
			}
			if len(got) != len(model) || (len(got) > 0 && got[0] != first) {
				t.Fatalf("Owners(%q) = %v; want %d distinct nodes starting with %q", k, got, len(model), first)
			}
			slices.Sort(got)
			if len(slices.Compact(got)) != len(model) {
				t.Fatalf("Owners(%q) repeats a node", k)
			}
			continue
		}
		after := place()
		for i, k := range sample {
			if before[i] != after[i] && before[i] != changed && after[i] != changed {
				t.Fatalf("changing %q moved %q from %q to %q: a stray move", changed, k, before[i], after[i])
			}
		}
		before = after
		var want []Node
		for n, w := range model {
			want = append(want, Node{Name: n, Weight: w})
		}
		slices.SortFunc(want, cmpNode)
		if got := p.Nodes(); !slices.Equal(got, want) {
			t.Fatalf("Nodes() = %v, want %v", got, want)
		}
		if fresh != nil {
			q, err := fresh(want)
			if err != nil {
				t.Fatal(err)
			}
			for i, k := range sample {
				if got, _ := q.Get(k); got != after[i] {
					t.Fatalf("Get(%q) = %q, but %q on a fresh build of the same set", k, after[i], got)
				}
			}
		}
		if check != nil {
			check(p)
		}
	}
}

func FuzzRing(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	build := func(n []Node) (Placement, error) { return NewRing(RingConfig{Nodes: n, VirtualNodes: 8}) }
	f.Fuzz(func(t *testing.T, ops []byte) {
		p, _ := build(nil)
		fuzzOps(t, p, build, ops, nil)
	})
}

func FuzzRendezvous(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	build := func(n []Node) (Placement, error) { return NewRendezvous(RendezvousConfig{Nodes: n}) }
	f.Fuzz(func(t *testing.T, ops []byte) {
		p, _ := build(nil)
		fuzzOps(t, p, build, ops, nil)
	})
}

func FuzzTable(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		tb, _ := NewTable(TableConfig{Slots: 256})
		fuzzOps(t, tb, nil, ops, func(Placement) {
			s := tb.snap.Load()
			got := make([]int32, len(s.set.nodes))
			for _, i := range s.owner {
				got[i]++
			}
			for i, n := range s.set.nodes {
				exact := float64(len(s.owner)) * float64(n.Weight) / float64(s.set.weight)
				if got[i] != s.count[i] || math.Abs(float64(got[i])-exact) > 1.5 {
					t.Fatalf("node %s holds %d slots (counted %d), want %.2f ± 1.5", n.Name, got[i], s.count[i], exact)
				}
			}
		})
	})
}

// FuzzBounded acquires, releases and changes membership, checking that each
// acquired node is within its cap and that the counts balance.
func FuzzBounded(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(runBoundedOps)
}

func runBoundedOps(t *testing.T, ops []byte) {
	ops = ops[:min(len(ops), maxFuzzOps)]
	ring, _ := NewRing(RingConfig{VirtualNodes: 8, Nodes: names("n", 4)})
	b, _ := NewBounded(BoundedConfig{Placement: ring})
	var held []Lease
	for _, op := range ops {
		switch op % 8 {
		case 0:
			_ = ring.Add(Node{Name: fmt.Sprint("n", op/8%12)})
		case 1:
			if len(ring.Nodes()) > 1 {
				_ = ring.Remove(fmt.Sprint("n", op/8%12))
			}
		case 2, 3:
			if len(held) > 0 {
				i := int(op) % len(held)
				held[i].Release()
				held = append(held[:i], held[i+1:]...)
			}
		default:
			l, err := b.Acquire(fmt.Sprint("k", op/8%4))
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, l)
			node, total := b.Load(l.Node())
			n := ring.Nodes()
			if limit := b.limit(total, 1, int64(len(n))); node > limit {
				t.Fatalf("%s holds %d of %d in flight, above the cap %d", l.Node(), node, total, limit)
			}
		}
	}
	for _, l := range held {
		l.Release()
	}
	if _, total := b.Load(""); total != 0 {
		t.Fatalf("total in flight after all releases = %d, want 0", total)
	}
}
