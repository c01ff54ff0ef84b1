package consistenthash

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

func names(prefix string, n int) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = Node{Name: fmt.Sprintf("%s%d", prefix, i)}
	}
	return nodes
}

func keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("user-%d", i)
	}
	return ks
}

func mustRing(t testing.TB, vnodes int, nodes []Node) *Ring {
	t.Helper()
	r, err := NewRing(RingConfig{VirtualNodes: vnodes, Nodes: nodes})
	if err != nil {
		t.Fatalf("NewRing(%d vnodes, %d nodes) = %v", vnodes, len(nodes), err)
	}
	return r
}

func TestRingDeterministicAcrossInsertionOrder(t *testing.T) {
	nodes := names("node-", 50)
	a := mustRing(t, 0, nodes)
	shuffled := append([]Node(nil), nodes...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	b := mustRing(t, 0, nil)
	for _, n := range shuffled {
		if err := b.Add(n); err != nil {
			t.Fatalf("Add(%v) = %v", n, err)
		}
	}
	// c reaches the same set through extra nodes added and removed again.
	c := mustRing(t, 0, append(names("extra-", 5), shuffled[:25]...))
	if err := c.Add(shuffled[25:]...); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove("extra-3", "extra-0", "extra-1", "extra-4", "extra-2"); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys(20000) {
		want, _ := a.Get(k)
		for name, r := range map[string]*Ring{"one by one": b, "via extra nodes": c} {
			if got, _ := r.Get(k); got != want {
				t.Fatalf("Get(%q) on ring built %s = %q, want %q", k, name, got, want)
			}
		}
	}
}

func TestRingVirtualNodeNamesDoNotCollide(t *testing.T) {
	// With string concatenation, "node-5"+"12" and "node-51"+"2" are the same
	// point; with a fixed-width suffix they are not.
	r := mustRing(t, 160, []Node{{Name: "node-5"}, {Name: "node-51"}})
	s := r.snap.Load()
	seen := make(map[uint64]int32, len(s.points))
	for _, p := range s.points {
		if n, ok := seen[p.hash]; ok {
			t.Fatalf("point %#x held by node %d and node %d", p.hash, n, p.node)
		}
		seen[p.hash] = p.node
	}
	if got, want := len(s.points), 320; got != want {
		t.Errorf("len(points) = %d, want %d", got, want)
	}
}

func TestRingEmpty(t *testing.T) {
	r := mustRing(t, 0, nil)
	if got, err := r.Get("k"); !errors.Is(err, ErrEmpty) {
		t.Errorf("Get(%q) on empty ring = %q, %v; want ErrEmpty", "k", got, err)
	}
	o := r.Owners("k")
	if name, i, ok := o.Next(); ok {
		t.Errorf("Owners(%q).Next() on empty ring = %q, %d, true; want false", "k", name, i)
	}
	if n := r.Nodes(); len(n) != 0 {
		t.Errorf("Nodes() = %v, want none", n)
	}
}

func TestRingOwnersDistinctAndComplete(t *testing.T) {
	for _, n := range []int{1, 2, 7, 8, 9, 64, 65, 300} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := mustRing(t, 20, names("n", n))
			nodes := r.Nodes()
			for _, k := range keys(50) {
				first, _ := r.Get(k)
				o := r.Owners(k)
				seen := map[int]bool{}
				for c := 0; ; c++ {
					name, i, ok := o.Next()
					if !ok {
						break
					}
					if c == 0 && name != first {
						t.Fatalf("Owners(%q) first = %q, want Get = %q", k, name, first)
					}
					if seen[i] || nodes[i].Name != name {
						t.Fatalf("Owners(%q) #%d = %q, %d: repeated or index mismatch", k, c, name, i)
					}
					seen[i] = true
				}
				if len(seen) != n {
					t.Fatalf("Owners(%q) yielded %d nodes, want %d", k, len(seen), n)
				}
			}
		})
	}
}

func TestRingOwnersNoAllocFirstEight(t *testing.T) {
	r := mustRing(t, 160, names("node-", 1000))
	allocs := testing.AllocsPerRun(100, func() {
		o := r.Owners("user-1")
		for range 8 {
			if _, _, ok := o.Next(); !ok {
				t.Fatal("Next ended early")
			}
		}
	})
	if allocs != 0 {
		t.Errorf("Owners+8×Next allocs = %v, want 0", allocs)
	}
}
