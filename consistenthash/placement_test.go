package consistenthash

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// kinds builds each placement from a node list.
var kinds = []struct {
	name  string
	build func(nodes []Node) (Placement, error)
	// exact: only the changed node's keys move, and nothing else, exactly.
	exact bool
	// canonical: placement depends only on the set of nodes.
	canonical bool
}{
	{"ring", func(n []Node) (Placement, error) { return NewRing(RingConfig{Nodes: n, VirtualNodes: 40}) }, true, true},
	{"table", func(n []Node) (Placement, error) { return NewTable(TableConfig{Nodes: n, Slots: 1 << 12}) }, true, false},
	{"rendezvous", func(n []Node) (Placement, error) { return NewRendezvous(RendezvousConfig{Nodes: n}) }, true, true},
}

func mustBuild(t testing.TB, build func([]Node) (Placement, error), nodes []Node) Placement {
	t.Helper()
	p, err := build(nodes)
	if err != nil {
		t.Fatalf("build(%d nodes) = %v", len(nodes), err)
	}
	return p
}

func placeAll(t testing.TB, p Placement, ks []string) []string {
	t.Helper()
	out := make([]string, len(ks))
	for i, k := range ks {
		var err error
		if out[i], err = p.Get(k); err != nil {
			t.Fatalf("Get(%q) = %v", k, err)
		}
	}
	return out
}

func TestBadInput(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want error
	}{}
	add := func(name string, err, want error) {
		tests = append(tests, struct {
			name string
			err  error
			want error
		}{name, err, want})
	}
	for _, k := range kinds {
		_, err := k.build([]Node{{Name: ""}})
		add(k.name+"/empty name", err, ErrInvalidNode)
		_, err = k.build([]Node{{Name: "a", Weight: -1}})
		add(k.name+"/negative weight", err, ErrInvalidNode)
		_, err = k.build([]Node{{Name: "a", Weight: MaxWeight + 1}})
		add(k.name+"/weight above MaxWeight", err, ErrInvalidNode)
		_, err = k.build([]Node{{Name: "a"}, {Name: "b"}, {Name: "a"}})
		add(k.name+"/duplicate in config", err, ErrDuplicateNode)
		p := mustBuild(t, k.build, []Node{{Name: "a"}, {Name: "b"}})
		add(k.name+"/duplicate add", p.Add(Node{Name: "b"}), ErrDuplicateNode)
		add(k.name+"/duplicate within add", p.Add(Node{Name: "c"}, Node{Name: "c"}), ErrDuplicateNode)
		add(k.name+"/add empty name", p.Add(Node{Name: "d"}, Node{}), ErrInvalidNode)
		add(k.name+"/remove unknown", p.Remove("a", "zz"), ErrUnknownNode)
		add(k.name+"/remove twice in one call", p.Remove("a", "a"), ErrUnknownNode)
		if got := len(p.Nodes()); got != 2 {
			t.Errorf("%s: after failed changes, len(Nodes()) = %d, want 2", k.name, got)
		}
		add(k.name+"/remove all", p.Remove("a", "b"), nil)
		_, err = p.Get("k")
		add(k.name+"/get on empty", err, ErrEmpty)
		e := mustBuild(t, k.build, nil)
		_, err = e.Get("k")
		add(k.name+"/get on new empty", err, ErrEmpty)
	}
	_, err := NewRing(RingConfig{VirtualNodes: -1})
	add("ring/negative VirtualNodes", err, ErrInvalidConfig)
	_, err = NewRing(RingConfig{VirtualNodes: 1 << 20, Nodes: names("n", 17)})
	add("ring/too many points", err, ErrInvalidConfig)
	for _, slots := range []int{-1, 3, 1000, maxSlots * 2} {
		_, err = NewTable(TableConfig{Slots: slots})
		add(fmt.Sprintf("table/Slots=%d", slots), err, ErrInvalidConfig)
	}
	_, err = NewTable(TableConfig{Slots: 16, Nodes: names("n", 17)})
	add("table/more nodes than slots", err, ErrInvalidConfig)
	_, err = NewTable(TableConfig{Slots: 16, Nodes: []Node{{Name: "a", Weight: 100}, {Name: "b"}}})
	add("table/share below one slot", err, ErrInvalidConfig)
	tb, _ := NewTable(TableConfig{Slots: 16, Nodes: names("n", 16)})
	add("table/add beyond slots", tb.Add(Node{Name: "x"}), ErrInvalidConfig)
	_, err = Jump(1, 0)
	add("jump/zero buckets", err, ErrEmpty)
	_, err = Jump(1, -3)
	add("jump/negative buckets", err, ErrEmpty)
	_, err = Jump(1, math.MaxInt32+1)
	add("jump/too many buckets", err, ErrInvalidConfig)
	ring, _ := NewRing(RingConfig{})
	_, err = NewBounded(BoundedConfig{})
	add("bounded/nil placement", err, ErrInvalidConfig)
	for _, c := range []float64{0.5, -1, math.NaN(), math.Inf(1)} {
		_, err = NewBounded(BoundedConfig{Placement: ring, LoadFactor: c})
		add(fmt.Sprintf("bounded/LoadFactor=%v", c), err, ErrInvalidConfig)
	}
	bd, _ := NewBounded(BoundedConfig{Placement: ring})
	_, err = bd.Acquire("k")
	add("bounded/acquire on empty", err, ErrEmpty)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == nil {
				if tt.err != nil {
					t.Errorf("got %v, want nil", tt.err)
				}
				return
			}
			if !errors.Is(tt.err, tt.want) {
				t.Errorf("got %v, want an error wrapping %v", tt.err, tt.want)
			}
		})
	}
}

