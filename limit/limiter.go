package limit

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

var _ bulwark.Policy = (*Limiter)(nil)

// Config configures a Limiter. The zero Config is valid and is what most
// services should use: the limit finds the capacity by itself.
type Config struct {
	// Name names the limiter in events and errors. Optional.
	Name string

	// InitialLimit is the limit before the first measurement. If zero, 20.
	InitialLimit int
	// MinLimit is the lowest limit, kept even when every call times out. If
	// zero, 1.
	MinLimit int
	// MaxLimit is the highest limit. If zero, 1000, or InitialLimit if that
	// is larger.
	MaxLimit int

	// Headroom reserves part of the limit for the more critical calls:
	// Normal calls may hold up to (1 − Headroom) of the limit, Sheddable
	// ones up to (1 − 2×Headroom), the reserved part rounded down, and
	// Critical ones all of it, so that under overload the sheddable calls go first and the
	// critical ones find room. In [0, 0.5); if zero, 0.1; a negative value
	// means no reserve.
	Headroom float64

	// TenantShare bounds the calls that one tenant (see WithTenant) may
	// hold to this fraction of the limit, rounded up, so that one tenant
	// cannot take the whole limit: a tenant over it is refused with
	// ReasonTenant. Calls without a tenant are not bounded. In [0, 1]; if
	// zero, 0.5; one means no bound.
	TenantShare float64

	// ProbeInterval is how often, while at least half the limit is in use,
	// the limiter halves its limit for one measurement window to measure the
	// latency without queueing (the baseline). It also probes at once after
	// two decreases in a row. If zero, 10 s; a negative value means only
	// after decreases.
	ProbeInterval time.Duration

	// Clock is the time source. If nil, the wall clock.
	Clock bulwark.Clock

	// Observer receives EventRejected for each call that Acquire or Do
	// refuses (Reason is the refusal's Reason; TryAcquire's refusals are
	// its caller's to report), EventLimitChanged when the limit moves, and
	// EventMisuse for a Permit ended twice, on the caller's goroutine and
	// never under the limiter's lock. If nil, no events and no cost.
	Observer bulwark.Observer
}

const (
	defaultInitialLimit  = 20
	defaultMaxLimit      = 1000
	defaultHeadroom      = 0.1
	defaultTenantShare   = 0.5
	defaultProbeInterval = 10 * time.Second

	minSamples = 32  // a window closes with at least this many samples…
	fewSamples = 8   // …or this many after maxWindow
	bufSize    = 256 // samples kept per window
	minWindow  = int64(time.Millisecond)
	maxWindow  = int64(time.Second)
)

// Limiter is an adaptive concurrency limit: it admits at most its limit of
// calls at once and refuses the others at once, and it moves the limit to
// follow the capacity of what it guards, measured from the latency of the
// calls and from their timeouts. See the package documentation for the
// algorithm.
//
// Admission takes a token without a lock; far from the limit it writes
// only the cache line of the caller's stripe (chosen by goroutine), so that
// cores rarely write the same line. The clock is read for a sample
// of the calls only (all of them at low rates, one in many at high rates),
// so that admitting a call costs less than reading the time.
//
// A Limiter is safe for concurrent use by multiple goroutines. Use New; the
// zero Limiter is not usable.
type Limiter struct {
	s     slots
	name  string
	clk   bulwark.Clock
	wall  bool
	base  time.Time
	obs   bulwark.Observer
	every atomic.Int64 // sample one call in every; a power of two
	since atomic.Int64 // samples of calls admitted before this (elapsed ns) are ignored
	_     [48]byte     // keeps every, read by each call, off the lines that samples write
	win   window
	p50   atomic.Int64 // the latest window's median latency, ns: RetryAfter
	minW  atomic.Int64 // the current minimum window, ns

	mu  sync.Mutex // guards ctl and the scratch buffers
	ctl control
	all [bufSize]int64
	oks [bufSize]int64
}

// window gathers the samples of one measurement window.
type window struct {
	start atomic.Int64 // elapsed ns
	n     atomic.Int64 // samples offered; the first bufSize are kept
	maxIn atomic.Int64 // the most calls in flight seen by a sampled call
	buf   [bufSize]atomic.Int64
}

// control is the state of the limit's controller.
type control struct {
	limit     float64
	min, max  float64
	baseline  int64 // ns: the median latency without queueing; 0 until measured
	step      float64
	decreases int     // in a row
	streak    float64 // the limit before the current run of decreases
	before    int64   // the latest window's median latency of successes, ns
	probing   bool
	saved     float64 // the limit to restore after the probe
	probeAt   int64   // wall ns: probe at the first window closed after it
	interval  int64   // ns, 0 for none
}

