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
	// critical ones find room; the limit grows to keep the callee busy all
	// the same. In [0, 0.5); if zero, 0.1; a negative value means no
	// reserve.
	Headroom float64

	// TenantShare bounds the calls that one tenant (see WithTenant) may
	// hold to this fraction of the limit, rounded up, so that one tenant
	// cannot take the whole limit: a tenant over it is refused with
	// ReasonTenant. Calls without a tenant are not bounded. In [0, 1]; if
	// zero, 0.5; one means no bound.
	TenantShare float64

	// ProbeInterval is how often, while at least half the limit is in use,
	// the limiter halves its limit for one short measurement window to
	// measure the latency without queueing (the baseline). Probes start on
	// a grid of the clock's wall time, the same for every Limiter with the
	// same interval. If zero, 10 s; a negative value means no probes (the
	// baseline then rises only when decreases take the limit to a quarter
	// and the latency does not fall).
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

	minSamples    = 32  // the sampling keeps 2 to 4 times this many samples a window at high rates
	windowSamples = 56  // a window closes with this many samples…
	probeSamples  = 24  // …a probe's window with this many…
	fewSamples    = 8   // …or with this many after maxWindow
	bufSize       = 256 // samples kept per window
	minWindow     = int64(time.Millisecond)
	maxWindow     = int64(time.Second)

	minTarget = 0.1  // the queue share aimed at while most calls are refused…
	maxTarget = 0.3  // …and while none is
	dropShare = 0.25 // a window with this share of timeouts lowers the limit
	minGain   = 0.05 // the power of the latency ratio by which the limit moves for small errors…
	maxGain   = 0.5  // …and for errors of gainSpan and more
	gainSpan  = 0.25
)

// Limiter is an adaptive concurrency limit: it admits at most its limit of
// calls at once and refuses the others at once, and it moves the limit to
// follow the capacity of what it guards, measured from the latency of the
// calls and from their timeouts, as follows.
//
// A Limiter measures the median latency of a sample of its calls over short
// windows (at least twice the baseline and 1 ms, with 56 samples, fewer
// below a limit of 14) and compares it with its baseline, the median
// latency without queueing. From the two it estimates, as TCP Vegas and
// Netflix's Vegas limit do, the share of the latency spent queueing,
// q = 1 − baseline ÷ median: q × limit calls wait in the callee. After each
// window the limit moves toward the queue share m that it aims at, as a
// gradient with a fixed reference: it is multiplied by
// ((1 − q) ÷ (1 − m))^k, where k grows with the error from 0.05 to 0.5, so
// that the noise of one window barely moves the limit and a step moves it
// at once (by half at most). The limit grows only while three-quarters of
// it is in use, and then by at least one call a window when nothing
// queues.
//
// The target m depends on the share of the calls refused: a tenth while
// most are refused, where every queued call adds latency and no
// throughput, up to three tenths as the refusals vanish, where a few queued
// calls keep the callee busy between bursts of arrivals. Targets relative
// to the limit mean the same latency to every limiter: ten clients that
// share a server keep one short queue together, not ten.
//
// The baseline is the weak point of every latency-based limiter, and the
// algorithm is chosen around it:
//
//   - Netflix's Gradient2 and failsafe-go's adaptive limiter compare with a
//     moving average of past latencies. During a long overload the average
//     absorbs the queueing delay, the gradient returns to one and the limit
//     creeps up: the baseline drift their users tune against.
//   - Envoy's gradient controller re-measures its minimum latency every
//     minute or so by dropping to a few calls in flight, which costs
//     throughput each time and leaves the limit wrong in between.
//
// A Limiter's baseline falls on its own to a lower median that holds for
// three windows in a row: one lucky window does not move it. It rises only
// on evidence that the latency is not queueing:
//
//   - A probe. Every ProbeInterval (10 s), while at least half the limit is
//     in use, the limit is halved for one short window (24 samples), so
//     that the callee's queue drains; the calls admitted before it drained
//     are not measured. If their median did not fall with the concurrency,
//     and the latency had held over the windows before, it is the latency
//     without queueing and becomes the baseline. If it fell, the queueing
//     was ours: the baseline stays, refreshed by the median when that is
//     lower, or at most a fifth higher; and if the calls queued even at
//     half the limit, the limit comes back lower than it was.
//   - The decreases themselves: when a run of decreases has taken the limit
//     to a quarter of where it started and the latency did not fall, the
//     latency becomes the baseline.
//
// When the baseline rises by half or more (the callee got slower, not
// busier: a dependency ten times slower), the limit climbs back by doubling
// steps toward where it stood before the decreases, instead of collapsing.
// The next windows check a rise: if the calls queue at once at the same
// limit, the capacity fell while it was measured, and the old baseline
// comes back. Probes start on a grid of the clock's wall time, the same on
// every instance, with the first sampled call after their moment rather
// than at the end of a window, so that client-side limiters sharing a
// server halve their limits together, drain its queue, and all see its
// true baseline.
//
// A window where a quarter of the calls time out lowers the limit by a
// tenth (more if the latency says so, half at most); after a black hole
// (half of them), the limit climbs back by doubling steps to where it stood
// before, as soon as calls succeed again. Failures that are not timeouts
// are not measured, so that fast failures neither lower the baseline nor
// make the limit collapse; calls canceled by their callers teach nothing;
// timeouts count at their full latency (see [Permit.Done]).
//
// The simulation in the repository's benchmarks module (cmd/limitsim)
// compares this with failsafe-go's limiter, Gradient2 and the best fixed
// limit in hindsight over eleven scenarios; BENCHMARKS.md has the figures.
//
// Admission takes a token without a lock; far from the limit it writes
// only the cache line of the caller's stripe (chosen by goroutine), so that
// cores rarely write the same line. The clock is read for a sample
// of the calls only: for one call in every n, with n chosen each window to
// keep 64 to 128 samples at high rates (all of them at low rates), so that
// admitting a call costs less than reading the time.
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
	slow  atomic.Int64 // a sample at least this long (ns) counts as slow: four times the baseline
	due   atomic.Int64 // elapsed ns at which a probe is due; MaxInt64 for none
	probe atomic.Bool  // a probe is under way: its window closes sooner
	_     [64]byte     // keeps rej, written by refused calls, off the lines that samples read
	rej   atomic.Int64 // calls refused for the limit in the current window
	_     [56]byte

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
	slow  atomic.Int64 // samples at least four times the baseline
	buf   [bufSize]atomic.Int64
}

