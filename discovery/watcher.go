package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
)

// Config configures a Watcher. Resolver and Updater are required; the zero
// value of every other field is a usable default.
type Config struct {
	// Resolver finds the endpoints.
	Resolver Resolver
	// Updater receives the endpoint set each time it changes, typically a
	// *balancer.Balancer.
	Updater Updater
	// Name names the Watcher in its events.
	Name string
	// Interval is the wait between two resolutions when the Resolver
	// reports no ttl. A ttl is used as it is, but never under a second.
	// If zero, 30s.
	Interval time.Duration
	// RetryInterval is the wait after a failed resolution. It doubles with
	// each failure in a row, up to Interval (or RetryInterval, if larger).
	// If zero, 1s.
	RetryInterval time.Duration
	// Timeout bounds one call to Resolve. If zero, 10s.
	Timeout time.Duration
	// AllowEmpty, if true, passes an empty answer on to the Updater. If
	// false, an empty answer is a failure (ErrEmpty) and the Updater keeps
	// its endpoints: a DNS zone emptied by mistake does not take a whole
	// fleet out of service. The price is that a service truly scaled to
	// zero keeps its last endpoints, which health checks and outlier
	// ejection then take out of rotation.
	AllowEmpty bool
	// Clock schedules the resolutions and Timeout. If nil, the wall clock.
	Clock bulwark.Clock
	// Observer receives the Watcher's events, on the goroutine that
	// resolved. If nil, none.
	Observer bulwark.Observer
}

// The states of a Watcher, in EventStateChange.
const (
	stateUnknown = "unknown" // nothing resolved yet
	stateOK      = "ok"      // the last resolution was applied
	stateFailing = "failing" // the last resolution failed; the Updater keeps what it had
)

// A Watcher keeps an Updater's endpoint set equal to what a Resolver finds:
// it resolves, waits for the answer's ttl (or Interval), and resolves again,
// calling Update only when the set changed (compared by Addr, Zone and
// Weight; the order of an answer does not matter). When a resolution fails
// (an error, invalid or duplicate endpoints, an empty answer unless
// AllowEmpty, an error from Update), the Updater keeps the last set it
// accepted, the failure goes to the Observer, and the Watcher tries again
// after RetryInterval, backing off.
//
// Events (Component "discovery", Name from the Config):
//   - EventCall after each resolution: Outcome, Latency, Err, Reason
//     ("resolve", "invalid", "empty" or "update" for a failure), and Delay,
//     the wait until the next resolution. A resolution cut short by Close
//     (or by the end of the context given to Refresh) is Neutral and changes
//     nothing.
//   - EventEndpointAdded and EventEndpointRemoved for each endpoint that
//     came or went with an applied change; an endpoint whose Zone or Weight
//     changed is removed and added again, with Reason "changed".
//   - EventStateChange between "unknown" (before the first resolution),
//     "ok" and "failing", with the failure's Reason.
//
// Use New; the zero Watcher is not usable. A Watcher is safe for concurrent
// use by multiple goroutines.
type Watcher struct {
	cfg      Config
	clk      bulwark.Clock
	wallTime bool // cfg.Clock was nil: timeouts are real deadlines

	token chan struct{} // holds one resolution at a time; guards the fields below
	have  bool          // applied holds a set the Updater accepted
	// applied is the last set the Updater accepted, sorted by Addr.
	applied  []bulwark.Endpoint
	state    string
	failures int // failed resolutions in a row

	mu      sync.Mutex // guards the fields below
	next    time.Time  // when the loop resolves next; zero: at once
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the loop
}

