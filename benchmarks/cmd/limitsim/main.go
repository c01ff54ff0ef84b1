// Command limitsim runs the discrete-event simulation of package limitsim:
// every scenario of issue 17, on several seeds, for bulwark's adaptive
// Limiter, failsafe-go's adaptive limiter, Netflix's Gradient2 and a fixed
// limit set to the best value in hindsight (the oracle). It prints a
// Markdown table of goodput, admitted p99 and score (goodput × unloaded p99
// ÷ admitted p99) per scenario, and draws each contender's limit over time
// with gonum/plot.
//
//	cd benchmarks && go run ./cmd/limitsim [-seeds 5] [-incident 30m] [-only step-3x] [-out results]
//
// Everything runs on simulated time: the same flags give the same output.
package main

import (
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/bulwark-go/bulwark/benchmarks/limitsim"
)

func main() {
	seeds := flag.Int("seeds", 5, "seeds per scenario and contender")
	incident := flag.Duration("incident", 30*time.Minute, "length of the long incident")
	only := flag.String("only", "", "run only the scenarios whose name contains this")
	out := flag.String("out", "results", "directory for limit.md and limit-*.png; empty for none")
	trace := flag.Bool("trace", false, "print each contender's limit every 100 ms (first seed)")
	flag.Parse()
	if err := run(*seeds, *incident, *only, *out, *trace); err != nil {
		fmt.Fprintln(os.Stderr, "limitsim:", err)
		os.Exit(1)
	}
}

// holdBand is how long the limit must stay within ±10 % of the oracle's to
// count as settled.
const holdBand = 500 * time.Millisecond

type row struct {
	sc      limitsim.Scenario
	oracle  int
	results map[string][]limitsim.Result // by contender
	settle  map[string][]time.Duration
}

