package consistenthash

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

func mustBounded(t testing.TB, p Placement, c float64) *Bounded {
	t.Helper()
	b, err := NewBounded(BoundedConfig{Placement: p, LoadFactor: c})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// capOf is the paper's bound for equal weights: ⌈c · total / n⌉.
func capOf(b *Bounded, total int64, n int) int64 { return b.limit(total, 1, int64(n)) }

func TestBoundedCapHolds(t *testing.T) {
	tests := []struct {
		name  string
		c     float64
		nodes int
	}{
		{"c=1.25 nodes=10", 1.25, 10},
		{"c=1 nodes=7", 1, 7},
		{"c=2 nodes=100", 2, 100},
		{"default nodes=3", 0, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring := mustRing(t, 0, names("n", tt.nodes))
			b := mustBounded(t, ring, tt.c)
			r := rand.New(rand.NewPCG(5, 6))
			var held []Lease
			for step := range 5000 {
				// A hot key gets half the traffic, to push its owner to the cap.
				key := "hot"
				if r.IntN(2) == 0 {
					key = fmt.Sprint("k", r.IntN(1000))
				}
				if len(held) > 0 && r.IntN(3) == 0 {
					i := r.IntN(len(held))
					held[i].Release()
					held = append(held[:i], held[i+1:]...)
					continue
				}
				l, err := b.Acquire(key)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, l)
				node, total := b.Load(l.Node())
				if limit := capOf(b, total, tt.nodes); node > limit {
					t.Fatalf("step %d: %s has %d in flight of %d, above the cap %d", step, l.Node(), node, total, limit)
				}
			}
			for _, l := range held {
				l.Release()
			}
			for _, n := range ring.Nodes() {
				if node, total := b.Load(n.Name); node != 0 || total != 0 {
					t.Errorf("after releasing all, Load(%q) = %d, %d; want 0, 0", n.Name, node, total)
				}
			}
		})
	}
}

func TestBoundedPrefersFirstOwner(t *testing.T) {
	ring := mustRing(t, 0, names("n", 10))
	b := mustBounded(t, ring, 1.25)
	for _, k := range keys(100) {
		want, _ := ring.Get(k)
		l, err := b.Acquire(k)
		if err != nil || l.Node() != want {
			t.Fatalf("Acquire(%q) on an idle set = %q, %v; want %q", k, l.Node(), err, want)
		}
		l.Release()
	}
	// A hot key spills to its second owner once its first is at the cap.
	owners := ownerList(ring, "hot", 2)
	first, _ := b.Acquire("hot") // 1 in flight: cap ⌈1.25·1/10⌉ = 1
	second, _ := b.Acquire("hot")
	if first.Node() != owners[0] || second.Node() != owners[1] {
		t.Errorf("Acquire(hot) twice = %q, %q; want %q, %q", first.Node(), second.Node(), owners[0], owners[1])
	}
}

func TestBoundedWeighted(t *testing.T) {
	rv, _ := NewRendezvous(RendezvousConfig{Nodes: []Node{{Name: "big", Weight: 3}, {Name: "small", Weight: 1}}})
	b := mustBounded(t, rv, 1)
	var held []Lease
	for i := range 400 {
		l, err := b.Acquire(fmt.Sprint("k", i))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	if big, _ := b.Load("big"); big != 300 {
		t.Errorf("with c = 1, Load(big) = %d of 400, want 300 (weight 3 of 4)", big)
	}
	for _, l := range held {
		l.Release()
	}
}

func TestBoundedFollowsMembership(t *testing.T) {
	ring := mustRing(t, 0, names("n", 3))
	b := mustBounded(t, ring, 1.25)
	l, _ := b.Acquire("k")
	if err := ring.Remove(l.Node()); err != nil {
		t.Fatal(err)
	}
	if err := ring.Add(Node{Name: "fresh"}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		m, err := b.Acquire(fmt.Sprint("x", i))
		if err != nil || m.Node() == l.Node() {
			t.Fatalf("Acquire after Remove(%q) = %q, %v", l.Node(), m.Node(), err)
		}
		m.Release()
	}
	l.Release()
	if _, total := b.Load("fresh"); total != 0 {
		t.Errorf("total in flight after all releases = %d, want 0", total)
	}
	var zero Lease
	zero.Release() // does nothing
}

// TestBoundedCapConcurrentSafe: goroutines acquire at once (the total only
// grows), and a watcher checks that no node is ever above ⌈c · average⌉.
func TestBoundedCapConcurrentSafe(t *testing.T) {
	const nodes, workers, each = 20, 4, 5000
	ring := mustRing(t, 0, names("n", nodes))
	b := mustBounded(t, ring, 1.25)
	var done atomic.Bool
	var wg sync.WaitGroup
	leases := make([][]Lease, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := "hot"
				if i%3 == 0 {
					key = fmt.Sprint("k", w, "-", i)
				}
				l, err := b.Acquire(key)
				if err != nil {
					t.Error(err)
					return
				}
				leases[w] = append(leases[w], l)
			}
		}()
	}
	watched := make(chan int)
	go func() {
		checks := 0
		for {
			finished := done.Load()
			st := b.state.Load()
			if st == nil {
				continue
			}
			loads := make([]int64, len(st.ctr))
			for i, c := range st.ctr {
				loads[i] = c.n.Load()
			}
			total := b.total.Load() // read last: it only grows
			for i, l := range loads {
				if limit := capOf(b, total, nodes); l > limit {
					t.Errorf("node %d has %d in flight of %d, above the cap %d", i, l, total, limit)
				}
			}
			checks++
			if finished {
				break
			}
		}
		watched <- checks
	}()
	wg.Wait()
	done.Store(true)
	if checks := <-watched; checks == 0 {
		t.Error("the watcher never checked")
	}
	// Then acquire and release concurrently; all counts return to zero.
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, l := range leases[w] {
				l.Release()
				m, err := b.Acquire(fmt.Sprint("again", i%50))
				if err != nil {
					t.Error(err)
					return
				}
				m.Release()
			}
		}()
	}
	wg.Wait()
	for _, n := range ring.Nodes() {
		if node, total := b.Load(n.Name); node != 0 || total != 0 {
			t.Errorf("Load(%q) = %d, %d after all releases, want 0, 0", n.Name, node, total)
		}
	}
}