// New returns a Watcher for cfg; Start starts it. New returns an error
// wrapping ErrInvalidConfig if cfg is invalid.
func New(cfg Config) (*Watcher, error) {
	invalid := func(format string, args ...any) (*Watcher, error) {
		return nil, fmt.Errorf("%w: Config."+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case cfg.Resolver == nil:
		return invalid("Resolver is nil")
	case cfg.Updater == nil:
		return invalid("Updater is nil")
	case cfg.Interval < 0:
		return invalid("Interval %v is negative", cfg.Interval)
	case cfg.RetryInterval < 0:
		return invalid("RetryInterval %v is negative", cfg.RetryInterval)
	case cfg.Timeout < 0:
		return invalid("Timeout %v is negative", cfg.Timeout)
	}
	if cfg.Interval == 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	w := &Watcher{cfg: cfg, clk: cfg.Clock, token: make(chan struct{}, 1), state: stateUnknown}
	if w.clk == nil {
		w.clk, w.wallTime = bulwark.WallClock(), true
	}
	return w, nil
}

// Start starts resolving in the background, at once unless a Refresh has
// just resolved, until ctx is done or Close is called. It returns ErrStarted
// if called twice and ErrClosed after Close.
func (w *Watcher) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closed:
		return ErrClosed
	case w.started:
		return ErrStarted
	}
	w.started = true
	ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Add(1)
	go w.loop(ctx)
	return nil
}

// Close stops the background resolutions and waits for the one in progress,
// if any, to return. Close returns nil; calling it again does nothing.
func (w *Watcher) Close() error {
	w.mu.Lock()
	w.closed = true
	cancel := w.cancel
	w.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	w.wg.Wait()
	return nil
}

// Refresh resolves now, updates the Updater if the answer changed, and
// returns the failure if there was one: ErrEmpty, an error wrapping
// bulwark.ErrInvalidEndpoint, the Resolver's error (wrapping
// context.DeadlineExceeded too after Timeout), or an error wrapping the
// Updater's. It waits for a resolution in progress to end first. The next background resolution is scheduled from this one, as if
// the loop had made it. Call it before Start to have the endpoints before
// serving, or when the endpoints in hand all fail. It returns ErrClosed after
// Close.
func (w *Watcher) Refresh(ctx context.Context) error {
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return w.refresh(ctx)
}

func (w *Watcher) loop(ctx context.Context) {
	defer w.wg.Done()
	var t bulwark.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		w.mu.Lock()
		due := w.next
		w.mu.Unlock()
		if d := due.Sub(w.clk.Now()); d > 0 {
			if t == nil {
				t = w.clk.NewTimer(d)
			} else {
				t.Reset(d)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C():
			}
			continue
		}
		if w.refresh(ctx) != nil && ctx.Err() != nil {
			return
		}
	}
}

// refresh makes one resolution, then passes its events to the Observer.
func (w *Watcher) refresh(ctx context.Context) error {
	select {
	case w.token <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	events, err := func() ([]bulwark.Event, error) {
		defer func() { <-w.token }() // released even if the Resolver or the Updater panics
		return w.resolve(ctx)
	}()
	for _, e := range events {
		w.cfg.Observer.Observe(e)
	}
	return err
}

// resolve makes one resolution, holding the token, and returns the events
// to emit.
func (w *Watcher) resolve(ctx context.Context) ([]bulwark.Event, error) {
	start := w.clk.Now()
	rctx, cancel := w.withTimeout(ctx)
	eps, ttl, err := w.cfg.Resolver.Resolve(rctx)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(rctx), context.DeadlineExceeded) &&
		!errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("discovery: resolve timed out after %v: %w (%w)", w.cfg.Timeout, context.DeadlineExceeded, err)
	}
	cancel()
	latency := w.clk.Since(start)

	var events []bulwark.Event
	emit := func(e bulwark.Event) {
		if w.cfg.Observer != nil {
			e.Component, e.Name = bulwark.ComponentDiscovery, w.cfg.Name
			events = append(events, e)
		}
	}
	if err != nil && ctx.Err() != nil {
		// Close (or the caller of Refresh) gave up: says nothing about
		// the resolver, and changes nothing.
		emit(bulwark.Event{Kind: bulwark.EventCall, Outcome: bulwark.Neutral, Latency: latency, Err: err})
		return events, err
	}

	var reason string
	var changes []bulwark.Event
	switch {
	case err != nil:
		reason = "resolve"
	default:
		if eps, err = normalize(eps); err != nil {
			reason = "invalid"
			break
		}
		if len(eps) == 0 && !w.cfg.AllowEmpty {
			reason, err = "empty", ErrEmpty
			break
		}
		if w.have && slices.Equal(eps, w.applied) {
			break
		}
		if uerr := w.cfg.Updater.Update(slices.Clone(eps)); uerr != nil {
			reason, err = "update", fmt.Errorf("discovery: Update: %w", uerr)
			break
		}
		if w.cfg.Observer != nil {
			changes = diff(w.applied, eps)
		}
		w.applied, w.have = eps, true
	}

	var wait time.Duration
	to := stateOK
	if err == nil {
		w.failures = 0
		wait = w.cfg.Interval
		if ttl > 0 {
			wait = max(ttl, time.Second)
		}
	} else {
		to = stateFailing
		w.failures++
		wait = w.backoff(w.failures)
	}
	w.mu.Lock()
	w.next = w.clk.Now().Add(wait)
	w.mu.Unlock()

	outcome := bulwark.Success
	if err != nil {
		outcome = bulwark.Failure
	}
	emit(bulwark.Event{Kind: bulwark.EventCall, Outcome: outcome, Latency: latency, Err: err, Reason: reason, Delay: wait})
	for _, e := range changes {
		emit(e)
	}
	if w.state != to {
		emit(bulwark.Event{Kind: bulwark.EventStateChange, From: w.state, To: to, Reason: reason, Err: err})
		w.state = to
	}
	return events, err
}