// New returns a Limiter configured by cfg, or an error wrapping
// ErrInvalidConfig that names the first invalid field.
func New(cfg Config) (*Limiter, error) {
	init, lo, hi := cfg.InitialLimit, cfg.MinLimit, cfg.MaxLimit
	if init == 0 {
		init = defaultInitialLimit
	}
	if lo == 0 {
		lo = 1
	}
	if hi == 0 {
		hi = max(defaultMaxLimit, init)
	}
	head, share, probe := cfg.Headroom, cfg.TenantShare, cfg.ProbeInterval
	switch {
	case head == 0:
		head = defaultHeadroom
	case head < 0:
		head = 0
	}
	if share == 0 {
		share = defaultTenantShare
	}
	switch {
	case probe == 0:
		probe = defaultProbeInterval
	case probe < 0:
		probe = 0
	}
	switch {
	case lo < 0:
		return nil, fmt.Errorf("%w: MinLimit %d must not be negative", ErrInvalidConfig, cfg.MinLimit)
	case hi < lo:
		return nil, fmt.Errorf("%w: MaxLimit %d must be at least MinLimit %d", ErrInvalidConfig, hi, lo)
	case init < lo || init > hi:
		return nil, fmt.Errorf("%w: InitialLimit %d must be within [MinLimit %d, MaxLimit %d]", ErrInvalidConfig, init, lo, hi)
	}
	if err := checkShares(head, share); err != nil {
		return nil, err
	}
	l := &Limiter{name: cfg.Name, clk: base.ClockOrWall(cfg.Clock), obs: cfg.Observer}
	l.wall = l.clk == bulwark.WallClock()
	l.base = l.clk.Now()
	l.s.init(int64(init), head, share)
	l.every.Store(1)
	l.minW.Store(minWindow)
	l.ctl = control{limit: float64(init), min: float64(lo), max: float64(hi), step: 1, interval: int64(probe)}
	l.ctl.probeAt = nextGrid(l.base.UnixNano(), l.ctl.interval)
	l.win.start.Store(1)
	return l, nil
}

// now returns the time since New in ns, at least 1.
func (l *Limiter) now() int64 {
	var d time.Duration
	if l.wall {
		d = time.Since(l.base)
	} else {
		d = l.clk.Since(l.base)
	}
	return int64(d) + 1
}

// Name returns Config.Name.
func (l *Limiter) Name() string { return l.name }

// Limit returns the limit in force: the number of calls that may hold a
// slot at once (Critical ones; see Config.Headroom for the others).
func (l *Limiter) Limit() int { return int(l.s.limit.Load()) }

// InFlight returns the number of calls holding a slot.
func (l *Limiter) InFlight() int { return int(l.s.inflight()) }

// Baseline returns the latency the limiter measured without queueing (the
// median of calls admitted at a low concurrency), or zero before its first
// measurement.
func (l *Limiter) Baseline() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Duration(l.ctl.baseline)
}

// Acquire admits one call, with the criticality and tenant that ctx carries
// (WithCriticality, WithTenant), or refuses it at once: it never waits. On
// success the Permit must be ended with Done (or Drop) once the call is
// over. On refusal the error is a *RejectedError wrapping ErrRejected, whose
// RetryAfter is about one call's latency. Acquire allocates nothing unless
// it refuses.
func (l *Limiter) Acquire(ctx context.Context) (Permit, error) {
	info := infoFrom(ctx)
	tenant := ""
	if l.s.tenants != nil && info.tenant != "" {
		if !l.s.tenants.acquire(info.tenant, l.s.tenantCap()) {
			return Permit{}, l.reject(ctx, ReasonTenant, info)
		}
		tenant = info.tenant
	}
	hint := stackHint()
	n, ok := l.s.take(info.crit.level(), hint)
	if !ok {
		if tenant != "" {
			l.s.tenants.release(tenant)
		}
		return Permit{}, l.reject(ctx, ReasonLimit, info)
	}
	// Sample one call in every: counted by the stripe's cache when the
	// token came from there (no extra write), by its countdown otherwise.
	var start int64
	if n >= 0 {
		if n&(l.every.Load()-1) == 0 {
			start = l.sample()
		}
	} else if st := &l.s.stripes[hint&l.s.mask]; st.countdown.Add(-1) <= 0 {
		st.countdown.Store(l.every.Load())
		start = l.sample()
	}
	// Built in the return statement: a Permit built in a variable and then
	// copied out costs a store-forwarding stall.
	return Permit{l: l, tenant: tenant, start: start, stripe: uint32(hint & l.s.mask)}, nil
}