func TestZeroWeightMeansOne(t *testing.T) {
	for _, k := range kinds {
		p := mustBuild(t, k.build, []Node{{Name: "a"}, {Name: "b", Weight: 1}})
		for _, n := range p.Nodes() {
			if n.Weight != 1 {
				t.Errorf("%s: Nodes() has %v, want weight 1", k.name, n)
			}
		}
	}
}

// TestMinimalMovement checks, for every placement, that adding a node moves
// keys only to it and removing one moves only its keys: no stray moves.
func TestMinimalMovement(t *testing.T) {
	ks := keys(20000)
	for _, k := range kinds {
		for _, n := range []int{1, 5, 40} {
			t.Run(fmt.Sprintf("%s/nodes=%d", k.name, n), func(t *testing.T) {
				p := mustBuild(t, k.build, names("node-", n))
				before := placeAll(t, p, ks)
				if err := p.Add(Node{Name: "new"}); err != nil {
					t.Fatal(err)
				}
				after := placeAll(t, p, ks)
				moved := 0
				for i := range ks {
					if before[i] != after[i] {
						moved++
						if after[i] != "new" {
							t.Fatalf("after Add, Get(%q) = %q, was %q: a stray move", ks[i], after[i], before[i])
						}
					}
				}
				if ideal := float64(len(ks)) / float64(n+1); float64(moved) < ideal/2 || float64(moved) > ideal*2 {
					t.Errorf("Add moved %d keys, want about %.0f", moved, ideal)
				}
				victim := "node-0"
				if err := p.Remove(victim); err != nil {
					t.Fatal(err)
				}
				final := placeAll(t, p, ks)
				for i := range ks {
					if final[i] != after[i] && after[i] != victim {
						t.Fatalf("after Remove(%q), Get(%q) = %q, was %q: a stray move", victim, ks[i], final[i], after[i])
					}
					if final[i] == victim {
						t.Fatalf("after Remove(%q), Get(%q) still returns it", victim, ks[i])
					}
				}
			})
		}
	}
}

func TestCanonicalPlacementsIgnoreHistory(t *testing.T) {
	ks := keys(5000)
	for _, k := range kinds {
		if !k.canonical {
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			nodes := names("n-", 30)
			want := placeAll(t, mustBuild(t, k.build, nodes), ks)
			p := mustBuild(t, k.build, nodes[20:])
			for i := 19; i >= 0; i-- {
				if err := p.Add(nodes[i], Node{Name: fmt.Sprint("tmp", i)}); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 20 {
				if err := p.Remove(fmt.Sprint("tmp", i)); err != nil {
					t.Fatal(err)
				}
			}
			if got := placeAll(t, p, ks); !slices.Equal(got, want) {
				t.Errorf("placement after a different history differs from NewX of the same set")
			}
		})
	}
}