// control is the state of the limit's controller.
type control struct {
	limit    float64
	min, max float64
	baseline int64    // ns: the median latency without queueing; 0 until measured
	recent   [3]int64 // the latest windows' medians of successes, ns: a ring
	nrecent  int
	before   int64   // the latest window's median latency of successes, ns
	share    float64 // the share of the calls admitted, smoothed over windows
	target   float64 // the queue share the limit aims at
	run      float64 // the limit before the current run of decreases; 0 for none
	runQ     float64 // the queue share in the first window of that run
	ss       float64 // slow start: the limit doubles each window up to this; 0 for none
	old      int64   // the baseline before it last rose, while that rise is checked; 0 for none
	checks   int     // windows left to check it
	probing  bool
	saved    float64 // the limit to restore after the probe
	probeAt  int64   // wall ns: probe at the first window closed after it
	interval int64   // ns, 0 for none
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
	l.ctl = control{limit: float64(init), min: float64(lo), max: float64(hi), interval: int64(probe), share: 1}
	l.ctl.probeAt = nextGrid(l.base.UnixNano(), l.ctl.interval)
	l.win.start.Store(1)
	l.slow.Store(math.MaxInt64)
	l.setDue()
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
	if r == ReasonLimit {
		l.rej.Add(1)
	}
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
	if now >= l.due.Load() {
		l.probeDue(now)
	}
	if start < l.since.Load() {
		return // admitted before the limit last moved: it measures the old limit
	}
	lat := max(now-start, 1)
	w := &l.win
	i := w.n.Add(1) - 1
	if i < bufSize {
		if drop {
			lat = -lat
		} else if lat >= l.slow.Load() {
			w.slow.Add(1)
		}
		w.buf[i].Store(lat)
	}
	n, age := i+1, now-w.start.Load()
	most := int64(windowSamples)
	if l.probe.Load() {
		most = probeSamples // the probe costs throughput: it ends sooner
	}
	need := max(fewSamples, min(most, 4*l.s.limit.Load()))
	// A window also closes early when nearly all its calls took four
	// times the baseline: the queue is long, no need to wait.
	if (n >= need && age >= l.minW.Load()) || (n >= fewSamples && (age >= max(maxWindow, 4*l.minW.Load()) || w.slow.Load() >= n-1)) {
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
	rej := l.rej.Swap(0)
	adm := n * l.every.Load()
	w.slow.Store(0)
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
	wall := l.base.UnixNano() + now
	c := &l.ctl
	var reason string
	dropped := float64(drops) / float64(kept)
	if c.probing {
		reason = c.endProbe(wall, p50, okP50, dropped)
	} else {
		c.share += (float64(adm)/float64(adm+rej) - c.share) / 4
		reason = c.decide(wall, p50, okP50, dropped, float64(maxIn))
	}
	l.apply(now, reason)
}

// apply puts the controller's decision in force and releases mu.
func (l *Limiter) apply(now int64, reason string) {
	c := &l.ctl
	switch reason {
	case "probe":
		// Calls admitted before the queue drained measure it, not the
		// callee: their samples are ignored.
		l.since.Store(now + max(0, c.before-c.baseline))
	case "restore", "drop":
		l.since.Store(now)
	case "decrease":
		if c.limit < 0.8*float64(l.s.limit.Load()) {
			l.since.Store(now)
		}
	}
	l.probe.Store(c.probing)
	l.setDue()
	if c.baseline > 0 {
		l.minW.Store(max(minWindow, 2*c.baseline))
		l.slow.Store(4 * c.baseline)
	}
	eff := c.limit
	if c.probing {
		eff = max(c.min, math.Floor(c.limit/2))
	}
	tokens := int64(math.Round(eff))
	changed := tokens != l.s.limit.Load()
	if changed {
		l.s.setLimit(tokens)
	}
	baseline := c.baseline
	l.mu.Unlock()
	if changed && l.obs != nil {
		l.obs.Observe(bulwark.Event{Kind: bulwark.EventLimitChanged, Component: bulwark.ComponentLimiter, Name: l.name,
			Limit: int(tokens), Latency: time.Duration(baseline), Reason: reason})
	}
}

// setDue publishes when the next probe is due. Callers hold mu.
func (l *Limiter) setDue() {
	if c := &l.ctl; !c.probing && c.probeAt != math.MaxInt64 {
		l.due.Store(c.probeAt - l.base.UnixNano())
		return
	}
	l.due.Store(math.MaxInt64)
}

// probeDue starts a probe at its time, without waiting for the window to
// close, so that the limiters sharing a callee halve their limits together.
func (l *Limiter) probeDue(now int64) {
	if !l.mu.TryLock() {
		return
	}
	c := &l.ctl
	if now < l.due.Load() || c.probing || !c.probeNow(float64(l.win.maxIn.Load())) {
		l.due.Store(math.MaxInt64) // the window's close decides
		l.mu.Unlock()
		return
	}
	w := &l.win
	w.maxIn.Store(0)
	w.slow.Store(0)
	w.n.Store(0)
	w.start.Store(now)
	l.apply(now, "probe")
}

// probeNow starts a probe if at least half the limit is in use, and reports
// whether it did.
func (c *control) probeNow(maxIn float64) bool {
	if 2*maxIn < c.limit {
		return false
	}
	c.probing = true
	c.saved = c.limit
	return true
}

// endProbe ends the probe whose calls, admitted at half the limit, had the
// median latency p50 (okP50 of the successes alone, 0 if too few) and a
// share drops of timeouts, and restores the limit.
func (c *control) endProbe(wall, p50, okP50 int64, drops float64) string {
	c.probing = false
	c.probeAt = nextGrid(wall, c.interval)
	c.limit = c.saved
	b := c.baseline
	slower := false
	switch {
	case okP50 <= 0 || b == 0:
	case 5*okP50 >= 6*b && 2*okP50 >= b+c.before && c.steady(len(c.recent)) && 10*okP50 >= 9*c.before && 20*okP50 <= 21*c.before:
		// The latency did not fall with the concurrency, as it would
		// have if the calls had queued, and it held before the probe:
		// it is the latency without queueing. The callee got slower,
		// not busier; if much slower, the decreases that led here were
		// wrong, and the limit climbs back.
		slower = true
		c.rise(okP50)
	case 20*okP50 >= 19*b && 5*okP50 < 6*b && okP50 <= slices.Max(c.recent[:]) && c.steady(len(c.recent)):
		c.baseline = okP50 // a fresh measure of the same baseline
	case 20*okP50 < 19*b:
		c.baseline = okP50 // the callee got faster
	}
	if !slower && drops < dropShare && p50 > c.baseline {
		// The calls queued even at half the limit: the limit is too
		// high, probe or not.
		if q := 1 - float64(c.baseline)/float64(p50); q > c.target && q >= 0.4 {
			if c.run == 0 {
				c.run, c.runQ = c.saved, q
			}
			c.limit = min(c.saved, max(c.min, math.Floor(c.saved/2)*max(0.5, c.factor(q))))
		}
	}
	return "restore"
}

// rise makes okP50, a latency measured without queueing above the baseline,
// the new baseline. If it is half as long again, the limit climbs back by
// doubling steps toward where it stood before the decreases that the old
// baseline caused. The next windows check the rise.
func (c *control) rise(okP50 int64) {
	if 2*okP50 >= 3*c.baseline && c.run > 0 {
		c.limit = max(c.limit, c.run/2)
		c.ss = max(c.ss, c.run)
	}
	c.old, c.checks = c.baseline, 3
	c.saved = c.limit
	c.baseline = okP50
	c.run = 0
	c.nrecent = 0 // the windows before measured the old baseline
}

// steady reports whether the median latency held within a half for the
// latest n windows.
func (c *control) steady(n int) bool {
	if c.nrecent < n {
		return false
	}
	lo, hi := int64(math.MaxInt64), int64(0)
	for i := range n {
		v := c.recent[(c.nrecent-1-i)%len(c.recent)]
		lo, hi = min(lo, v), max(hi, v)
	}
	return 2*hi <= 3*lo
}

// factor returns by how much the limit moves after a window whose queue
// share was q: toward the latency baseline ÷ (1 − target), by a power of
// the ratio that grows with the error, so that noise barely moves the
// limit and a step moves it at once.
func (c *control) factor(q float64) float64 {
	k := minGain + (maxGain-minGain)*min(1, math.Abs(q-c.target)/gainSpan)
	return math.Pow((1-q)/(1-c.target), k)
}

// decide moves the limit after a window whose calls had the median latency
// p50 (successes and timeouts; okP50 of the successes alone, 0 if too few),
// a share drops of timeouts, and at most maxIn calls in flight; wall is the
// clock's wall time in ns, which aligns probes. It returns why the limit
// moved: "increase", "decrease", "drop", "probe", "restore", or "" when it
// did not.
func (c *control) decide(wall, p50, okP50 int64, drops, maxIn float64) string {
	if okP50 > 0 {
		c.before = okP50
		c.recent[c.nrecent%len(c.recent)] = okP50
		c.nrecent++
		// The baseline falls on its own to a lower latency that holds for
		// three windows in a row: one lucky window does not move it.
		if c.baseline == 0 {
			c.baseline = okP50
		} else if c.nrecent >= len(c.recent) {
			if m := slices.Max(c.recent[:]); m < c.baseline {
				c.baseline = m
			}
		}
	}
	b := c.baseline
	if b == 0 {
		return ""
	}
	if c.old > 0 {
		// Just after the baseline rose: if the calls queue at once at
		// the same limit, the latency measured did not come from a
		// slower callee (its capacity fell meanwhile): the old
		// baseline holds.
		c.checks--
		switch {
		case 2*p50 >= 3*b && 4*c.limit <= 5*c.saved:
			c.baseline, b, c.ss, c.old = c.old, c.old, 0, 0
		case c.checks <= 0:
			c.old = 0
		}
	}
	// The target queue share: a tenth of the latency while most calls
	// are refused (every queued call adds latency and no throughput), up
	// to three tenths as the overload vanishes (a few queued calls keep
	// the callee busy between bursts).
	c.target = max(minTarget, maxTarget*c.share)
	// q is the share of the latency spent queueing: q × limit calls wait
	// in the callee (Little's law, as TCP Vegas).
	q := 0.0
	if p50 > b {
		q = 1 - float64(b)/float64(p50)
	}
	limit := c.limit
	prev := limit
	f := c.factor(q)
	reason := ""
	switch {
	case drops >= dropShare:
		if c.run == 0 {
			c.run, c.runQ = limit, q
		}
		if drops >= 0.5 {
			c.ss = max(c.ss, c.run) // a black hole: come back to the limit before it
		}
		limit = max(limit/2, min(0.9*limit, f*limit))
		reason = "drop"
	case q > c.target:
		if c.run == 0 {
			c.run, c.runQ = limit, q
		}
		limit *= max(0.5, f)
		reason = "decrease"
	case 4*maxIn >= 3*limit: // in use
		if limit < c.ss {
			limit = min(2*limit, c.ss)
		} else {
			c.ss = 0
			// At least one call more when nothing queues, so that a
			// small limit does not take long to grow.
			limit = max(limit*f, limit+(c.target-q)/c.target)
		}
		reason = "increase"
	}
	if reason != "decrease" && reason != "drop" {
		c.run = 0
	}
	if limit >= c.ss {
		c.ss = 0
	}
	c.limit = min(max(limit, c.min), c.max)
	if c.run > 0 && drops < dropShare && okP50 > 0 && prev <= c.run/4 && q >= 0.9*c.runQ && c.steady(2) && 20*okP50 >= 21*b {
		// The limit fell to a quarter and the latency did not: it was
		// not queueing.
		c.rise(okP50)
		return "restore"
	}
	if wall >= c.probeAt && c.probeNow(maxIn) {
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