// sample starts the measurement of a sampled call: it returns the time and
// notes the calls in flight.
func (l *Limiter) sample() int64 {
	in := l.s.inflight()
	for m := l.win.maxIn.Load(); in > m && !l.win.maxIn.CompareAndSwap(m, in); m = l.win.maxIn.Load() {
	}
	return l.now()
}

func (l *Limiter) reject(ctx context.Context, r Reason, info callInfo) error {
	err := &RejectedError{Name: l.name, Reason: r, Criticality: info.crit, Tenant: info.tenant, retryAfter: time.Duration(l.p50.Load())}
	if l.obs != nil {
		base.ObserveContext(ctx, l.obs, bulwark.Event{Kind: bulwark.EventRejected, Component: bulwark.ComponentLimiter, Name: l.name, Err: err, Reason: r.String()})
	}
	return err
}

func (l *Limiter) release(p *Permit, o outcome) {
	if p.tenant != "" {
		l.s.tenants.release(p.tenant)
	}
	l.s.put(uint(p.stripe))
	if p.start != 0 && o <= outcomeDrop {
		l.record(p.start, o == outcomeDrop)
	}
}

// record adds a sampled call's latency to the window, and closes the window
// when it is due.
func (l *Limiter) record(start int64, drop bool) {
	now := l.now()
	if start < l.since.Load() {
		return // admitted before the limit last fell: it measures the old limit
	}
	lat := max(now-start, 1)
	w := &l.win
	i := w.n.Add(1) - 1
	if i < bufSize {
		if drop {
			lat = -lat
		}
		w.buf[i].Store(lat)
	}
	n, age := i+1, now-w.start.Load()
	need := max(fewSamples, min(minSamples, 4*l.s.limit.Load()))
	if (n >= need && age >= l.minW.Load()) || (n >= fewSamples && age >= max(maxWindow, 4*l.minW.Load())) {
		l.update(now)
	}
}

// Do runs op if the limiter admits it (see Acquire) and ends its Permit with
// op's error (see Permit.Done). It returns op's error, or the refusal
// without running op. If op panics, the call is ended as a failure and the
// panic goes on. Do satisfies bulwark.Policy.
func (l *Limiter) Do(ctx context.Context, op func(context.Context) error) error {
	p, err := l.Acquire(ctx)
	if err != nil {
		return err
	}
	finished := false
	defer func() {
		if !finished { // op panicked (or called runtime.Goexit); the panic goes on
			l.release(&p, outcomeFailure)
		}
	}()
	err = op(ctx)
	finished = true
	l.release(&p, classify(err))
	return err
}

// update closes the window and moves the limit. Only one goroutine runs it
// at a time; the others go on without waiting.
func (l *Limiter) update(now int64) {
	if !l.mu.TryLock() {
		return
	}
	w := &l.win
	n := w.n.Load()
	if n < fewSamples { // another goroutine closed the window just now
		l.mu.Unlock()
		return
	}
	kept := min(n, bufSize)
	all, oks := l.all[:0], l.oks[:0]
	drops := 0
	for i := range kept {
		v := w.buf[i].Load()
		if v < 0 {
			drops++
			all = append(all, -v)
			continue
		}
		all = append(all, v)
		oks = append(oks, v)
	}
	maxIn := w.maxIn.Swap(0)
	w.n.Store(0)
	w.start.Store(now)
	slices.Sort(all)
	p50 := all[len(all)/2]
	okP50 := int64(0)
	if len(oks) >= fewSamples/2 {
		slices.Sort(oks)
		okP50 = oks[len(oks)/2]
	}
	l.p50.Store(p50)
	// Keep between 64 and 128 samples a window: at high rates the clock is
	// read for fewer calls.
	switch e := l.every.Load(); {
	case n > 4*minSamples && e < 1<<20:
		l.every.Store(2 * e)
	case n < 2*minSamples && e > 1:
		l.every.Store(e / 2)
	}
	reason := l.ctl.decide(l.base.UnixNano()+now, p50, okP50, float64(drops)/float64(kept), float64(maxIn))
	eff := l.ctl.limit
	if l.ctl.probing {
		eff = max(l.ctl.min, math.Floor(l.ctl.limit/2))
	}
	if reason == "decrease" || reason == "drop" || reason == "probe" || reason == "restore" {
		l.since.Store(now)
	}
	if b := l.ctl.baseline; b > 0 {
		l.minW.Store(max(minWindow, 2*b))
	}
	tokens := int64(math.Round(eff))
	changed := tokens != l.s.limit.Load()
	if changed {
		l.s.setLimit(tokens)
	}
	baseline := l.ctl.baseline
	l.mu.Unlock()
	if changed && l.obs != nil {
		l.obs.Observe(bulwark.Event{Kind: bulwark.EventLimitChanged, Component: bulwark.ComponentLimiter, Name: l.name,
			Limit: int(tokens), Latency: time.Duration(baseline), Reason: reason})
	}
}

