package healthcheck

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
	"github.com/bulwark-go/bulwark/internal/notify"
)

// Probe checks one endpoint once. It returns nil if ep is healthy. It must
// return soon after ctx is done: ctx ends at the probe timeout, and when the
// Checker closes. A Probe is called from several goroutines at once, for
// different endpoints.
type Probe func(ctx context.Context, ep bulwark.Endpoint) error

// State is the health of an endpoint as a Checker sees it.
type State uint8

// The states of an endpoint.
const (
	// Unknown: no probe has finished yet. A balancer that the Checker
	// reports to neither picks such an endpoint (unless none is eligible) nor
	// counts it as failing: it is pending.
	Unknown State = iota
	// Healthy: the first probe succeeded, or Rise probes in a row did since
	// the endpoint was Unhealthy.
	Healthy
	// Unhealthy: the first probe failed, or Fall probes in a row did while
	// the endpoint was Healthy, and it has not had Rise successes in a row
	// since.
	Unhealthy
	// Draining: Drain was called; the endpoint takes no new traffic and is
	// not probed any more.
	Draining
)

// String returns "unknown", "healthy", "unhealthy" or "draining".
func (s State) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Healthy:
		return "healthy"
	case Unhealthy:
		return "unhealthy"
	case Draining:
		return "draining"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Config configures a Checker.
type Config struct {
	// Name identifies the checker in events.
	Name string
	// Probe checks one endpoint; see HTTP and TCP. Required.
	Probe Probe

	// Interval is the time from the start of one probe of a healthy (or
	// not yet known) endpoint to the start of the next. Required: zero or
	// negative is an error.
	Interval time.Duration
	// UnhealthyInterval replaces Interval while an endpoint is Unhealthy,
	// typically shorter so that a recovered endpoint comes back soon. If
	// zero, Interval. Negative is an error.
	UnhealthyInterval time.Duration
	// EdgeInterval replaces the interval for the first probe after an
	// endpoint changes state, and while it is on its way to a change (some
	// but not all of the Rise or Fall results in a row), so that a change is
	// confirmed soon. If zero, the interval of the state. Negative is an
	// error.
	EdgeInterval time.Duration
	// InitialJitter is the largest random delay before the first probe of
	// an endpoint, from Start or from the SetEndpoints that added it; it
	// spreads the probes of endpoints added together. If zero, the first
	// probe is immediate. Negative is an error.
	InitialJitter time.Duration
	// IntervalJitter is the largest random time added to each interval, so
	// that endpoints probed together drift apart. If zero, none. Negative
	// is an error.
	IntervalJitter time.Duration
	// Timeout bounds each probe: its ctx is canceled when Timeout elapses
	// and the probe counts as failed. If zero, 1 s. Negative is an error.
	Timeout time.Duration

	// Rise is the number of successes in a row that make an Unhealthy
	// endpoint Healthy. A new endpoint needs one: its first probe makes it
	// Healthy or Unhealthy, as in Envoy. If zero, 2. Negative is an error.
	Rise int
	// Fall is the number of failures in a row that make a Healthy endpoint
	// Unhealthy. If zero, 3. Negative is an error.
	Fall int

	// Workers is the number of probes that may run at once. If zero, 64.
	// Negative is an error.
	Workers int

	// Listener, if not nil, is told of health changes. A Checker among a
	// balancer's Followers needs none: it reports to the balancer.
	Listener Listener
	// Observer, if not nil, receives EventProbe for each probe,
	// EventStateChange for each change of state, and EventEndpointAdded and
	// EventEndpointRemoved.
	Observer bulwark.Observer
	// Clock is the time source of the schedule and the probe timeouts. If
	// nil, the wall clock.
	Clock bulwark.Clock
}

func (c *Config) normalize() error {
	if c.Probe == nil {
		return invalid("Probe is nil")
	}
	if c.Interval <= 0 {
		return invalid("Interval %v is not positive", c.Interval)
	}
	durs := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"UnhealthyInterval", &c.UnhealthyInterval, c.Interval},
		{"EdgeInterval", &c.EdgeInterval, 0},
		{"InitialJitter", &c.InitialJitter, 0},
		{"IntervalJitter", &c.IntervalJitter, 0},
		{"Timeout", &c.Timeout, time.Second},
	}
	for _, f := range durs {
		if *f.d < 0 {
			return invalid("%s %v is negative", f.name, *f.d)
		}
		if *f.d == 0 {
			*f.d = f.def
		}
	}
	ints := []struct {
		name string
		n    *int
		def  int
	}{
		{"Rise", &c.Rise, 2},
		{"Fall", &c.Fall, 3},
		{"Workers", &c.Workers, 64},
	}
	for _, f := range ints {
		if *f.n < 0 {
			return invalid("%s %d is negative; it must be at least 1", f.name, *f.n)
		}
		if *f.n == 0 {
			*f.n = f.def
		}
	}
	c.Clock = base.ClockOrWall(c.Clock)
	return nil
}

