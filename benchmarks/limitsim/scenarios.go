package limitsim

import (
	"math"
	"time"
)

const s = time.Second

func constant(v float64) func(time.Duration) float64 { return func(time.Duration) float64 { return v } }

func step(at time.Duration, before, after float64) func(time.Duration) float64 {
	return func(t time.Duration) float64 {
		if t < at {
			return before
		}
		return after
	}
}

// Scenarios returns the scenarios of issue 17, in order. incident is the
// length of the long incident (30 minutes in the published run; shorter in
// tests).
func Scenarios(incident time.Duration) []Scenario {
	return []Scenario{
		{Name: "step-1.4x", Duration: 30 * s, From: 10 * s, To: 30 * s, Step: 10 * s, Load: step(10*s, 0.5, 1.4)},
		{Name: "step-3x", Duration: 30 * s, From: 10 * s, To: 30 * s, Step: 10 * s, Load: step(10*s, 0.5, 3)},
		{Name: "capacity-halved", Duration: 30 * s, From: 10 * s, To: 30 * s, Step: 10 * s, Load: constant(0.8),
			Cond: func(t time.Duration) Cond {
				if t < 10*s {
					return Normal
				}
				return Cond{Workers: 0.5, Slow: 1}
			}},
		{Name: "dependency-10x-slower", Duration: 40 * s, From: 10 * s, To: 40 * s, Step: 10 * s, Load: constant(0.8),
			Cond: func(t time.Duration) Cond {
				if t < 10*s {
					return Normal
				}
				return Cond{Workers: 1, Slow: 10}
			}},
		{Name: "black-hole", Duration: 30 * s, From: 15 * s, To: 30 * s, Step: 15 * s, Load: constant(0.8),
			Cond: func(t time.Duration) Cond {
				if t >= 10*s && t < 15*s {
					return Cond{Workers: 1, Slow: 1, BlackHole: true}
				}
				return Normal
			}},
		{Name: "fast-failures", Duration: 30 * s, From: 10 * s, To: 30 * s, Load: constant(2),
			Cond: func(t time.Duration) Cond {
				if t < 10*s {
					return Normal
				}
				return Cond{Workers: 1, Slow: 1, FailFast: 0.5}
			}},
		{Name: "on-off-bursts", Duration: 30 * s, From: 5 * s, To: 30 * s, Load: func(t time.Duration) float64 {
			if (t/s)%2 == 0 {
				return 3
			}
			return 0.3
		}},
		{Name: "capacity-drift", Duration: 120 * s, From: 10 * s, To: 120 * s, Load: constant(1.5),
			Cond: func(t time.Duration) Cond {
				// The service time doubles over the first minute, then
				// comes back over the second.
				x := t.Seconds() / 60
				return Cond{Workers: 1, Slow: 1 + math.Min(x, 2-x)}
			}},
		{Name: "long-incident", Duration: 10*s + incident + 60*s, From: 10*s + incident - incident/6, To: 10*s + incident, Step: 10 * s,
			Load: func(t time.Duration) float64 {
				if t >= 10*s && t < 10*s+incident {
					return 3
				}
				return 0.8
			}},
		{Name: "two-priorities", Duration: 30 * s, From: 10 * s, To: 30 * s, Load: step(10*s, 0.5, 3),
			Critical: func(t time.Duration) float64 {
				if t < 10*s {
					return 0.5
				}
				return 0.5 / 3 // critical calls: half the capacity; the rest, 2.5×, sheddable
			}},
		{Name: "ten-clients", Duration: 30 * s, From: 10 * s, To: 30 * s, Step: 10 * s, Load: step(10*s, 0.5, 3), Clients: 10},
	}
}
