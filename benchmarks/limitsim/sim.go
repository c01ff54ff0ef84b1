// Package limitsim is a discrete-event simulation of concurrency limiters in
// front of a server, on simulated time: no real time passes and a run with a
// given seed always gives the same result.
//
// The server has c workers and a FIFO queue; a call's service time is light
// (90 %) or ten times heavier (10 %), each jittered by ±20 %. Clients send
// Poisson arrivals at a rate that a Scenario varies, give up on a call after
// a timeout, and the server skips a call whose client has given up when a
// worker reaches it. Each Contender (a concurrency limiter) admits or refuses
// every call, and learns from the end of each admitted one.
package limitsim

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"time"
)

// Params describe the server and the clients. The zero value of each field
// means its default.
type Params struct {
	Workers int           // c; if zero, 16
	Light   time.Duration // the light service time; if zero, 10 ms
	Timeout time.Duration // clients give up after this; if zero, 1 s
}

func (p Params) withDefaults() Params {
	if p.Workers == 0 {
		p.Workers = 16
	}
	if p.Light == 0 {
		p.Light = 10 * time.Millisecond
	}
	if p.Timeout == 0 {
		p.Timeout = time.Second
	}
	return p
}

const (
	heavyShare  = 0.1
	heavyFactor = 10.0
	jitter      = 0.2
)

// MeanService returns the mean service time of a call.
func (p Params) MeanService() time.Duration {
	p = p.withDefaults()
	return time.Duration(float64(p.Light) * (1 - heavyShare + heavyShare*heavyFactor))
}

// Capacity returns the calls per second the server completes at full use.
func (p Params) Capacity() float64 {
	p = p.withDefaults()
	return float64(p.Workers) / p.MeanService().Seconds()
}

// Cond is the state of the server at one moment.
type Cond struct {
	Workers   float64 // share of the workers in service (1: all)
	Slow      float64 // service time multiplier (1: normal)
	BlackHole bool    // calls are never answered
	FailFast  float64 // share of calls that fail at once (1 ms), without a worker
}

// Normal is the undisturbed server.
var Normal = Cond{Workers: 1, Slow: 1}

// Scenario is what happens to the offered load and the server over a run.
type Scenario struct {
	Name     string
	Duration time.Duration
	// From and To bound the measured part of the run.
	From, To time.Duration
	// Step, if not zero, is when the load or the server changes: settle
	// times are measured from it.
	Step time.Duration
	// Load is the offered load at t, a multiple of the nominal capacity.
	Load func(t time.Duration) float64
	// Cond is the server at t; nil means Normal throughout.
	Cond func(t time.Duration) Cond
	// Critical is the share of calls that are critical at t (the others
	// are sheddable); nil means every call is normal.
	Critical func(t time.Duration) float64
	// Clients, if more than 1, gives each of that many clients its own
	// limiter in front of the shared server (client-side limiting).
	Clients int
}

// Outcome is how a call ended for the limiter that admitted it.
type Outcome uint8

const (
	Success Outcome = iota
	Failure         // a fast failure
	Timeout         // the client gave up
)

// Class is a call's criticality in the simulation.
type Class uint8

const (
	ClassNormal Class = iota
	ClassCritical
	ClassSheddable
)

// Contender is a concurrency limiter under test. Acquire admits a call (and
// returns a handle for Release) or refuses it; Release ends an admitted call.
// Limit reports the current limit for the trace.
type Contender interface {
	Acquire(now time.Duration, c Class) (handle int, ok bool)
	Release(now time.Duration, handle int, o Outcome)
	Limit() float64
}

// Result is what one run measured over [From, To).
type Result struct {
	Goodput      float64       // successful calls per second ÷ the capacity of the moment
	Offered      float64       // arrivals ÷ capacity
	P50, P99     time.Duration // latency of successful calls, from admission to answer
	Rejected     float64       // share of arrivals refused
	TimedOut     float64       // share of admitted calls that timed out
	CritSuccess  float64       // share of critical arrivals that succeeded (NaN without any)
	ShedSuccess  float64       // share of sheddable arrivals that succeeded (NaN without any)
	MeanLimit    float64       // the limit's time average (client limiters: summed)
	MaxInFlight  int           // the most calls admitted and not ended at once
	Trace        []Point       // every 10 ms of the whole run
	Completed    int           // successful calls in the window
	ServerQueued int           // the longest server queue seen in the window
}