func run(nseeds int, incident time.Duration, only, out string, trace bool) error {
	p := limitsim.Params{}
	seeds := make([]uint64, nseeds)
	for i := range seeds {
		seeds[i] = uint64(i + 1)
	}
	unloaded := limitsim.UnloadedP99(p, 1)
	var md strings.Builder
	w := io.MultiWriter(os.Stdout, &md)
	fmt.Fprintf(w, "Server: %d workers, service time 10 ms (90 %%) or 100 ms (10 %%) ±20 %%, capacity %.0f calls/s, unloaded p99 %v. Client timeout 1 s. %d seeds; each figure is the mean over seeds. Score = goodput × (unloaded p99 ÷ admitted p99).\n\n",
		16, p.Capacity(), unloaded.Round(100*time.Microsecond), nseeds)
	fmt.Fprintln(w, "| scenario | oracle limit | contender | goodput | admitted p99 | score | mean limit | settle (±10 % of oracle) | other |")
	fmt.Fprintln(w, "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
	var rows []row
	for _, sc := range limitsim.Scenarios(incident) {
		if only != "" && !strings.Contains(sc.Name, only) {
			continue
		}
		oseeds := seeds
		if sc.Duration > 10*time.Minute {
			oseeds = seeds[:1] // the sweep over fixed limits is long
		}
		oracle, _ := limitsim.Oracle(p, sc, oseeds, unloaded)
		r := row{sc: sc, oracle: oracle, results: map[string][]limitsim.Result{}, settle: map[string][]time.Duration{}}
		clients := max(1, sc.Clients)
		cs := append(limitsim.Contenders(), limitsim.Named{Name: fmt.Sprintf("oracle (fixed %d)", oracle), New: func() limitsim.Contender { return &limitsim.Fixed{N: oracle / clients} }})
		for _, c := range cs {
			for i, seed := range seeds {
				res := limitsim.Run(p, sc, seed, c.New)
				if trace && i == 0 {
					printTrace(sc.Name, c.Name, res.Trace)
				}
				if sc.Step > 0 {
					r.settle[c.Name] = append(r.settle[c.Name], limitsim.Settle(res.Trace, sc.Step, float64(oracle), 0.1, holdBand))
				}
				if sc.Duration > 10*time.Minute {
					res.Trace = thin(res.Trace, 100) // one point a second is plenty to plot
				}
				r.results[c.Name] = append(r.results[c.Name], res)
			}
			rs := r.results[c.Name]
			fmt.Fprintf(w, "| %s | %d | %s | %.3f | %.0f ms | %.3f | %.1f | %s | %s |\n", sc.Name, oracle, c.Name,
				mean(rs, func(r limitsim.Result) float64 { return r.Goodput }),
				mean(rs, func(r limitsim.Result) float64 { return float64(r.P99) / 1e6 }),
				mean(rs, func(r limitsim.Result) float64 { return limitsim.Score(r, unloaded) }),
				mean(rs, func(r limitsim.Result) float64 { return r.MeanLimit }),
				settleText(r.settle[c.Name]), other(sc, rs))
		}
		rows = append(rows, r)
	}
	if out == "" {
		return nil
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if only == "" {
		if err := os.WriteFile(filepath.Join(out, "limit.md"), []byte(md.String()), 0o644); err != nil {
			return err
		}
	}
	return draw2(rows, filepath.Join(out, "limit-traces.png"))
}

func thin(tr []limitsim.Point, every int) []limitsim.Point {
	out := make([]limitsim.Point, 0, len(tr)/every+1)
	for i := 0; i < len(tr); i += every {
		out = append(out, tr[i])
	}
	return out
}

func mean(rs []limitsim.Result, f func(limitsim.Result) float64) float64 {
	s, n := 0.0, 0
	for _, r := range rs {
		if v := f(r); !math.IsNaN(v) {
			s += v
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return s / float64(n)
}

func settleText(ds []time.Duration) string {
	if len(ds) == 0 {
		return "—"
	}
	worst := time.Duration(0)
	for _, d := range ds {
		if d < 0 {
			return "never (some seed)"
		}
		worst = max(worst, d)
	}
	return "≤ " + worst.Round(10*time.Millisecond).String()
}

func other(sc limitsim.Scenario, rs []limitsim.Result) string {
	var parts []string
	if sc.Critical != nil {
		parts = append(parts, fmt.Sprintf("critical success %.1f %%, sheddable %.1f %%",
			100*mean(rs, func(r limitsim.Result) float64 { return r.CritSuccess }),
			100*mean(rs, func(r limitsim.Result) float64 { return r.ShedSuccess })))
	}
	parts = append(parts, fmt.Sprintf("timed out %.1f %%", 100*mean(rs, func(r limitsim.Result) float64 { return r.TimedOut })))
	parts = append(parts, fmt.Sprintf("max in flight %.0f", mean(rs, func(r limitsim.Result) float64 { return float64(r.MaxInFlight) })))
	return strings.Join(parts, "; ")
}

func printTrace(scenario, contender string, tr []limitsim.Point) {
	for i := 0; i < len(tr); i += 10 {
		fmt.Printf("trace %s %s t=%.1fs limit=%.1f inflight=%d goodput=%.2f\n", scenario, contender, tr[i].T.Seconds(), tr[i].Limit, tr[i].InFlight, tr[i].Goodput)
	}
}

var palette = []color.RGBA{
	{0xd6, 0x27, 0x28, 255}, {0x1f, 0x77, 0xb4, 255}, {0x2c, 0xa0, 0x2c, 255}, {0x7f, 0x7f, 0x7f, 255},
}

// draw2 draws, per scenario, each contender's limit over time (first seed),
// in a grid of plots.
func draw2(rows []row, path string) error {
	if len(rows) == 0 {
		return nil
	}
	cols := 3
	nrows := (len(rows) + cols - 1) / cols
	plots := make([][]*plot.Plot, nrows)
	for i := range plots {
		plots[i] = make([]*plot.Plot, cols)
	}
	for i, r := range rows {
		pl := plot.New()
		pl.Title.Text = fmt.Sprintf("%s (oracle %d)", r.sc.Name, r.oracle)
		pl.X.Label.Text = "s"
		pl.Y.Label.Text = "limit"
		pl.Legend.Top = true
		pl.Legend.TextStyle.Font.Size = vg.Points(7)
		j := 0
		names := make([]string, 0, len(r.results))
		for _, c := range limitsim.Contenders() {
			names = append(names, c.Name)
		}
		slices.Reverse(names) // bulwark drawn last, on top
		for _, name := range names {
			tr := r.results[name][0].Trace
			xy := make(plotter.XYs, 0, len(tr))
			for _, p := range tr {
				if !math.IsNaN(p.Limit) {
					xy = append(xy, plotter.XY{X: p.T.Seconds(), Y: p.Limit})
				}
			}
			line, err := plotter.NewLine(xy)
			if err != nil {
				return err
			}
			line.Color = palette[(len(names)-1-j)%len(palette)]
			line.Width = vg.Points(1)
			pl.Add(line)
			pl.Legend.Add(name, line)
			j++
		}
		end := r.sc.Duration.Seconds()
		oracle, err := plotter.NewLine(plotter.XYs{{X: 0, Y: float64(r.oracle)}, {X: end, Y: float64(r.oracle)}})
		if err != nil {
			return err
		}
		oracle.Color = color.Black
		oracle.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		pl.Add(oracle)
		pl.Legend.Add("oracle", oracle)
		pl.Y.Min = 0
		pl.Y.Max = math.Min(pl.Y.Max, 6*float64(r.oracle))
		plots[i/cols][i%cols] = pl
	}
	img := vgimg.New(vg.Length(cols)*4.2*vg.Inch, vg.Length(nrows)*3*vg.Inch)
	dc := draw.New(img)
	t := draw.Tiles{Rows: nrows, Cols: cols, PadX: vg.Millimeter, PadY: vg.Millimeter, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, t, dc)
	for i := range plots {
		for j := range plots[i] {
			if plots[i][j] != nil {
				plots[i][j].Draw(canvases[i][j])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		return err
	}
	return f.Close()
}