// ErrUnknownEndpoint is returned by Drain for an endpoint that is not checked.
var ErrUnknownEndpoint = errors.New("healthcheck: unknown endpoint")

// ErrInvalidConfig is wrapped by the errors of New, HTTP and TCP for a
// configuration they cannot use.
var ErrInvalidConfig = errors.New("healthcheck: invalid config")

// ErrClosed is returned by Start and SetEndpoints after Close.
var ErrClosed = errors.New("healthcheck: closed")

// ErrAttached is returned by Attach when the Checker reports to a balancer
// already.
var ErrAttached = errors.New("healthcheck: already attached to a balancer")

// ErrStarted is returned by a second Start.
var ErrStarted = errors.New("healthcheck: already started")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

// Checker probes a set of endpoints actively and keeps the State of each.
// SetEndpoints gives it the set: among a balancer's Followers (it is a
// balancer.Judge), the balancer does, and the Checker reports each endpoint's
// health to it; standalone, the caller does, and a Listener hears of the
// changes.
//
// One scheduler goroutine keeps the endpoints in a heap ordered by the time
// of their next probe and hands due probes to a pool of Workers goroutines;
// no lock is held while a probe runs, and an endpoint has at most one probe
// in flight. A probe that panics is not recovered: the panic goes on up its
// worker and ends the program, so that a bug in a probe is not taken for an
// unhealthy endpoint. Each result is applied
// under a short lock, and reported to the attached balancer under it; state
// changes go to the Listener and the Observer afterwards, outside the lock,
// in order and from one goroutine at a time (a worker, or the caller of
// SetEndpoints or Drain).
//
// Use New; the zero Checker is not usable. A Checker is safe for concurrent
// use by multiple goroutines.
type Checker struct {
	cfg Config // normalized; read-only after New
	clk bulwark.Clock

	mu       sync.Mutex         // guards the fields below and every target
	targets  map[string]*target // by Addr; replaced by SetEndpoints
	queue    targetHeap         // targets waiting for their next probe
	notes    notify.Notifier
	listen   func(bulwark.Endpoint, bool) // cfg.Listener's HealthChanged, or nil
	report   func(bulwark.Endpoint, bool) // the attached balancer's; nil if none
	synced   bool                         // SetEndpoints ran since Attach
	started  bool
	closed   bool
	cancel   context.CancelFunc
	timer    bulwark.Timer // the scheduler's; nil before Start
	parked   bool          // the scheduler waits, its timer armed for queue[0]
	armedAt  time.Time     // when the scheduler's timer fires
	woken    bool          // a wake was sent and the scheduler has not parked since
	inflight int           // targets handed to workers and not yet applied
	idle     *sync.Cond    // on mu; broadcast when parked or inflight changes, and after each flush

	wake     chan struct{} // buffered 1: queue[0] changed
	jobs     chan job      // scheduler to workers
	wg       sync.WaitGroup
	lagHook  func(time.Duration) // if set (benchmarks), told each scheduling lag
	wallTime bool                // clk is the wall clock: use real deadlines
}

// target is one endpoint's schedule and state; guarded by Checker.mu.
type target struct {
	ep        bulwark.Endpoint
	state     State
	successes int // in a row
	failures  int // in a row
	due       time.Time
	index     int // in the heap; -1 when not there
	inflight  bool
	removed   bool
	edge      bool // the next probe uses EdgeInterval
}

type job struct {
	t   *target
	ep  bulwark.Endpoint
	due time.Time
}

// New returns a Checker for cfg, with no endpoints. It returns an error
// wrapping ErrInvalidConfig if Probe is nil, Interval is not positive, or a
// time, threshold or worker count is negative.
func New(cfg Config) (*Checker, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	c := &Checker{
		cfg:      cfg,
		clk:      cfg.Clock,
		targets:  map[string]*target{},
		wake:     make(chan struct{}, 1),
		jobs:     make(chan job),
		wallTime: cfg.Clock == bulwark.WallClock(),
	}
	c.idle = sync.NewCond(&c.mu)
	if cfg.Listener != nil {
		c.listen = cfg.Listener.HealthChanged
	}
	return c, nil
}