// Point is one sample of the trace.
type Point struct {
	T        time.Duration
	Limit    float64
	InFlight int
	Goodput  float64 // successes per second over the last 100 ms ÷ capacity then
}

type event struct {
	t    time.Duration
	kind uint8
	id   int32
	seq  uint64
}

const (
	evArrival = iota
	evDone
	evTimeout
	evTick
)

type events []event

func (h events) Len() int { return len(h) }
func (h events) Less(i, j int) bool {
	if h[i].t != h[j].t {
		return h[i].t < h[j].t
	}
	return h[i].seq < h[j].seq
}
func (h events) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *events) Push(x any)   { *h = append(*h, x.(event)) }
func (h *events) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

type call struct {
	admitted time.Duration
	client   int32
	handle   int
	class    Class
	state    uint8 // 1 in the server, 2 ended (answered or given up)
	serving  bool  // a worker holds it
	fast     bool  // it fails at once
	pending  int8  // events still to come for it; its id is reused at zero
}

// Run simulates scenario sc against the limiters that newContender returns
// (one per client), with seed.
func Run(p Params, sc Scenario, seed uint64, newContender func() Contender) Result {
	p = p.withDefaults()
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	clients := max(1, sc.Clients)
	lims := make([]Contender, clients)
	for i := range lims {
		lims[i] = newContender()
	}
	cond := sc.Cond
	if cond == nil {
		cond = func(time.Duration) Cond { return Normal }
	}
	capacity := p.Capacity()
	meanS := p.MeanService().Seconds()
	capAt := func(t time.Duration) float64 {
		c := cond(t)
		if c.BlackHole {
			return capacity
		}
		return math.Floor(float64(p.Workers)*c.Workers) / (meanS * c.Slow)
	}

	var (
		h        events
		seq      uint64
		calls    []call
		free     []int32
		queue    []int32 // server FIFO of call ids
		qhead    int
		busy     int
		inflight int
		res      Result
		hist     histogram
		// window counters
		arrivals, rejected, admitted, timedOut, succ int
		critArr, critOK, shedArr, shedOK             int
		capSum                                       float64
		capN                                         int
		limitSum                                     float64
		recent                                       [10]int // successes per 10 ms, for the trace's goodput
		recentCap                                    [10]float64
		tick                                         int
	)
	push := func(t time.Duration, kind uint8, id int32) {
		seq++
		heap.Push(&h, event{t: t, kind: kind, id: id, seq: seq})
	}
	inWindow := func(t time.Duration) bool { return t >= sc.From && t < sc.To }
	service := func(t time.Duration) time.Duration {
		s := float64(p.Light) * cond(t).Slow
		if rng.Float64() < heavyShare {
			s *= heavyFactor
		}
		s *= 1 + jitter*(2*rng.Float64()-1)
		return time.Duration(s)
	}
	end := func(t time.Duration, id int32, o Outcome) {
		c := &calls[id]
		c.state = 2
		inflight--
		lims[c.client].Release(t, c.handle, o)
		if !inWindow(t) {
			return
		}
		switch o {
		case Success:
			succ++
			recent[tick%len(recent)]++
			hist.add(t - c.admitted)
			switch c.class {
			case ClassCritical:
				critOK++
			case ClassSheddable:
				shedOK++
			}
		case Timeout:
			timedOut++
		}
	}
	startWork := func(t time.Duration) {
		workers := int(math.Floor(float64(p.Workers) * cond(t).Workers))
		for busy < workers && qhead < len(queue) {
			id := queue[qhead]
			qhead++
			c := &calls[id]
			if c.state != 1 { // its client gave up
				continue
			}
			busy++
			c.serving = true
			c.pending++
			push(t+service(t), evDone, id)
		}
		if qhead > 1024 && qhead*2 > len(queue) {
			queue = append(queue[:0], queue[qhead:]...)
			qhead = 0
		}
		if n := len(queue) - qhead; inWindow(t) && n > res.ServerQueued {
			res.ServerQueued = n
		}
	}
	nextArrival := func(t time.Duration) time.Duration {
		rate := sc.Load(t) * capacity
		if rate <= 0 {
			return t + 10*time.Millisecond
		}
		return t + time.Duration(rng.ExpFloat64()/rate*float64(time.Second))
	}

	push(nextArrival(0), evArrival, -1)
	push(0, evTick, -1)
	for h.Len() > 0 {
		ev := heap.Pop(&h).(event)
		t := ev.t
		if t >= sc.Duration {
			break
		}
		switch ev.kind {
		case evTick:
			limit := 0.0
			for _, l := range lims {
				limit += l.Limit()
			}
			recentCap[tick%len(recentCap)] = capAt(t)
			g := 0.0
			for i := range recent {
				g += float64(recent[i])
			}
			cs := 0.0
			for _, c := range recentCap {
				cs += c
			}
			if cs > 0 {
				g = g / 0.1 / (cs / float64(len(recentCap)))
			}
			res.Trace = append(res.Trace, Point{T: t, Limit: limit, InFlight: inflight, Goodput: g})
			tick++
			recent[tick%len(recent)] = 0
			if inWindow(t) {
				limitSum += limit
				capSum += capAt(t)
				capN++
			}
			startWork(t) // the number of workers may have grown
			push(t+10*time.Millisecond, evTick, -1)
		case evArrival:
			push(nextArrival(t), evArrival, -1)
			class := ClassNormal
			if sc.Critical != nil {
				class = ClassSheddable
				if rng.Float64() < sc.Critical(t) {
					class = ClassCritical
				}
			}
			client := int32(rng.IntN(clients))
			win := inWindow(t)
			if win {
				arrivals++
				switch class {
				case ClassCritical:
					critArr++
				case ClassSheddable:
					shedArr++
				}
			}
			handle, ok := lims[client].Acquire(t, class)
			if !ok {
				if win {
					rejected++
				}
				continue
			}
			var id int32
			if n := len(free); n > 0 {
				id = free[n-1]
				free = free[:n-1]
			} else {
				calls = append(calls, call{})
				id = int32(len(calls) - 1)
			}
			calls[id] = call{admitted: t, client: client, handle: handle, class: class, state: 1, pending: 1}
			inflight++
			if win {
				admitted++
				res.MaxInFlight = max(res.MaxInFlight, inflight)
			}
			push(t+p.Timeout, evTimeout, id)
			c := cond(t)
			switch {
			case c.BlackHole:
				// never answered: only the timeout ends it
			case rng.Float64() < c.FailFast:
				calls[id].fast = true
				calls[id].pending++
				push(t+time.Millisecond, evDone, id)
			default:
				queue = append(queue, id)
				startWork(t)
			}
		case evDone:
			c := &calls[ev.id]
			if c.serving {
				c.serving = false
				busy--
			}
			if c.state == 1 {
				o := Success
				if c.fast {
					o = Failure
				}
				end(t, ev.id, o)
			}
			if c.pending--; c.pending == 0 {
				free = append(free, ev.id)
			}
			startWork(t)
		case evTimeout:
			c := &calls[ev.id]
			if c.state == 1 {
				end(t, ev.id, Timeout)
			}
			if c.pending--; c.pending == 0 {
				free = append(free, ev.id)
			}
		}
	}
	secs := (sc.To - sc.From).Seconds()
	meanCap := capSum / float64(max(capN, 1))
	res.Goodput = float64(succ) / secs / meanCap
	res.Offered = float64(arrivals) / secs / meanCap
	res.P50, res.P99 = hist.quantile(0.5), hist.quantile(0.99)
	res.Rejected = ratio(rejected, arrivals)
	res.TimedOut = ratio(timedOut, admitted)
	res.CritSuccess = ratio(critOK, critArr)
	res.ShedSuccess = ratio(shedOK, shedArr)
	res.MeanLimit = limitSum / float64(max(capN, 1))
	res.Completed = succ
	return res
}

func ratio(a, b int) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}
