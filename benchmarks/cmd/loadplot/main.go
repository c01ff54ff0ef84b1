// Command loadplot compares the placements of package consistenthash with the
// peer libraries on the same keys: it prints, per algorithm, the balance of
// 1,000,000 keys "user-N" over the nodes and the keys moved when a node joins
// and leaves, and draws the per-node load of each algorithm with gonum/plot.
//
//	cd benchmarks && go run ./cmd/loadplot [-keys 1000000] [-nodes 100] [-out results/consistenthash-load.png]
//
// The columns are those of consistenthash/cmd/hashquality; "n/a" marks an
// operation a library lacks, "panics" one that panics.
package main

import (
	"flag"
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
	jump "github.com/dgryski/go-jump"
	rendezvous "github.com/dgryski/go-rendezvous"
	groupcache "github.com/golang/groupcache/consistenthash"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/bulwark-go/bulwark/consistenthash"
)

// placement is one algorithm at one fleet: a lookup and, where the library
// has them, membership changes (nil when absent).
type placement struct {
	get    func(key string) string
	add    func(name string)
	remove func(name string)
}

type algo struct {
	name  string
	build func(names []string) (placement, error)
}

func algos() []algo {
	ours := func(p consistenthash.Placement, err error) (placement, error) {
		if err != nil {
			return placement{}, err
		}
		return placement{
			get:    func(k string) string { n, _ := p.Get(k); return n },
			add:    func(n string) { must(p.Add(consistenthash.Node{Name: n})) },
			remove: func(n string) { must(p.Remove(n)) },
		}, nil
	}
	nodes := func(names []string) []consistenthash.Node {
		out := make([]consistenthash.Node, len(names))
		for i, n := range names {
			out[i] = consistenthash.Node{Name: n}
		}
		return out
	}
	return []algo{
		{"bulwark Ring (160 vnodes)", func(names []string) (placement, error) {
			return ours(consistenthash.NewRing(consistenthash.RingConfig{Nodes: nodes(names)}))
		}},
		{"bulwark Table (65536 slots)", func(names []string) (placement, error) {
			return ours(consistenthash.NewTable(consistenthash.TableConfig{Nodes: nodes(names)}))
		}},
		{"bulwark Rendezvous", func(names []string) (placement, error) {
			return ours(consistenthash.NewRendezvous(consistenthash.RendezvousConfig{Nodes: nodes(names)}))
		}},
		{"groupcache (160 vnodes)", func(names []string) (placement, error) {
			m := groupcache.New(160, nil)
			m.Add(names...)
			// groupcache has no Remove; Add works on the same Map.
			return placement{get: m.Get, add: func(n string) { m.Add(n) }}, nil
		}},
		{"buraksezer/consistent (defaults)", func(names []string) (p placement, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panics: %v", r)
				}
			}()
			members := make([]consistent.Member, len(names))
			for i, n := range names {
				members[i] = member(n)
			}
			c := consistent.New(members, consistent.Config{Hasher: hasher{}, PartitionCount: 271, ReplicationFactor: 20, Load: 1.25})
			return placement{
				get:    func(k string) string { return c.LocateKey([]byte(k)).String() },
				add:    func(n string) { c.Add(member(n)) },
				remove: func(n string) { c.Remove(n) },
			}, nil
		}},
		{"dgryski/go-rendezvous", func(names []string) (placement, error) {
			r := rendezvous.New(names, xxhash.Sum64String)
			return placement{get: r.Lookup, add: r.Add, remove: r.Remove}, nil
		}},
		{"dgryski/go-jump", func(names []string) (placement, error) {
			names = slices.Clone(names)
			return placement{
				get: func(k string) string { return names[jump.Hash(xxhash.Sum64String(k), len(names))] },
				add: func(n string) { names = append(names, n) },
			}, nil
		}},
	}
}

type member string

func (m member) String() string { return string(m) }

type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func main() {
	nkeys := flag.Int("keys", 1_000_000, "number of keys user-0 … user-N")
	sizes := flag.String("nodes", "100", "comma-separated fleet sizes; the first is plotted")
	out := flag.String("out", "results/consistenthash-load.png", "the PNG to write")
	flag.Parse()
	if err := run(*nkeys, *sizes, *out); err != nil {
		fmt.Fprintln(os.Stderr, "loadplot:", err)
		os.Exit(1)
	}
}

func run(nkeys int, sizes, out string) error {
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	fmt.Println("| algorithm | nodes | max/avg | min/avg | stddev/avg | add: moved | × ideal | stray | remove: moved | × ideal | stray |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	var curves []curve
	for k, f := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			return fmt.Errorf("bad fleet size %q", f)
		}
		for _, a := range algos() {
			row, loads := measure(a, n, keys)
			fmt.Println(row)
			if k == 0 && loads != nil {
				curves = append(curves, curve{a.name, loads})
			}
		}
	}
	return drawLoads(curves, nkeys, out)
}

