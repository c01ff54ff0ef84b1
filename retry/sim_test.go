package retry

import (
	"container/heap"
	"fmt"
	"testing"
	"time"
)

// The simulation of the AWS Architecture Blog post "Exponential Backoff and
// Jitter": N clients contend for one resource under optimistic concurrency.
// A write holds the resource for busy; a call that arrives while it is held
// fails and the client retries after its backoff. All clients start at once.
// Full jitter should finish the work with far fewer calls than no jitter.

type simEvent struct {
	at      time.Duration
	client  int
	attempt int
	prev    time.Duration
}

type simQueue []simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].client < q[j].client
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type simResult struct {
	calls    int
	duration time.Duration
}

func simulate(b Backoff, clients int, busy time.Duration, seed uint64) simResult {
	q := make(simQueue, 0, clients)
	for c := range clients {
		q = append(q, simEvent{client: c, attempt: 1})
	}
	heap.Init(&q)
	var (
		freeAt time.Duration // the resource is held until then
		res    simResult
		rng    = seed
	)
	for q.Len() > 0 {
		e := heap.Pop(&q).(simEvent)
		res.calls++
		if e.at >= freeAt {
			freeAt = e.at + busy
			res.duration = max(res.duration, e.at+busy)
			continue
		}
		rng += golden
		d := b.Delay(e.attempt, e.prev, splitmix64(rng))
		heap.Push(&q, simEvent{at: e.at + d, client: e.client, attempt: e.attempt + 1, prev: d})
	}
	return res
}

func TestSimulationFullJitterNeedsFewerCalls(t *testing.T) {
	const busy = 5 * time.Millisecond
	base := Backoff{Base: 10 * time.Millisecond, Cap: 10 * time.Second}
	for _, clients := range []int{10, 50, 100, 200} {
		t.Run(fmt.Sprint(clients, " clients"), func(t *testing.T) {
			results := map[Jitter]simResult{}
			for _, j := range []Jitter{NoJitter, EqualJitter, FullJitter, DecorrelatedJitter} {
				b := base
				b.Jitter = j
				var sum simResult
				const runs = 20
				for seed := range uint64(runs) {
					r := simulate(b, clients, busy, seed+1)
					sum.calls += r.calls
					sum.duration += r.duration
				}
				results[j] = simResult{calls: sum.calls / runs, duration: sum.duration / runs}
				t.Logf("%3d clients, %-12v jitter: %6d calls, work done in %v", clients, j, results[j].calls, results[j].duration.Round(time.Millisecond))
			}
			full, none := results[FullJitter], results[NoJitter]
			if full.calls >= none.calls {
				t.Errorf("full jitter made %d calls for %d clients, want fewer than no jitter's %d", full.calls, clients, none.calls)
			}
			if clients >= 50 && full.calls*3 > none.calls {
				t.Errorf("full jitter made %d calls for %d clients, want at most a third of no jitter's %d", full.calls, clients, none.calls)
			}
		})
	}
}