func TestWeightsShiftLoadProportionally(t *testing.T) {
	const nkeys = 1_000_000
	nodes := []Node{{Name: "w1", Weight: 1}, {Name: "w2", Weight: 2}, {Name: "w3", Weight: 3}, {Name: "w4", Weight: 4}}
	builds := []struct {
		name  string
		build func([]Node) (Placement, error)
	}{
		// 4000 points per unit of weight: a share's relative error is
		// 1/sqrt(4000 w) <= 1.6 %, so 5 % is three standard deviations.
		{"ring", func(n []Node) (Placement, error) { return NewRing(RingConfig{Nodes: n, VirtualNodes: 4000}) }},
		{"table", func(n []Node) (Placement, error) { return NewTable(TableConfig{Nodes: n}) }},
		{"rendezvous", func(n []Node) (Placement, error) { return NewRendezvous(RendezvousConfig{Nodes: n}) }},
	}
	for _, b := range builds {
		t.Run(b.name, func(t *testing.T) {
			p := mustBuild(t, b.build, nodes)
			count := map[string]int{}
			var buf []byte
			for i := range nkeys {
				buf = fmt.Appendf(buf[:0], "user-%d", i)
				n, err := p.Get(string(buf))
				if err != nil {
					t.Fatal(err)
				}
				count[n]++
			}
			for _, n := range nodes {
				want := float64(nkeys) * float64(n.Weight) / 10
				if got := float64(count[n.Name]); math.Abs(got-want) > 0.05*want {
					t.Errorf("keys on %s (weight %d) = %.0f, want %.0f ± 5%%", n.Name, n.Weight, got, want)
				}
			}
		})
	}
}

func TestOwnersDistinctStableAndStartWithGet(t *testing.T) {
	for _, k := range kinds {
		for _, n := range []int{1, 3, 9, 70} {
			t.Run(fmt.Sprintf("%s/nodes=%d", k.name, n), func(t *testing.T) {
				nodes := names("n", n)
				if n == 9 { // with weights
					for i := range nodes {
						nodes[i].Weight = i + 1
					}
				}
				p := mustBuild(t, k.build, nodes)
				for _, key := range keys(40) {
					got := ownerList(p, key, -1)
					if again := ownerList(p, key, -1); !slices.Equal(got, again) {
						t.Fatalf("Owners(%q) = %v, then %v", key, got, again)
					}
					if first, _ := p.Get(key); got[0] != first {
						t.Fatalf("Owners(%q)[0] = %q, want Get = %q", key, got[0], first)
					}
					sorted := slices.Clone(got)
					slices.Sort(sorted)
					if len(slices.Compact(sorted)) != n {
						t.Fatalf("Owners(%q) = %v: want %d distinct nodes", key, got, n)
					}
				}
			})
		}
	}
}

// ownerList returns the first max owners of key (all when max < 0).
func ownerList(p Placement, key string, max int) []string {
	var out []string
	o := p.Owners(key)
	nodes := p.Nodes()
	for max < 0 || len(out) < max {
		name, i, ok := o.Next()
		if !ok {
			break
		}
		if nodes[i].Name != name {
			panic(fmt.Sprintf("index %d is %q, Next said %q", i, nodes[i].Name, name))
		}
		out = append(out, name)
	}
	return out
}

// TestReplicaSetsChangeMinimally: for the canonical placements, adding a
// node changes a key's replica set at most by inserting the new node.
func TestReplicaSetsChangeMinimally(t *testing.T) {
	for _, k := range kinds {
		if !k.canonical {
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			p := mustBuild(t, k.build, names("n", 20))
			ks := keys(2000)
			before := make([][]string, len(ks))
			for i, key := range ks {
				before[i] = ownerList(p, key, 3)
			}
			if err := p.Add(Node{Name: "new"}); err != nil {
				t.Fatal(err)
			}
			for i, key := range ks {
				after := ownerList(p, key, 3)
				j := slices.Index(after, "new")
				if j < 0 {
					if !slices.Equal(after, before[i]) {
						t.Fatalf("Owners(%q) = %v, was %v, without the new node", key, after, before[i])
					}
					continue
				}
				if want := slices.Insert(slices.Clone(before[i]), j, "new")[:3]; !slices.Equal(after, want) {
					t.Fatalf("Owners(%q) = %v, was %v; want %v", key, after, before[i], want)
				}
			}
		})
	}
}

func TestTableBalance(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	tb, err := NewTable(TableConfig{Slots: 1 << 12, Nodes: names("n", 10)})
	if err != nil {
		t.Fatal(err)
	}
	next := 10
	for step := range 200 {
		nodes := tb.Nodes()
		if len(nodes) > 1 && r.IntN(2) == 0 {
			if err := tb.Remove(nodes[r.IntN(len(nodes))].Name); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := tb.Add(Node{Name: fmt.Sprint("n", next), Weight: 1 + r.IntN(4)}); err != nil {
				t.Fatal(err)
			}
			next++
		}
		s := tb.snap.Load()
		got := make([]int32, len(s.set.nodes))
		for _, i := range s.owner {
			got[i]++
		}
		for i, n := range s.set.nodes {
			exact := float64(len(s.owner)) * float64(n.Weight) / float64(s.set.weight)
			if got[i] != s.count[i] || math.Abs(float64(got[i])-exact) > 1.5 {
				t.Fatalf("step %d: node %s has %d slots (counted %d), want %.1f ± 1.5", step, n.Name, got[i], s.count[i], exact)
			}
		}
	}
}