// SetEndpoints makes eps the set of endpoints to check, compared by Addr.
// An endpoint new to the set starts Unknown, and its first probe is after a
// random delay of up to InitialJitter from now, or from Start. One that
// stays keeps its state, schedule and Rise and Fall counts, and takes its
// new Zone and Weight. One that leaves is forgotten: a probe of it in flight
// is left to finish and its result dropped, and if it was Healthy, the
// Listener is told it is not. An endpoint that comes back starts afresh.
//
// It returns an error wrapping bulwark.ErrInvalidEndpoint, with the set
// unchanged, for an invalid endpoint or an Addr that appears twice, and
// ErrClosed after Close.
func (c *Checker) SetEndpoints(eps []bulwark.Endpoint) error {
	if err := validate(eps); err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	targets := make(map[string]*target, len(eps))
	now := c.clk.Now()
	for _, ep := range eps {
		t := c.targets[ep.Addr]
		if t == nil {
			t = &target{ep: ep, index: -1}
			if c.started {
				t.due = now.Add(c.jitter(c.cfg.InitialJitter))
				c.pushLocked(t)
			}
			c.noteLocked(bulwark.Event{Kind: bulwark.EventEndpointAdded, Endpoint: ep})
		} else {
			t.ep = ep
			if c.report != nil && !c.synced && t.state != Unknown {
				// Judged before the balancer attached: tell it.
				c.report(ep, t.state == Healthy)
			}
		}
		targets[ep.Addr] = t
	}
	for addr, t := range c.targets {
		if _, ok := targets[addr]; ok {
			continue
		}
		t.removed = true
		c.removeFromQueueLocked(t)
		if t.state == Healthy && c.cfg.Listener != nil {
			c.notes.Queue = append(c.notes.Queue, notify.Notice{Ep: t.ep, Listen: true})
		}
		c.noteLocked(bulwark.Event{Kind: bulwark.EventEndpointRemoved, Endpoint: t.ep})
	}
	c.targets = targets
	c.synced = true
	c.mu.Unlock()
	c.flush()
	return nil
}

// validate checks a set of endpoints: each valid, no Addr twice.
func validate(eps []bulwark.Endpoint) error {
	seen := make(map[string]struct{}, len(eps))
	for _, ep := range eps {
		if err := ep.Validate(); err != nil {
			return fmt.Errorf("healthcheck: %w", err)
		}
		if _, dup := seen[ep.Addr]; dup {
			return fmt.Errorf("healthcheck: %w %q: duplicate address", bulwark.ErrInvalidEndpoint, ep.Addr)
		}
		seen[ep.Addr] = struct{}{}
	}
	return nil
}

// Attach binds the Checker to a balancer, as a balancer.Judge: New of
// package balancer calls it for a Checker among its Followers. From then on
// the Checker calls report, under its lock, with the first verdict on each
// endpoint and each change between Healthy and not (Unhealthy or Draining);
// endpoints it already judged are reported at the next SetEndpoints. pending is true: an endpoint waits for
// its first probe before the balancer picks it. Attach returns ErrAttached
// if the Checker reports to a balancer already.
func (c *Checker) Attach(report func(ep bulwark.Endpoint, healthy bool)) (pending bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.report != nil {
		return false, ErrAttached
	}
	if report == nil {
		return false, invalid("Attach with a nil report")
	}
	c.report, c.synced = report, false
	return true, nil
}

// Drain puts ep, compared by Addr, in state Draining: the Listener (or the
// balancer) is told it is not healthy and it is not probed any more, until
// it leaves the set. It returns ErrUnknownEndpoint if ep is not checked.
func (c *Checker) Drain(ep bulwark.Endpoint) error {
	c.mu.Lock()
	t, ok := c.targets[ep.Addr]
	if !ok {
		c.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrUnknownEndpoint, ep.Addr)
	}
	if t.state != Draining {
		c.removeFromQueueLocked(t)
		c.setStateLocked(t, Draining, "drain")
	}
	c.mu.Unlock()
	c.flush()
	return nil
}