// backoff returns the wait after n failures in a row.
func (w *Watcher) backoff(n int) time.Duration {
	ceiling := max(w.cfg.Interval, w.cfg.RetryInterval)
	d := w.cfg.RetryInterval
	for i := 1; i < n && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

// withTimeout bounds ctx by Timeout on the Watcher's clock. With the wall
// clock it is a real deadline, which dialers see; with another clock, it is
// a cancellation with the cause context.DeadlineExceeded.
func (w *Watcher) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if w.wallTime {
		return context.WithTimeout(ctx, w.cfg.Timeout)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	t := w.clk.AfterFunc(w.cfg.Timeout, func() { cancel(context.DeadlineExceeded) })
	return ctx, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}

// normalize returns a copy of eps sorted by Addr, or an error wrapping
// bulwark.ErrInvalidEndpoint for an invalid endpoint or a repeated Addr.
func normalize(eps []bulwark.Endpoint) ([]bulwark.Endpoint, error) {
	out := slices.Clone(eps)
	for _, ep := range out {
		if err := ep.Validate(); err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
	}
	slices.SortFunc(out, func(a, b bulwark.Endpoint) int { return strings.Compare(a.Addr, b.Addr) })
	for i := 1; i < len(out); i++ {
		if out[i].Addr == out[i-1].Addr {
			return nil, fmt.Errorf("discovery: %w %q: duplicate address", bulwark.ErrInvalidEndpoint, out[i].Addr)
		}
	}
	return out, nil
}

// diff returns the events that take old to cur, both sorted by Addr:
// removals first, then additions, in Addr order.
func diff(old, cur []bulwark.Endpoint) []bulwark.Event {
	var removed, added []bulwark.Event
	i, j := 0, 0
	for i < len(old) || j < len(cur) {
		switch {
		case j == len(cur) || i < len(old) && old[i].Addr < cur[j].Addr:
			removed = append(removed, bulwark.Event{Kind: bulwark.EventEndpointRemoved, Endpoint: old[i]})
			i++
		case i == len(old) || cur[j].Addr < old[i].Addr:
			added = append(added, bulwark.Event{Kind: bulwark.EventEndpointAdded, Endpoint: cur[j]})
			j++
		default:
			if old[i] != cur[j] {
				removed = append(removed, bulwark.Event{Kind: bulwark.EventEndpointRemoved, Endpoint: old[i], Reason: "changed"})
				added = append(added, bulwark.Event{Kind: bulwark.EventEndpointAdded, Endpoint: cur[j], Reason: "changed"})
			}
			i++
			j++
		}
	}
	return append(removed, added...)
}
