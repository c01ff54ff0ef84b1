package main

import (
	"fmt"
	"os"
	"time"

	"github.com/bulwark-go/bulwark/benchmarks/limitsim"
	"github.com/bulwark-go/bulwark/limit"
)

func main() {
	p := limitsim.Params{}
	for _, sc := range limitsim.Scenarios(3 * time.Minute) {
		if len(os.Args) > 1 && os.Args[1] != sc.Name {
			continue
		}
		for _, c := range []struct {
			name string
			f    func() limitsim.Contender
		}{
			{"bulwark", func() limitsim.Contender { return limitsim.NewBulwark(limit.Config{}) }},
			{"failsafe", func() limitsim.Contender { return limitsim.NewFailsafe() }},
			{"gradient2", func() limitsim.Contender { return limitsim.NewGradient2() }},
			{"fixed16", func() limitsim.Contender { return &limitsim.Fixed{N: 16} }},
			{"fixed20", func() limitsim.Contender { return &limitsim.Fixed{N: 20} }},
		} {
			r := limitsim.Run(p, sc, 1, c.f)
			fmt.Printf("%-22s %-10s goodput %.3f p50 %6.1fms p99 %6.1fms rej %.2f to %.3f limit %.1f crit %.3f shed %.3f\n", sc.Name, c.name, r.Goodput, ms(r.P50), ms(r.P99), r.Rejected, r.TimedOut, r.MeanLimit, r.CritSuccess, r.ShedSuccess)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
