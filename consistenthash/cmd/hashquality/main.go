// Command hashquality measures the placements of package consistenthash:
// balance over a million keys, keys moved when a node joins or leaves
// against the ideal, stray moves, memory and build time.
//
//	go run ./consistenthash/cmd/hashquality [-keys 1000000] [-nodes 10,100,1000]
//
// For each algorithm and fleet size it prints one markdown row:
//
//   - max/avg, min/avg, stddev/avg: keys per node over the average.
//   - add: keys moved when node n+1 joins, as a percentage of all keys and
//     as a multiple of the ideal 1/(n+1); stray: moved keys whose new owner
//     is not the new node.
//   - remove: the same when a node leaves (ideal: its keys, 1/n); stray:
//     moved keys that were not on the removed node. The baseline is the
//     placement just before the removal, after node n+1 joined and left.
//   - mem: heap bytes held by the placement; build: time to build it.
//
// Jump numbers buckets, so the node that leaves is the last one; the others
// lose a node from the middle.
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/bulwark-go/bulwark/consistenthash"
)

// placement is what the command measures: a lookup and membership changes.
type placement interface {
	get(key string) string
	add(name string) error
	remove(name string) error
}

type algo struct {
	name  string
	build func(names []string) (placement, error)
}

func main() {
	nkeys := flag.Int("keys", 1_000_000, "number of keys user-0 … user-N")
	sizes := flag.String("nodes", "10,100,1000", "comma-separated fleet sizes")
	flag.Parse()
	if err := run(*nkeys, *sizes); err != nil {
		fmt.Fprintln(os.Stderr, "hashquality:", err)
		os.Exit(1)
	}
}

func run(nkeys int, sizes string) error {
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	fmt.Printf("%d keys \"user-N\"; nodes \"node-N\"; %s %s/%s, %d CPUs\n\n", nkeys, runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	fmt.Println("| algorithm | nodes | max/avg | min/avg | stddev/avg | add: moved | × ideal | stray | remove: moved | × ideal | stray | mem | build |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, f := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			return fmt.Errorf("bad fleet size %q", f)
		}
		for _, a := range algos() {
			r, err := measure(a, n, keys)
			if err != nil {
				return fmt.Errorf("%s, %d nodes: %w", a.name, n, err)
			}
			fmt.Println(r)
		}
	}
	return nil
}

func algos() []algo {
	return []algo{
		{"Ring (160 vnodes)", func(names []string) (placement, error) {
			r, err := consistenthash.NewRing(consistenthash.RingConfig{Nodes: nodes(names)})
			return named{r}, err
		}},
		{"Table (65536 slots)", func(names []string) (placement, error) {
			t, err := consistenthash.NewTable(consistenthash.TableConfig{Nodes: nodes(names)})
			return named{t}, err
		}},
		{"Rendezvous", func(names []string) (placement, error) {
			r, err := consistenthash.NewRendezvous(consistenthash.RendezvousConfig{Nodes: nodes(names)})
			return named{r}, err
		}},
		{"Jump", func(names []string) (placement, error) { return &jump{names: names}, nil }},
	}
}

func nodes(names []string) []consistenthash.Node {
	out := make([]consistenthash.Node, len(names))
	for i, n := range names {
		out[i] = consistenthash.Node{Name: n}
	}
	return out
}

type named struct{ p consistenthash.Placement }

func (p named) get(key string) string {
	n, err := p.p.Get(key)
	if err != nil {
		panic(err) // the fleets measured are never empty
	}
	return n
}
func (p named) add(name string) error    { return p.p.Add(consistenthash.Node{Name: name}) }
func (p named) remove(name string) error { return p.p.Remove(name) }

// jump maps bucket numbers to names; only the last bucket can leave.
type jump struct{ names []string }

func (j *jump) get(key string) string {
	b, err := consistenthash.Jump(consistenthash.Hash(key), len(j.names))
	if err != nil {
		panic(err)
	}
	return j.names[b]
}
func (j *jump) add(name string) error { j.names = append(j.names, name); return nil }
func (j *jump) remove(name string) error {
	if j.names[len(j.names)-1] != name {
		return fmt.Errorf("jump can remove only its last bucket, not %q", name)
	}
	j.names = j.names[:len(j.names)-1]
	return nil
}

type result struct {
	name                             string
	n                                int
	maxAvg, minAvg, sdAvg            float64
	addMoved, addIdeal, addStray     int
	rmMoved, rmIdeal, rmStray, total int
	mem                              uint64
	build                            time.Duration
}

func (r result) String() string {
	pct := func(k int) string { return fmt.Sprintf("%.3f %%", 100*float64(k)/float64(r.total)) }
	return fmt.Sprintf("| %s | %d | %.3f | %.3f | %.3f | %s | %.3f | %d | %s | %.3f | %d | %s | %s |",
		r.name, r.n, r.maxAvg, r.minAvg, r.sdAvg,
		pct(r.addMoved), float64(r.addMoved)/float64(r.addIdeal), r.addStray,
		pct(r.rmMoved), float64(r.rmMoved)/float64(r.rmIdeal), r.rmStray,
		bytes(r.mem), r.build.Round(time.Microsecond))
}

func bytes(b uint64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func measure(a algo, n int, keys []string) (result, error) {
	names := make([]string, n)
	for i := range names {
		names[i] = "node-" + strconv.Itoa(i)
	}
	r := result{name: a.name, n: n, total: len(keys)}
	h0 := heap()
	start := time.Now()
	p, err := a.build(names)
	if err != nil {
		return r, err
	}
	r.build = time.Since(start)
	if h := heap(); h > h0 {
		r.mem = h - h0
	}
	before := make([]string, len(keys))
	load := map[string]int{}
	for i, k := range keys {
		before[i] = p.get(k)
		load[before[i]]++
	}
	r.maxAvg, r.minAvg, r.sdAvg = balance(load, n, len(keys))

	added := "node-" + strconv.Itoa(n)
	if err := p.add(added); err != nil {
		return r, err
	}
	after := make([]string, len(keys))
	for i, k := range keys {
		after[i] = p.get(k)
		if after[i] != before[i] {
			r.addMoved++
			if after[i] != added {
				r.addStray++
			}
		}
	}
	r.addIdeal = len(keys) / (n + 1)
	if err := p.remove(added); err != nil {
		return r, err
	}
	// A Table remembers its history: after that add and remove it may not
	// be back to its first placement, so the baseline is taken again.
	for i, k := range keys {
		before[i] = p.get(k)
	}
	// Remove a node from the middle (Jump: the last one).
	gone := names[n/2]
	if _, ok := p.(*jump); ok {
		gone = names[n-1]
	}
	if err := p.remove(gone); err != nil {
		return r, err
	}
	for i, k := range keys {
		if got := p.get(k); got != before[i] {
			r.rmMoved++
			if before[i] != gone {
				r.rmStray++
			}
		}
	}
	r.rmIdeal = len(keys) / n
	runtime.KeepAlive(p)
	return r, nil
}

func balance(load map[string]int, n, keys int) (maxAvg, minAvg, sdAvg float64) {
	avg := float64(keys) / float64(n)
	lo, hi, ss := math.Inf(1), 0.0, 0.0
	for i := range n {
		l := float64(load["node-"+strconv.Itoa(i)])
		lo, hi = min(lo, l), max(hi, l)
		ss += (l - avg) * (l - avg)
	}
	return hi / avg, lo / avg, math.Sqrt(ss/float64(n)) / avg
}
