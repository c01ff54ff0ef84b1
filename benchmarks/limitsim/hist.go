package limitsim

import (
	"math"
	"time"
)

// histogram counts latencies in buckets 1 % wide on a log scale, from 10 µs
// to about 100 s.
type histogram struct {
	n      int
	counts [histBuckets]int
}

const (
	histMin     = float64(10 * time.Microsecond)
	histGrowth  = 1.01
	histBuckets = 1700
)

var logGrowth = math.Log(histGrowth)

func (h *histogram) add(d time.Duration) {
	i := 0
	if v := float64(d); v > histMin {
		i = min(int(math.Log(v/histMin)/logGrowth), histBuckets-1)
	}
	h.counts[i]++
	h.n++
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(h.n)))
	seen := 0
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(histMin * math.Pow(histGrowth, float64(i+1)))
		}
	}
	return time.Duration(histMin * math.Pow(histGrowth, histBuckets))
}
