package benchmarks

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
	jump "github.com/dgryski/go-jump"
	rendezvous "github.com/dgryski/go-rendezvous"
	groupcache "github.com/golang/groupcache/consistenthash"

	"github.com/bulwark-go/bulwark/consistenthash"
)

// Keys "user-N", as in the measurements; the []byte copies spare the
// peers that take []byte a conversion in the timed loop.
var (
	chKeys      = make([]string, 1<<16)
	chKeyBytes  = make([][]byte, 1<<16)
	chSizes     = []int{10, 100, 1000}
	chMask      = len(chKeys) - 1
	chNodeNames = func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "node-" + strconv.Itoa(i)
		}
		return out
	}
)

func init() {
	for i := range chKeys {
		chKeys[i] = "user-" + strconv.Itoa(i)
		chKeyBytes[i] = []byte(chKeys[i])
	}
}

func chNodes(n int) []consistenthash.Node {
	out := make([]consistenthash.Node, n)
	for i, name := range chNodeNames(n) {
		out[i] = consistenthash.Node{Name: name}
	}
	return out
}

// member and hasher adapt buraksezer/consistent; its hasher is xxhash, as
// in its README.
type member string

func (m member) String() string { return string(m) }

type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// newBuraksezer builds buraksezer/consistent with its defaults (271
// partitions, replication factor 20, load 1.25). It panics when it cannot
// place the partitions within the load bound, as it does at 1000 members.
func newBuraksezer(n int) (c *consistent.Consistent, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("buraksezer/consistent panics with %d members: %v", n, p)
		}
	}()
	members := make([]consistent.Member, n)
	for i, name := range chNodeNames(n) {
		members[i] = member(name)
	}
	return consistent.New(members, consistent.Config{
		Hasher: hasher{}, PartitionCount: consistent.DefaultPartitionCount,
		ReplicationFactor: 20, Load: 1.25,
	}), nil
}

// lookupBench runs get serially and in parallel under one impl= name.
func lookupBench(b *testing.B, name string, get func(i int) string) {
	b.Run("impl="+name, func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if get(i&chMask) == "" {
				b.Fatal("no node")
			}
			i++
		}
	})
	b.Run("impl="+name+"/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if get(i&chMask) == "" {
					b.Error("no node")
					return
				}
				i++
			}
		})
	})
}

func mustGet(p consistenthash.Placement) func(int) string {
	return func(i int) string {
		n, err := p.Get(chKeys[i])
		if err != nil {
			panic(err)
		}
		return n
	}
}

// BenchmarkRingLookup compares the ring with groupcache's at the same 160
// virtual nodes, and with buraksezer/consistent at its defaults.
func BenchmarkRingLookup(b *testing.B) {
	for _, n := range chSizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ring, err := consistenthash.NewRing(consistenthash.RingConfig{VirtualNodes: 160, Nodes: chNodes(n)})
			if err != nil {
				b.Fatal(err)
			}
			lookupBench(b, "bulwark", mustGet(ring))
			gc := groupcache.New(160, nil)
			gc.Add(chNodeNames(n)...)
			lookupBench(b, "groupcache", func(i int) string { return gc.Get(chKeys[i]) })
			if bs, err := newBuraksezer(n); err == nil {
				lookupBench(b, "buraksezer", func(i int) string { return bs.LocateKey(chKeyBytes[i]).String() })
			} else {
				b.Log(err)
			}
		})
	}
}

// BenchmarkTableLookup: no peer of this kind is served here (go-maglev,
// go-anchorhash); jump is the nearest O(1)-memory relative.
func BenchmarkTableLookup(b *testing.B) {
	for _, n := range chSizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			t, err := consistenthash.NewTable(consistenthash.TableConfig{Nodes: chNodes(n)})
			if err != nil {
				b.Fatal(err)
			}
			lookupBench(b, "bulwark", mustGet(t))
		})
	}
}

func BenchmarkRendezvousLookup(b *testing.B) {
	for _, n := range chSizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			r, err := consistenthash.NewRendezvous(consistenthash.RendezvousConfig{Nodes: chNodes(n)})
			if err != nil {
				b.Fatal(err)
			}
			lookupBench(b, "bulwark", mustGet(r))
			d := rendezvous.New(chNodeNames(n), xxhash.Sum64String)
			lookupBench(b, "dgryski", func(i int) string { return d.Lookup(chKeys[i]) })
		})
	}
}

// BenchmarkJump hashes the string key and jumps, for both.
func BenchmarkJump(b *testing.B) {
	names := chNodeNames(1000)
	b.Run("buckets=1000", func(b *testing.B) {
		lookupBench(b, "bulwark", func(i int) string {
			j, err := consistenthash.Jump(consistenthash.Hash(chKeys[i]), len(names))
			if err != nil {
				panic(err)
			}
			return names[j]
		})
		lookupBench(b, "dgryski", func(i int) string { return names[jump.Hash(xxhash.Sum64String(chKeys[i]), len(names))] })
	})
}

// BenchmarkBoundedPick is Acquire+Release with 4 requests per node held in
// flight. No peer with in-flight bounded loads is served here (lafikl/consistent
// is not); buraksezer's LocateKey, bounded at build time, is the reference.
func BenchmarkBoundedPick(b *testing.B) {
	for _, n := range []int{100} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ring, err := consistenthash.NewRing(consistenthash.RingConfig{Nodes: chNodes(n)})
			if err != nil {
				b.Fatal(err)
			}
			bd, err := consistenthash.NewBounded(consistenthash.BoundedConfig{Placement: ring, LoadFactor: 1.25})
			if err != nil {
				b.Fatal(err)
			}
			for i := range 4 * n {
				if _, err := bd.Acquire(chKeys[i]); err != nil {
					b.Fatal(err)
				}
			}
			lookupBench(b, "bulwark", func(i int) string {
				l, err := bd.Acquire(chKeys[i])
				if err != nil {
					panic(err)
				}
				l.Release()
				return l.Node()
			})
			if bs, err := newBuraksezer(n); err == nil {
				lookupBench(b, "buraksezer-locate", func(i int) string { return bs.LocateKey(chKeyBytes[i]).String() })
			}
		})
	}
}

// The package's own XXH64 and Jump agree with the reference implementations.
func TestConsistentHashMatchesReferences(t *testing.T) {
	buf := make([]byte, 0, 300)
	for n := range 300 {
		buf = append(buf, byte('a'+n%26))
		if got, want := consistenthash.Hash(string(buf)), xxhash.Sum64(buf); got != want {
			t.Fatalf("Hash(%d bytes) = %#x, want xxhash.Sum64 = %#x", len(buf), got, want)
		}
	}
	for k := range uint64(5000) {
		key := k * 0x9E3779B97F4A7C15
		for _, n := range []int{1, 2, 3, 10, 1000, 65536, 1<<31 - 1} {
			got, err := consistenthash.Jump(key, n)
			if want := int(jump.Hash(key, n)); err != nil || got != want {
				t.Fatalf("Jump(%#x, %d) = %d, %v; want go-jump's %d", key, n, got, err, want)
			}
		}
	}
}