// decide moves the limit after a window whose calls had the median latency
// p50 (successes and timeouts; okP50 of the successes alone, 0 if too few),
// a share drops of timeouts, and at most maxIn calls in flight; wall is the
// clock's wall time in ns, which aligns probes. It returns why the limit
// moved: "increase", "decrease", "drop", "probe", "restore", or "" when it
// did not.
func (c *control) decide(wall, p50, okP50 int64, drops, maxIn float64) string {
	if c.probing {
		// The window measured calls admitted at half the limit. If their
		// latency did not fall with the concurrency, it is the latency
		// without queueing: the callee got slower, not busier, and the
		// decreases that led here were wrong.
		c.probing = false
		c.decreases = 0
		c.probeAt = nextGrid(wall, c.interval)
		restore := c.saved
		switch {
		case okP50 <= 0:
		case okP50 < c.baseline:
			c.baseline = okP50
		case c.before > 0 && 10*okP50 >= 9*c.before:
			c.baseline = okP50
			restore = max(restore, c.streak)
		}
		c.limit = restore
		return "restore"
	}
	if okP50 > 0 {
		c.before = okP50
		if c.baseline == 0 || okP50 < c.baseline {
			c.baseline = okP50
		}
	}
	if c.baseline == 0 {
		return ""
	}
	limit := c.limit
	// q estimates the calls queued in the callee: the share of the latency
	// above the baseline, times the limit (Little's law, as TCP Vegas). It
	// is kept between a sixth and a quarter of the limit: enough
	// queued calls that the callee never idles, few enough that they add
	// little latency. As fractions of the limit, the bounds mean the same
	// latency to every limiter that shares a callee, so that many clients
	// together keep one short queue.
	q := 0.0
	if p50 > c.baseline {
		q = limit * (1 - float64(c.baseline)/float64(p50))
	}
	alpha, beta := limit/6, limit/4
	reason := ""
	switch {
	case q > beta || drops >= 0.1:
		if c.decreases == 0 {
			// Remember where the limit stood, to come back there fast.
			// Timeouts say nothing of the capacity (a black hole): keep
			// the higher limit from before them.
			if drops >= 0.1 {
				c.streak = max(c.streak, limit)
			} else {
				c.streak = limit
			}
		}
		c.decreases++
		c.step = 1
		next := limit
		if q > beta {
			next = limit - (q - (alpha+beta)/2)
			reason = "decrease"
		}
		if drops >= 0.1 && limit*0.9 < next {
			next = limit * 0.9
			reason = "drop"
		}
		limit = max(next, limit/2)
	case q < alpha:
		c.decreases = 0
		if 4*maxIn >= 3*limit { // the limit is in use: probe for more
			// Below the limit that held before the last decreases, the
			// step doubles each window, as TCP's slow start below its
			// threshold; above it, the limit grows by a twentieth.
			if limit < c.streak {
				limit = min(limit+c.step, c.streak)
				c.step *= 2
			} else {
				limit += max(1, limit/20)
			}
			reason = "increase"
		} else {
			c.step = 1
		}
	default:
		c.decreases = 0
		c.step = 1
	}
	limit = min(max(limit, c.min), c.max)
	c.limit = limit
	if c.decreases >= 2 && c.interval > 0 {
		// Probe soon, at the same moment as every other limiter of the
		// callee that saw the same rise: a finer grid.
		c.probeAt = min(c.probeAt, nextGrid(wall, c.interval/8))
	}
	if c.interval > 0 && wall >= c.probeAt && (2*maxIn >= limit || c.decreases >= 2) {
		c.probing = true
		c.saved = limit
		return "probe"
	}
	return reason
}

// nextGrid returns the first multiple of step after t.
func nextGrid(t, step int64) int64 {
	if step <= 0 {
		return math.MaxInt64
	}
	return (t/step + 1) * step
}
