package limitsim

import (
	"context"
	"math"
	"reflect"
	"time"
	"unsafe"

	"github.com/failsafe-go/failsafe-go/adaptivelimiter"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/limit"
)

// Epoch is the simulated wall time at the start of every run.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Clock is simulated time, as a bulwark.Clock and as failsafe-go's clock: the
// event loop sets T before each call into a limiter. Timers are not
// simulated: the contenders never wait.
type Clock struct{ T time.Duration }

var _ bulwark.Clock = (*Clock)(nil)

func (c *Clock) Now() time.Time                  { return Epoch.Add(c.T) }
func (c *Clock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c *Clock) NewTimer(time.Duration) bulwark.Timer {
	panic("limitsim: the simulated clock has no timers")
}
func (c *Clock) AfterFunc(time.Duration, func()) bulwark.Timer {
	panic("limitsim: the simulated clock has no timers")
}

// Fixed is a fixed concurrency limit: the oracle, at the best limit in
// hindsight.
type Fixed struct {
	N, inflight int
}

func (f *Fixed) Acquire(time.Duration, Class) (int, bool) {
	if f.inflight >= f.N {
		return 0, false
	}
	f.inflight++
	return 0, true
}
func (f *Fixed) Release(time.Duration, int, Outcome) { f.inflight-- }
func (f *Fixed) Limit() float64                      { return float64(f.N) }

// None admits everything.
type None struct{}

func (None) Acquire(time.Duration, Class) (int, bool) { return 0, true }
func (None) Release(time.Duration, int, Outcome)      {}
func (None) Limit() float64                           { return math.NaN() }

// Bulwark is package limit's adaptive Limiter with its default Config.
type Bulwark struct {
	clk     *Clock
	l       *limit.Limiter
	permits []limit.Permit
	free    []int
	ctx     [3]context.Context
}

// NewBulwark returns the contender; cfg's Clock is replaced.
func NewBulwark(cfg limit.Config) *Bulwark {
	b := &Bulwark{clk: &Clock{}}
	cfg.Clock = b.clk
	l, err := limit.New(cfg)
	if err != nil {
		panic(err)
	}
	b.l = l
	b.ctx[ClassNormal] = context.Background()
	b.ctx[ClassCritical] = limit.WithCriticality(context.Background(), limit.Critical)
	b.ctx[ClassSheddable] = limit.WithCriticality(context.Background(), limit.Sheddable)
	return b
}

// Limiter returns the limiter under test.
func (b *Bulwark) Limiter() *limit.Limiter { return b.l }

func (b *Bulwark) Acquire(now time.Duration, c Class) (int, bool) {
	b.clk.T = now
	p, err := b.l.Acquire(b.ctx[c])
	if err != nil {
		return 0, false
	}
	var h int
	if n := len(b.free); n > 0 {
		h = b.free[n-1]
		b.free = b.free[:n-1]
		b.permits[h] = p
	} else {
		b.permits = append(b.permits, p)
		h = len(b.permits) - 1
	}
	return h, true
}

func (b *Bulwark) Release(now time.Duration, h int, o Outcome) {
	b.clk.T = now
	p := &b.permits[h]
	switch o {
	case Success:
		p.Done(nil)
	case Failure:
		p.Done(errFast)
	case Timeout:
		p.Done(context.DeadlineExceeded)
	}
	b.free = append(b.free, h)
}

// Limit returns the limit that normal calls see: the Limiter's limit less
// the default Headroom (a tenth, rounded down) that it keeps for critical
// calls. That is what compares with a fixed limit.
func (b *Bulwark) Limit() float64 {
	n := b.l.Limit()
	return float64(n - n/10)
}

type fastError struct{}

func (fastError) Error() string { return "fast failure" }

var errFast error = fastError{}

// Failsafe is failsafe-go's adaptivelimiter with its defaults, used as its
// executor uses it: a permit per call, Record at the end, Drop when the
// call was abandoned. failsafe-go reads the wall clock in its permits and at
// Build; Failsafe sets those readings to simulated time through reflection,
// and changes nothing else.
type Failsafe struct {
	clk     *Clock
	l       adaptivelimiter.AdaptiveLimiter[any]
	permits []adaptivelimiter.Permit
	free    []int
}