func TestJump(t *testing.T) {
	// Growing from n to n+1 buckets moves keys only to the new bucket, about
	// 1/(n+1) of them.
	const nkeys = 20000
	for _, n := range []int{1, 2, 10, 99} {
		moved := 0
		for k := range uint64(nkeys) {
			h := mix(k)
			a, err := Jump(h, n)
			if err != nil || a < 0 || a >= n {
				t.Fatalf("Jump(%#x, %d) = %d, %v", h, n, a, err)
			}
			b, _ := Jump(h, n+1)
			if a != b {
				moved++
				if b != n {
					t.Fatalf("Jump(%#x, %d) = %d, but %d with one more bucket", h, n, a, b)
				}
			}
		}
		if ideal := float64(nkeys) / float64(n+1); math.Abs(float64(moved)-ideal) > 0.1*ideal {
			t.Errorf("Jump moved %d keys from %d to %d buckets, want about %.0f", moved, n, n+1, ideal)
		}
	}
	// Values of the reference implementation, github.com/dgryski/go-jump
	// (benchmarks/consistenthash_test.go checks many more against it).
	for _, tt := range []struct {
		key     uint64
		buckets int
		want    int
	}{{0, 1, 0}, {1, 10, 6}, {0xDEAD10CC, 1000, 361}, {256, 100000, 86422}, {math.MaxUint64, 7, 2}, {42, math.MaxInt32, 1603940301}} {
		if got, _ := Jump(tt.key, tt.buckets); got != tt.want {
			t.Errorf("Jump(%#x, %d) = %d, want %d", tt.key, tt.buckets, got, tt.want)
		}
	}
}

func TestHashIsXXH64(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
	}{
		{"", 0xEF46DB3751D8E999},
		{"a", 0xD24EC4F1A98C6E5B},
		{"abc", 0x44BC2CF5AD770999},
		{"Nobody inspects the spammish repetition", 0xFBCEA83C8A378BF1},
	}
	for _, tt := range tests {
		if got := Hash(tt.in); got != tt.want {
			t.Errorf("Hash(%q) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
}

// TestLookupsRacingUpdatesConcurrentSafe: lookups during Add and Remove see
// a whole snapshot: the owner walk yields every node of one membership.
func TestLookupsRacingUpdatesConcurrentSafe(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			base := names("n", 12)
			p := mustBuild(t, k.build, base)
			var stop atomic.Bool
			var wg sync.WaitGroup
			for g := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; !stop.Load(); i++ {
						key := fmt.Sprint("k", g, "-", i)
						o := p.Owners(key)
						seen := map[string]bool{}
						for {
							name, i, ok := o.Next()
							if !ok {
								break
							}
							if o.Nodes()[i].Name != name || seen[name] {
								t.Errorf("Owners(%q) repeated %q or index %d is not it", key, name, i)
								return
							}
							seen[name] = true
						}
						if n := len(seen); n != 12 && n != 13 {
							t.Errorf("Owners(%q) yielded %d nodes, want 12 or 13", key, n)
							return
						}
						if _, err := p.Get(key); err != nil {
							t.Errorf("Get(%q) = %v", key, err)
							return
						}
					}
				}()
			}
			for i := range 100 {
				if err := p.Add(Node{Name: "extra"}); err != nil {
					t.Error(err)
				}
				if err := p.Remove("extra"); err != nil {
					t.Error(err)
				}
				_ = i
			}
			stop.Store(true)
			wg.Wait()
		})
	}
}

func TestNewTableIgnoresInputOrder(t *testing.T) {
	nodes := names("node-", 60)
	nodes[7].Weight = 3
	a, err := NewTable(TableConfig{Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	shuffled := slices.Clone(nodes)
	rand.New(rand.NewPCG(7, 8)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	b, err := NewTable(TableConfig{Nodes: shuffled})
	if err != nil {
		t.Fatal(err)
	}
	if sa, sb := a.snap.Load(), b.snap.Load(); !slices.Equal(sa.owner, sb.owner) {
		t.Errorf("NewTable of the same nodes in another order built another table")
	}
}
