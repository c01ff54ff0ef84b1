package consistenthash

import (
	"fmt"
	"testing"
)

var benchKeys = keys(1 << 16)

const benchMask = 1<<16 - 1

func benchLookup(b *testing.B, build func(nodes []Node) (Placement, error), sizes []int) {
	for _, n := range sizes {
		p := mustBuild(b, build, names("node-", n))
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := p.Get(benchKeys[i&benchMask]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("nodes=%d/parallel", n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, err := p.Get(benchKeys[i&benchMask]); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
	}
}

func BenchmarkRingLookup(b *testing.B) {
	benchLookup(b, func(n []Node) (Placement, error) { return NewRing(RingConfig{Nodes: n}) }, []int{10, 100, 1000})
}

func BenchmarkTableLookup(b *testing.B) {
	benchLookup(b, func(n []Node) (Placement, error) { return NewTable(TableConfig{Nodes: n}) }, []int{10, 100, 1000})
}

func BenchmarkRendezvousLookup(b *testing.B) {
	benchLookup(b, func(n []Node) (Placement, error) { return NewRendezvous(RendezvousConfig{Nodes: n}) }, []int{10, 100})
}

func BenchmarkJump(b *testing.B) {
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		if _, err := Jump(mix(i), 1000); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkOwners(b *testing.B) {
	r := mustRing(b, 0, names("node-", 1000))
	b.Run("ring/first=3", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			o := r.Owners(benchKeys[i&benchMask])
			for range 3 {
				o.Next()
			}
			i++
		}
	})
}

func BenchmarkBoundedPick(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		ring := mustRing(b, 0, names("node-", n))
		bd := mustBounded(b, ring, 1.25)
		// Keep some load in flight so the caps bind.
		for i := range 4 * n {
			if _, err := bd.Acquire(benchKeys[i]); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				l, err := bd.Acquire(benchKeys[i&benchMask])
				if err != nil {
					b.Fatal(err)
				}
				l.Release()
				i++
			}
		})
		b.Run(fmt.Sprintf("nodes=%d/parallel", n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					l, err := bd.Acquire(benchKeys[i&benchMask])
					if err != nil {
						b.Error(err)
						return
					}
					l.Release()
					i++
				}
			})
		})
	}
}

func BenchmarkBuild(b *testing.B) {
	nodes := names("node-", 1000)
	b.Run("ring/nodes=1000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			mustRing(b, 0, nodes)
		}
	})
	b.Run("table/nodes=1000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := NewTable(TableConfig{Nodes: nodes}); err != nil {
				b.Fatal(err)
			}
		}
	})
	tb, _ := NewTable(TableConfig{Nodes: nodes})
	b.Run("table/add+remove", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := tb.Add(Node{Name: "x"}); err != nil {
				b.Fatal(err)
			}
			if err := tb.Remove("x"); err != nil {
				b.Fatal(err)
			}
		}
	})
	r := mustRing(b, 0, nodes)
	b.Run("ring/add+remove", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := r.Add(Node{Name: "x"}); err != nil {
				b.Fatal(err)
			}
			if err := r.Remove("x"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