// NewFailsafe returns the contender.
func NewFailsafe() *Failsafe {
	f := &Failsafe{clk: &Clock{}, l: adaptivelimiter.NewWithDefaults[any]()}
	setField(reflect.ValueOf(f.l).Elem(), "nextUpdateTime", reflect.ValueOf(Epoch))
	return f
}

func setField(v reflect.Value, name string, x reflect.Value) {
	fv := v.FieldByName(name)
	if !fv.IsValid() {
		panic("limitsim: failsafe-go has no field " + name)
	}
	reflect.NewAt(fv.Type(), unsafe.Pointer(fv.UnsafeAddr())).Elem().Set(x)
}

func (f *Failsafe) Acquire(now time.Duration, _ Class) (int, bool) {
	f.clk.T = now
	p, ok := f.l.TryAcquirePermit()
	if !ok {
		return 0, false
	}
	pv := reflect.ValueOf(p).Elem()
	setField(pv, "startTime", reflect.ValueOf(f.clk.Now()))
	setField(pv, "clock", reflect.ValueOf(f.clk))
	var h int
	if n := len(f.free); n > 0 {
		h = f.free[n-1]
		f.free = f.free[:n-1]
		f.permits[h] = p
	} else {
		f.permits = append(f.permits, p)
		h = len(f.permits) - 1
	}
	return h, true
}

func (f *Failsafe) Release(now time.Duration, h int, o Outcome) {
	f.clk.T = now
	if o == Timeout {
		f.permits[h].Drop()
	} else {
		f.permits[h].Record()
	}
	f.permits[h] = nil
	f.free = append(f.free, h)
}

func (f *Failsafe) Limit() float64 { return float64(f.l.Limit()) }

// Gradient2 is Netflix concurrency-limits' Gradient2Limit as its Java code
// describes it, updated on every sample as its AbstractLimiter does, with
// its defaults (initial limit 20, queue size 4, smoothing 0.2, long window
// 600 samples) except a minimum limit of 1 instead of 20, which would be above
// this server's capacity.
type Gradient2 struct {
	limit, longRTT float64
	n              int // samples in longRTT
	inflight       int
	starts         []time.Duration
	infl           []int
	free           []int
}

func NewGradient2() *Gradient2 { return &Gradient2{limit: 20} }

func (g *Gradient2) Acquire(now time.Duration, _ Class) (int, bool) {
	if g.inflight >= int(g.limit) {
		return 0, false
	}
	g.inflight++
	var h int
	if n := len(g.free); n > 0 {
		h = g.free[n-1]
		g.free = g.free[:n-1]
		g.starts[h], g.infl[h] = now, g.inflight
	} else {
		g.starts = append(g.starts, now)
		g.infl = append(g.infl, g.inflight)
		h = len(g.starts) - 1
	}
	return h, true
}

func (g *Gradient2) Release(now time.Duration, h int, o Outcome) {
	g.inflight--
	g.free = append(g.free, h)
	if o != Success { // onIgnore for failures; a drop is passed with didDrop, which Gradient2 ignores
		if o == Failure {
			return
		}
	}
	rtt := float64(now - g.starts[h])
	const window, warmup = 600.0, 10
	if g.n < warmup {
		g.n++
		g.longRTT += (rtt - g.longRTT) / float64(g.n)
	} else {
		g.longRTT = g.longRTT*(1-2/(window+1)) + rtt*2/(window+1)
	}
	short := rtt
	if g.longRTT/short > 2 {
		g.longRTT *= 0.9
	}
	if float64(g.infl[h]) < g.limit/2 {
		return
	}
	grad := math.Max(0.5, math.Min(1, g.longRTT/short))
	next := g.limit*grad + 4
	next = g.limit*0.8 + next*0.2
	g.limit = math.Max(1, math.Min(200, next))
}

func (g *Gradient2) Limit() float64 { return math.Floor(g.limit) }