// measure returns the table row of a at n nodes and its per-node loads
// (keys per node over the average), nil if it could not be built.
func measure(a algo, n int, keys []string) (string, []float64) {
	names := make([]string, n)
	for i := range names {
		names[i] = "node-" + strconv.Itoa(i)
	}
	p, err := a.build(names)
	if err != nil {
		return fmt.Sprintf("| %s | %d | %s |||||||||", a.name, n, err), nil
	}
	before := make([]string, len(keys))
	count := map[string]int{}
	for i, k := range keys {
		before[i] = p.get(k)
		count[before[i]]++
	}
	avg := float64(len(keys)) / float64(n)
	loads := make([]float64, n)
	for i, name := range names {
		loads[i] = float64(count[name]) / avg
	}
	mean, sd := 0.0, 0.0
	for _, l := range loads {
		mean += l / float64(n)
	}
	for _, l := range loads {
		sd += (l - mean) * (l - mean) / float64(n)
	}
	row := fmt.Sprintf("| %s | %d | %.3f | %.3f | %.3f | ", a.name, n, slices.Max(loads), slices.Min(loads), math.Sqrt(sd))
	pct := func(k int) string { return fmt.Sprintf("%.3f %%", 100*float64(k)/float64(len(keys))) }

	added := "node-" + strconv.Itoa(n)
	moved, stray := 0, 0
	if !try(func() { p.add(added) }) {
		row += "panics | | | "
	} else {
		for i, k := range keys {
			if got := p.get(k); got != before[i] {
				moved++
				if got != added {
					stray++
				}
			}
		}
		row += fmt.Sprintf("%s | %.3f | %d | ", pct(moved), float64(moved)/float64(len(keys)/(n+1)), stray)
	}
	if p.remove == nil {
		return row + "n/a (no Remove) | | |", loads
	}
	if !try(func() { p.remove(added) }) {
		return row + "panics | | |", loads
	}
	for i, k := range keys {
		before[i] = p.get(k)
	}
	gone := names[n/2]
	if !try(func() { p.remove(gone) }) {
		return row + "panics | | |", loads
	}
	moved, stray = 0, 0
	for i, k := range keys {
		if got := p.get(k); got != before[i] {
			moved++
			if before[i] != gone {
				stray++
			}
		}
	}
	return row + fmt.Sprintf("%s | %.3f | %d |", pct(moved), float64(moved)/float64(len(keys)/n), stray), loads
}

func try(f func()) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	f()
	return true
}

type curve struct {
	name  string
	loads []float64
}

// drawLoads plots each algorithm's per-node loads, sorted from the most to the
// least loaded node, with the ideal 1.0 as a dashed line.
func drawLoads(curves []curve, nkeys int, out string) error {
	p := plot.New()
	n := 0
	if len(curves) > 0 {
		n = len(curves[0].loads)
	}
	p.Title.Text = fmt.Sprintf("Keys per node over the average: %d keys, %d nodes", nkeys, n)
	p.X.Label.Text = "nodes, from the most to the least loaded"
	p.Y.Label.Text = "keys / average"
	p.Legend.Top = true
	p.Legend.Left = false
	palette := []color.RGBA{
		{0xd6, 0x27, 0x28, 255}, {0x1f, 0x77, 0xb4, 255}, {0x2c, 0xa0, 0x2c, 255},
		{0x94, 0x67, 0xbd, 255}, {0xff, 0x7f, 0x0e, 255}, {0x8c, 0x56, 0x4b, 255}, {0x7f, 0x7f, 0x7f, 255},
	}
	for i, c := range curves {
		sorted := slices.Clone(c.loads)
		slices.Sort(sorted)
		slices.Reverse(sorted)
		xy := make(plotter.XYs, len(sorted))
		for j, l := range sorted {
			xy[j] = plotter.XY{X: float64(j + 1), Y: l}
		}
		line, err := plotter.NewLine(xy)
		if err != nil {
			return err
		}
		line.Color = palette[i%len(palette)]
		line.Width = vg.Points(1.5)
		if i >= 3 { // the peers, dashed
			line.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		p.Add(line)
		p.Legend.Add(c.name, line)
	}
	ideal, err := plotter.NewLine(plotter.XYs{{X: 1, Y: 1}, {X: float64(max(n, 2)), Y: 1}})
	if err != nil {
		return err
	}
	ideal.Color = color.Black
	ideal.Dashes = []vg.Length{vg.Points(1), vg.Points(3)}
	p.Add(ideal)
	p.Legend.Add("ideal", ideal)
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Y.Min = 0
	for _, c := range curves {
		p.Y.Max = max(p.Y.Max, 1.15*slices.Max(c.loads))
	}
	return p.Save(9*vg.Inch, 5.5*vg.Inch, out)
}