// State returns the state of ep, compared by Addr, and whether ep is checked.
func (c *Checker) State(ep bulwark.Endpoint) (State, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.targets[ep.Addr]
	if !ok {
		return Unknown, false
	}
	return t.state, true
}

// Start starts the scheduler and the workers, which run until ctx is done or
// Close is called. It returns ErrStarted if called twice and ErrClosed after
// Close. Endpoints set before Start get their first probe after up to
// InitialJitter from Start.
func (c *Checker) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.started:
		return ErrStarted
	}
	c.started = true
	ctx, c.cancel = context.WithCancel(ctx)
	now := c.clk.Now()
	for _, t := range c.targets {
		if t.state != Draining {
			t.due = now.Add(c.jitter(c.cfg.InitialJitter))
			c.pushLocked(t)
		}
	}
	// Armed here rather than in the scheduler, so that a fake clock
	// advanced right after Start fires it.
	d := c.untilNextLocked(now)
	c.timer = c.clk.NewTimer(d)
	c.armedAt = now.Add(d)
	c.parked = true
	if len(c.queue) > 0 && !c.queue[0].due.After(now) {
		c.wakeLocked()
	}
	c.wg.Add(1 + c.cfg.Workers)
	go c.schedule(ctx)
	for range c.cfg.Workers {
		go c.work(ctx)
	}
	return nil
}

// Close stops the scheduler and the workers, cancels the probes in flight,
// and waits for them all to return. Close returns nil; calling it again does
// nothing.
func (c *Checker) Close() error {
	c.mu.Lock()
	c.closed = true
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.wg.Wait()
	return nil
}

// untilNextLocked returns the wait until queue[0] is due; a day if the queue
// is empty (a wake arrives when it fills).
func (c *Checker) untilNextLocked(now time.Time) time.Duration {
	if len(c.queue) == 0 {
		return 24 * time.Hour
	}
	return c.queue[0].due.Sub(now)
}

func (c *Checker) schedule(ctx context.Context) {
	defer c.wg.Done()
	defer c.timer.Stop()
	var batch []job
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.timer.C():
		case <-c.wake:
		}
		for {
			c.mu.Lock()
			c.parked = false
			now := c.clk.Now()
			batch = batch[:0]
			for len(c.queue) > 0 && !c.queue[0].due.After(now) {
				t := heap.Pop(&c.queue).(*target)
				t.inflight = true
				c.inflight++
				batch = append(batch, job{t: t, ep: t.ep, due: t.due})
			}
			if len(batch) == 0 {
				select { // a wake now would be stale: the timer covers queue[0]
				case <-c.wake:
				default:
				}
				d := c.untilNextLocked(now)
				c.timer.Reset(d)
				if !c.wallTime && !c.clk.Now().Equal(now) {
					// The clock moved after now was read, so the timer
					// counts d from a later time: look again.
					c.mu.Unlock()
					continue
				}
				c.woken = false
				c.armedAt = now.Add(d)
				c.parked = true
				c.idle.Broadcast()
				c.mu.Unlock()
				break
			}
			c.mu.Unlock()
			for _, j := range batch {
				select {
				case c.jobs <- j:
				case <-ctx.Done():
					return
				}
			}
			clear(batch)
		}
	}
}

func (c *Checker) work(ctx context.Context) {
	defer c.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-c.jobs:
			c.probe(ctx, j)
		}
	}
}

