package limitsim

import (
	"math"
	"slices"
	"time"

	"github.com/bulwark-go/bulwark/limit"
)

// Named is a contender with its name.
type Named struct {
	Name string
	New  func() Contender
}

// Contenders returns the adaptive contenders: bulwark's Limiter,
// failsafe-go's adaptive limiter and Netflix's Gradient2.
func Contenders() []Named {
	return []Named{
		{"bulwark", func() Contender { return NewBulwark(limit.Config{}) }},
		{"failsafe-go", func() Contender { return NewFailsafe() }},
		{"gradient2", func() Contender { return NewGradient2() }},
	}
}

// Score is goodput divided by the admitted p99 latency in units of the
// unloaded p99: higher is better.
func Score(r Result, unloadedP99 time.Duration) float64 {
	if r.P99 == 0 {
		return 0
	}
	return r.Goodput * float64(unloadedP99) / float64(r.P99)
}

// UnloadedP99 measures the p99 latency of the server at a tenth of its
// capacity, with no limiter.
func UnloadedP99(p Params, seed uint64) time.Duration {
	sc := Scenario{Name: "unloaded", Duration: 60 * time.Second, From: time.Second, To: 60 * time.Second, Load: constant(0.1)}
	return Run(p, sc, seed, func() Contender { return None{} }).P99
}

// Oracle runs fixed limits over sc and returns the one with the best mean
// Score over seeds, and that score. With several clients, each client gets
// an equal share of the limit, and the limit returned is their sum.
func Oracle(p Params, sc Scenario, seeds []uint64, unloaded time.Duration) (best int, score float64) {
	p = p.withDefaults()
	clients := max(1, sc.Clients)
	score = math.Inf(-1)
	for per := 1; per*clients <= 4*p.Workers; per++ {
		if per*clients < p.Workers/4 {
			continue
		}
		total := 0.0
		for _, seed := range seeds {
			total += Score(Run(p, sc, seed, func() Contender { return &Fixed{N: per} }), unloaded)
		}
		if total /= float64(len(seeds)); total > score {
			best, score = per*clients, total
		}
	}
	return best, score
}

// Settle returns how long after sc.Step the limit took to enter ±tol of
// target and stay there for hold, judged on its 200 ms moving average; -1
// if it never did.
func Settle(tr []Point, step time.Duration, target, tol float64, hold time.Duration) time.Duration {
	const avg = 20 // trace points of 10 ms
	in := func(i int) bool {
		lo := max(0, i-avg+1)
		s := 0.0
		for _, p := range tr[lo : i+1] {
			s += p.Limit
		}
		m := s / float64(i+1-lo)
		return math.Abs(m-target) <= tol*target
	}
	start := slices.IndexFunc(tr, func(p Point) bool { return p.T >= step })
	if start < 0 {
		return -1
	}
	for i := start; i < len(tr); i++ {
		if !in(i) {
			continue
		}
		j := i
		for j < len(tr) && tr[j].T-tr[i].T < hold && in(j) {
			j++
		}
		if j == len(tr) || tr[j].T-tr[i].T >= hold {
			return tr[i].T - step
		}
		i = j
	}
	return -1
}