// probe runs one probe and applies its result.
func (c *Checker) probe(ctx context.Context, j job) {
	start := c.clk.Now()
	if c.lagHook != nil {
		c.lagHook(start.Sub(j.due))
	}
	c.mu.Lock()
	skip := j.t.removed || j.t.state == Draining
	c.mu.Unlock()
	var err error
	if !skip {
		err = c.run(ctx, j.ep)
	}
	latency := c.clk.Since(start)
	if ctx.Err() != nil {
		skip = true // closing: the probe was cut short, not failed
	}

	c.mu.Lock()
	t := j.t
	t.inflight = false
	c.inflight--
	c.idle.Broadcast()
	if skip || t.removed || t.state == Draining {
		c.mu.Unlock()
		return
	}
	if obs := c.cfg.Observer; obs != nil {
		e := bulwark.Event{Kind: bulwark.EventProbe, Endpoint: t.ep, Latency: latency, Err: err, Outcome: bulwark.Success}
		if err != nil {
			e.Outcome = bulwark.Failure
		}
		c.noteLocked(e)
	}
	from := t.state
	if err == nil {
		t.successes++
		t.failures = 0
	} else {
		t.failures++
		t.successes = 0
	}
	to := from
	switch from {
	case Unknown:
		to = Healthy
		if err != nil {
			to = Unhealthy
		}
	case Healthy:
		if t.failures >= c.cfg.Fall {
			to = Unhealthy
		}
	case Unhealthy:
		if t.successes >= c.cfg.Rise {
			to = Healthy
		}
	}
	if to != from {
		reason := "probe_failed"
		if err == nil {
			reason = "probe_succeeded"
		}
		c.setStateLocked(t, to, reason)
	}
	// The next probe: the interval of the state from the start of this one,
	// shorter at an edge, never before now.
	iv := c.cfg.Interval
	if t.state == Unhealthy {
		iv = c.cfg.UnhealthyInterval
	}
	onEdge := t.edge || (t.state == Healthy && t.failures > 0) || (t.state == Unhealthy && t.successes > 0)
	t.edge = false
	if onEdge && c.cfg.EdgeInterval > 0 {
		iv = c.cfg.EdgeInterval
	}
	now := c.clk.Now()
	t.due = start.Add(iv + c.jitter(c.cfg.IntervalJitter))
	if t.due.Before(now) {
		t.due = now
	}
	c.pushLocked(t)
	c.mu.Unlock()
	c.flush()
}

// run calls the probe with its timeout. A panic in the probe is not
// recovered: it crashes the program with the probe's stack, as a panic in a
// call guarded by a breaker re-panics, rather than pass for an unhealthy
// endpoint.
func (c *Checker) run(parent context.Context, ep bulwark.Endpoint) (err error) {
	ctx, cancel := base.WithTimeout(parent, c.clk, c.wallTime, c.cfg.Timeout)
	defer cancel()
	err = c.cfg.Probe(ctx, ep)
	if err == nil && ctx.Err() != nil && parent.Err() == nil {
		err = ctx.Err() // too late counts as failed
	}
	if err != nil && parent.Err() == nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded) &&
		!errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("healthcheck: probe timed out after %v: %w (%w)", c.cfg.Timeout, context.DeadlineExceeded, err)
	}
	return err
}

// setStateLocked changes t's state, reports it to the balancer and queues
// the notices.
func (c *Checker) setStateLocked(t *target, to State, reason string) {
	from := t.state
	t.state = to
	t.edge = true
	if c.report != nil && (from == Healthy || to == Healthy || from == Unknown) {
		c.report(t.ep, to == Healthy)
	}
	if c.cfg.Listener != nil {
		c.notes.Queue = append(c.notes.Queue, notify.Notice{Ep: t.ep, On: to == Healthy, Listen: true})
	}
	c.noteLocked(bulwark.Event{Kind: bulwark.EventStateChange, Endpoint: t.ep,
		From: from.String(), To: to.String(), Reason: reason})
}

// noteLocked queues an event for the Observer, if any; Component and Name are
// filled in here.
func (c *Checker) noteLocked(e bulwark.Event) {
	if c.cfg.Observer == nil {
		return
	}
	e.Component, e.Name = bulwark.ComponentHealthCheck, c.cfg.Name
	c.notes.Queue = append(c.notes.Queue, notify.Notice{Event: e, Observe: true})
}

func (c *Checker) flush() {
	c.notes.Flush(&c.mu, c.listen, c.cfg.Observer)
	c.mu.Lock()
	c.idle.Broadcast() // what was queued has been delivered
	c.mu.Unlock()
}

// pushLocked queues t for its next probe and wakes the scheduler if t is now
// first.
func (c *Checker) pushLocked(t *target) {
	heap.Push(&c.queue, t)
	if t.index == 0 && c.started {
		c.wakeLocked()
	}
}

func (c *Checker) wakeLocked() {
	c.woken = true
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Checker) removeFromQueueLocked(t *target) {
	if t.index >= 0 {
		heap.Remove(&c.queue, t.index)
	}
}

// jitter returns a random duration in [0, max].
func (c *Checker) jitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return rand.N(max + 1)
}

// targetHeap orders targets by due time.
type targetHeap []*target

func (h targetHeap) Len() int           { return len(h) }
func (h targetHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h targetHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *targetHeap) Push(x any) {
	t := x.(*target)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *targetHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*h = old[:len(old)-1]
	return t
}
