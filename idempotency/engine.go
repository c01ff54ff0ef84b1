package idempotency

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

// Errors returned by Do and answered by the middleware. Callers test with
// errors.Is.
var (
	// ErrInFlight: the key is claimed by a run that has not finished. The
	// error is an *InFlightError.
	ErrInFlight = errors.New("idempotency: request in flight")
	// ErrMismatch: the key was used before with a different fingerprint.
	ErrMismatch = errors.New("idempotency: key reused with a different payload")
	// ErrStore: the Store failed, so the key could not be claimed and the
	// operation did not run (the Engine fails closed unless
	// Config.FailOpen). It wraps the store's error too.
	ErrStore = errors.New("idempotency: store failed")
	// ErrInvalidKey: the key is empty or, in the middleware, malformed.
	ErrInvalidKey = errors.New("idempotency: invalid key")
)

// ErrInvalidConfig is wrapped by every error that New, Middleware and
// NewMemoryStore return for a bad configuration. Callers test with
// errors.Is.
var ErrInvalidConfig = errors.New("idempotency: invalid config")

// InFlightError is the error of a duplicate that arrived while the first run
// with its key was still in flight (and, if Config.Wait is set, did not
// finish in time). errors.Is(err, ErrInFlight) reports true for it, and its
// RetryAfter method tells a retrying caller (such as package retry) how long
// to wait before trying again.
type InFlightError struct {
	// Key is the idempotency key.
	Key string
	// Retry is the suggested wait before a retry: Config.RetryAfter, or
	// less when the claim's lease ends sooner.
	Retry time.Duration
}

// Error returns a message naming the key.
func (e *InFlightError) Error() string {
	return fmt.Sprintf("idempotency: request with key %q is in flight", e.Key)
}

// Is reports whether target is ErrInFlight.
func (e *InFlightError) Is(target error) bool { return target == ErrInFlight }

// RetryAfter returns Retry.
func (e *InFlightError) RetryAfter() time.Duration { return e.Retry }

// ReplayedError is a stored error of an earlier run, returned by Do to a
// duplicate in place of running op again. Do stores the errors that
// Config.CacheError selects (by default those marked bulwark.Permanent) and
// returns their replays marked permanent too.
type ReplayedError struct {
	// Key is the idempotency key.
	Key string
	// Message is the Error() text of the original error.
	Message string
}

// Error returns Message.
func (e *ReplayedError) Error() string { return e.Message }

// Config configures an Engine.
type Config struct {
	// Store keeps the records. It must not be nil: use a *MemoryStore for a
	// single process, a shared store for several.
	Store Store
	// Name names the engine in events. Optional.
	Name string
	// Lease is how long a claim lasts without renewal. A live run keeps
	// its key: the Engine renews its lease (Store.Extend) every third of a
	// lease while it runs. A run whose process died stops renewing, so its
	// key is taken over by a duplicate within a lease, and the dead run's
	// late result, if any, is refused by fencing. Set it well above the
	// store's worst round trip and the process's longest pause: a run whose
	// renewals fail for two thirds of a lease loses its key (see
	// ErrLeaseLost). If zero, 30 seconds. It must not be negative.
	Lease time.Duration
	// Retention is how long a completed result is kept and replayed. If
	// zero, 24 hours. It must not be negative.
	Retention time.Duration
	// Wait is how long a duplicate that finds its key in flight waits for
	// the first run to finish before it gives up with an *InFlightError. If
	// zero, it does not wait (fail fast). It must not be negative.
	Wait time.Duration
	// PollInterval is how often a waiting duplicate asks the Store whether
	// a run in another process has finished. A run in this process wakes
	// its local duplicates at once. If zero, 50 milliseconds. It must not be
	// negative.
	PollInterval time.Duration
	// RetryAfter is the wait suggested to a duplicate refused because its
	// key is in flight (InFlightError.Retry; the middleware's Retry-After).
	// If zero, 1 second. It must not be negative.
	RetryAfter time.Duration
	// FailOpen runs the operation without protection when the Store fails
	// to claim a key, reporting an EventStoreError with Reason "fail-open".
	// If false (fail closed), the operation does not run, the error wraps
	// ErrStore (the middleware answers 503), and an EventStoreError with
	// Reason "fail-closed" is reported. Either way, a failure to store the
	// outcome after the run is reported too (see Engine); the caller still
	// gets the run's result.
	FailOpen bool
	// CacheError reports whether an error of op is final, so that it is
	// stored and replayed to duplicates; otherwise the key is released and
	// a retry runs op again. ctx is the context Do was called with. It is
	// called on the caller's goroutine, concurrently for different calls.
	// If nil, bulwark.IsPermanent(err), ignoring ctx: an error that no retry
	// can fix (a declined card) is kept like a result, and replayed as a
	// permanent *ReplayedError; any other releases the key. Do keeps
	// successful results (as JSON) whatever CacheError says. The
	// middleware's counterpart is HTTPConfig.Cacheable.
	CacheError func(ctx context.Context, err error) bool
	// Clock is the time source for waits, renewals and latencies. Only
	// durations on it matter, so it may be skewed against the Store's clock,
	// which alone decides expiry. If nil, the wall clock.
	Clock bulwark.Clock
	// Observer receives the events listed on Engine. If nil, none.
	Observer bulwark.Observer
}

// Engine runs an operation once per idempotency key: the first call with a
// key claims it in the Store, runs, and stores the result; a duplicate gets
// the stored result replayed, or, while the first is in flight, an
// *InFlightError (or waits for it, see Config.Wait); a duplicate whose
// fingerprint differs gets ErrMismatch.
//
// A run holds its key under a lease (see Lease), which the Engine renews
// while the run goes on: from a third of a lease after it was granted, on a
// timer that ticks every sixth of a lease while runs are in flight (one timer
// per Engine; a run shorter than that costs no timer or goroutine). A run
// whose process died stops renewing, and its key is taken over within a
// lease; the dead run's late result is refused by fencing. If the Engine can
// no longer guarantee a live run's lease (a renewal was fenced because the
// key was taken over, or renewals failed until two sixths of the lease or
// less were left), it ends the run's context with the cause ErrLeaseLost, so
// that the run stops before another may take over. Leases are measured on
// Config.Clock from the moment each Claim or Extend is sent, while the Store
// decides expiry by its own clock, so a skew between the two never shortens
// a lease.
//
// Concurrent duplicates within one process are coalesced with singleflight:
// a process sends the Store at most one Claim per key at a time.
//
// The Engine reports to Config.Observer, with Component
// bulwark.ComponentIdempotency: EventClaimed when a call claims a key (Reason
// "taken_over" after an expired lease, with an EventLeaseTakeover too),
// EventReplayed, EventConflict (in flight), EventMismatch, and
// EventStoreError (Reason "fail-open" when the call ran unprotected,
// "fail-closed" when it did not run, "complete" or "release" when storing
// the outcome failed, "fenced" when the lease was lost before the run
// finished, "extend" when a renewal failed, "lease_lost" when the Engine
// ended the run's context with ErrLeaseLost).
//
// An Engine is safe for concurrent use by multiple goroutines. Use New; the
// zero Engine is not usable.
type Engine struct {
	store      Store
	name       string
	lease      time.Duration
	retention  time.Duration
	wait       time.Duration
	poll       time.Duration
	retryAfter time.Duration
	failOpen   bool
	cacheError func(context.Context, error) bool
	clock      bulwark.Clock
	epoch      time.Time // leases are measured in durations on clock since epoch
	obs        bulwark.Observer

	group singleflight.Group // coalesces Claims of one key
	renew renewer            // renews the leases of running ops

	mu      sync.Mutex
	running map[string]chan struct{} // guarded by mu; closed when the local run of a key ends
}

// New returns an Engine configured by cfg, or an error wrapping
// ErrInvalidConfig if cfg.Store is nil or a duration is negative.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: Config.Store is nil", ErrInvalidConfig)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"Lease", cfg.Lease}, {"Retention", cfg.Retention}, {"Wait", cfg.Wait},
		{"PollInterval", cfg.PollInterval}, {"RetryAfter", cfg.RetryAfter},
	} {
		if d.v < 0 {
			return nil, fmt.Errorf("%w: Config.%s %v is negative", ErrInvalidConfig, d.name, d.v)
		}
	}
	e := &Engine{
		store:      cfg.Store,
		name:       cfg.Name,
		lease:      orDefault(cfg.Lease, 30*time.Second),
		retention:  orDefault(cfg.Retention, 24*time.Hour),
		wait:       cfg.Wait,
		poll:       orDefault(cfg.PollInterval, 50*time.Millisecond),
		retryAfter: orDefault(cfg.RetryAfter, time.Second),
		failOpen:   cfg.FailOpen,
		cacheError: cfg.CacheError,
		clock:      base.ClockOrWall(cfg.Clock),
		obs:        cfg.Observer,
		running:    make(map[string]chan struct{}),
	}
	if e.cacheError == nil {
		e.cacheError = func(_ context.Context, err error) bool { return bulwark.IsPermanent(err) }
	}
	e.epoch = e.clock.Now()
	return e, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Do runs op at most once for key, as described on Engine, and returns its
// result: op's own on the run that claimed key, or the stored one, decoded
// from JSON, on a replay. T must survive a round trip through encoding/json:
// a result that cannot be encoded is stored as a permanent error, since op
// has had its effect and must not run again.
//
// fingerprint identifies the payload (a digest of the request, say): a
// duplicate with another fingerprint gets ErrMismatch and op does not run.
// nil is an empty fingerprint. op runs on the caller's goroutine, with a
// context derived from ctx that carries the run's Lease (LeaseFromContext)
// and ends with the cause ErrLeaseLost if the lease cannot be kept.
//
// When op succeeds, its result is stored for Config.Retention, unless op
// completed the key itself, in its own transaction (see Lease). When op
// fails with an error that Config.CacheError selects, the error is stored and
// duplicates get a *ReplayedError marked bulwark.Permanent; any other error
// releases the key so a retry runs op again. A panic in op releases the key
// and is re-raised. The outcome is stored even when ctx is canceled after op
// returns; a Store failure at that point is reported to the Observer, not
// returned, since op has already had its effect.
//
// Do returns ErrInvalidKey for an empty key, an *InFlightError (ErrInFlight)
// while another run holds the key, ErrMismatch, an error wrapping ErrStore
// when the Store fails to claim (unless Config.FailOpen), ctx's error if ctx
// ends while waiting, or op's error, which also wraps ErrLeaseLost if the run
// lost its lease.
func Do[T any](ctx context.Context, e *Engine, key string, fingerprint []byte, op func(context.Context) (T, error)) (T, error) {
	var out T
	callCtx := ctx
	run := func(ctx context.Context) ([]byte, error) {
		v, err := op(ctx)
		if err != nil {
			if e.cacheError(callCtx, err) {
				return append([]byte{kindError}, err.Error()...), err
			}
			return nil, err
		}
		b, merr := json.Marshal(v)
		if merr != nil {
			// op has had its effect: keep the key, with the error, so
			// that a duplicate does not run it again.
			err := bulwark.Permanent(fmt.Errorf("idempotency: op succeeded but its result for key %q cannot be stored: %w", key, merr))
			return append([]byte{kindError}, err.Error()...), err
		}
		out = v
		return append([]byte{kindValue}, b...), nil
	}
	stored, ran, err := e.do(ctx, key, fingerprint, run)
	if ran || err != nil {
		if err != nil {
			var zero T
			return zero, err
		}
		return out, nil
	}
	return decodeValue[T](key, stored)
}

// decodeValue turns a stored value back into Do's result or error.
func decodeValue[T any](key string, stored []byte) (T, error) {
	var v T
	if len(stored) == 0 {
		return v, fmt.Errorf("idempotency: stored record for key %q is empty", key)
	}
	switch stored[0] {
	case kindValue:
		if err := json.Unmarshal(stored[1:], &v); err != nil {
			return v, fmt.Errorf("idempotency: decode stored result for key %q: %w", key, err)
		}
		return v, nil
	case kindError:
		return v, bulwark.Permanent(&ReplayedError{Key: key, Message: string(stored[1:])})
	}
	return v, fmt.Errorf("idempotency: stored record for key %q is not a Do result (kind %q)", key, stored[0])
}

// runFunc runs the protected operation. It returns the value to store and
// the operation's error: a nil value means release the key; a value is
// stored whatever the error.
type runFunc func(ctx context.Context) (value []byte, err error)

// flight is what one singleflight Claim shares with the duplicates that
// joined it.
type flight struct {
	claim       Claim
	fingerprint []byte
	done        chan struct{} // when Wait is set and the claim won: closed when its run ends
}

// wonFlight is a flight whose claim won, with the Lease of its run.
type wonFlight struct {
	flight
	lease Lease
}

// do is the engine's core. If this call claims key, it runs run and returns
// ran = true with run's error (value is then what run returned). Otherwise
// it returns the stored value of a completed record, or an error.
func (e *Engine) do(ctx context.Context, key string, fp []byte, run runFunc) (value []byte, ran bool, err error) {
	if key == "" {
		return nil, false, fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	var deadline time.Time // when a waiting duplicate gives up; zero until it first waits
	for {
		leader := false
		var start time.Time // for the latency of a failed Claim
		if e.obs != nil {
			start = e.clock.Now()
		}
		var (
			won  *wonFlight    // the leader's flight, if its claim won
			sent time.Duration // when the leader sent its Claim, since the epoch
		)
		v, cerr, _ := e.group.Do(key, func() (any, error) {
			leader = true
			sent = e.clock.Since(e.epoch)
			c, err := e.store.Claim(ctx, key, fp, e.lease)
			var f *flight
			if err == nil && c.Won {
				won = new(wonFlight) // one allocation for the flight and the Lease
				f = &won.flight
			} else {
				f = new(flight)
			}
			f.claim, f.fingerprint = c, fp
			if err == nil && c.Won && e.wait > 0 {
				// Register the run before the duplicates that share
				// this flight look for it.
				f.done = make(chan struct{})
				e.mu.Lock()
				e.running[key] = f.done
				e.mu.Unlock()
			}
			return f, err
		})
		if cerr != nil {
			if !leader && ctx.Err() == nil && isContextErr(cerr) {
				// The call that led this Claim gave up; this one has not.
				continue
			}
			return e.storeFailed(ctx, key, start, cerr, run)
		}
		f := v.(*flight)
		if leader && f.claim.Won {
			return e.runClaimed(ctx, key, f, &won.lease, sent, run)
		}
		rec := f.claim.Record
		if f.claim.Won {
			// Another call in this process won the claim just now; its
			// lease ends about a lease from now.
			rec = Record{Key: key, Fingerprint: f.fingerprint, Token: f.claim.Token, LeaseExpiry: e.clock.Now().Add(e.lease)}
		}
		if !bytes.Equal(rec.Fingerprint, fp) {
			if e.obs != nil {
				base.ObserveContext(ctx, e.obs, e.event(bulwark.EventMismatch, key))
			}
			return nil, false, fmt.Errorf("%w: key %q", ErrMismatch, key)
		}
		if rec.Completed {
			if e.obs != nil {
				base.ObserveContext(ctx, e.obs, e.event(bulwark.EventReplayed, key))
			}
			return rec.Value, false, nil
		}
		now := e.clock.Now()
		if e.wait > 0 && deadline.IsZero() {
			deadline = now.Add(e.wait)
		}
		if e.wait <= 0 || !now.Before(deadline) {
			if e.obs != nil {
				ev := e.event(bulwark.EventConflict, key)
				ev.Reason = "in_flight"
				base.ObserveContext(ctx, e.obs, ev)
			}
			return nil, false, &InFlightError{Key: key, Retry: e.retryIn(now, rec.LeaseExpiry)}
		}
		if err := e.awaitRun(ctx, key, now, deadline, rec.LeaseExpiry); err != nil {
			return nil, false, err
		}
	}
}

// retryIn is the wait suggested to a refused duplicate: RetryAfter, or the
// rest of the lease if that is shorter (but at least a millisecond).
func (e *Engine) retryIn(now, leaseExpiry time.Time) time.Duration {
	d := e.retryAfter
	if rest := leaseExpiry.Sub(now); !leaseExpiry.IsZero() && rest < d {
		d = max(rest, time.Millisecond)
	}
	return d
}

// awaitRun waits until the local run of key ends, the poll interval or the
// lease passes, or deadline, whichever is first.
func (e *Engine) awaitRun(ctx context.Context, key string, now, deadline, leaseExpiry time.Time) error {
	d := min(deadline.Sub(now), e.poll)
	if rest := leaseExpiry.Sub(now); !leaseExpiry.IsZero() && rest > 0 && rest < d {
		d = rest
	}
	e.mu.Lock()
	done := e.running[key]
	e.mu.Unlock()
	t := e.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-done: // nil when the run is elsewhere: only the timer wakes us
	case <-t.C():
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// runClaimed runs run under the claim that f won, sent at sent, with its
// Lease l in run's context, and stores or releases its outcome. f.done, if
// not nil, is the channel registered in e.running for this run.
func (e *Engine) runClaimed(ctx context.Context, key string, f *flight, l *Lease, sent time.Duration, run runFunc) (value []byte, ran bool, err error) {
	c := f.claim
	if e.obs != nil {
		ev := e.event(bulwark.EventClaimed, key)
		if c.TakenOver {
			ev.Reason = "taken_over"
			tk := e.event(bulwark.EventLeaseTakeover, key)
			base.ObserveContext(ctx, e.obs, tk)
		}
		base.ObserveContext(ctx, e.obs, ev)
	}
	e.startLease(ctx, l, key, c.Token, sent)
	finished := false
	defer func() {
		if !finished {
			// run panicked: free the key for a retry, then re-panic.
			e.endLease(l)
			e.release(ctx, l)
		}
		if f.done != nil { // wake local duplicates once the outcome is stored
			e.mu.Lock()
			if e.running[key] == f.done {
				delete(e.running, key)
			}
			e.mu.Unlock()
			close(f.done)
		}
	}()
	value, err = run(&l.ctx)
	finished = true
	lost := e.endLease(l)
	switch {
	case err == nil && value != nil && l.completed.Load():
		// op completed the key in its own transaction, and succeeded.
	case value != nil:
		e.complete(ctx, l, value)
	default:
		e.release(ctx, l)
	}
	if lost && err != nil && !errors.Is(err, ErrLeaseLost) {
		err = fmt.Errorf("%w: %w", ErrLeaseLost, err)
	}
	return value, true, err
}

// complete stores the outcome of l's run. A refusal of a key that the run
// completed in its own transaction is no error.
func (e *Engine) complete(ctx context.Context, l *Lease, value []byte) {
	var start time.Time
	if e.obs != nil {
		start = e.clock.Now()
	}
	err := e.store.Complete(context.WithoutCancel(ctx), l.key, l.token, value, e.retention)
	if err != nil && e.obs != nil && !(l.completed.Load() && errors.Is(err, ErrFenced)) {
		e.storeError(l.key, start, err, "complete")
	}
}

// release frees the key of l's run, as complete stores its outcome.
func (e *Engine) release(ctx context.Context, l *Lease) {
	var start time.Time
	if e.obs != nil {
		start = e.clock.Now()
	}
	err := e.store.Release(context.WithoutCancel(ctx), l.key, l.token)
	if err != nil && e.obs != nil && !(l.completed.Load() && errors.Is(err, ErrFenced)) {
		e.storeError(l.key, start, err, "release")
	}
}

func (e *Engine) storeError(key string, start time.Time, err error, reason string) {
	if errors.Is(err, ErrFenced) {
		reason = "fenced"
	}
	ev := e.event(bulwark.EventStoreError, key)
	ev.Err, ev.Latency, ev.Reason = err, e.clock.Since(start), reason
	e.obs.Observe(ev)
}

// storeFailed handles a failed Claim: the caller's own cancellation is
// returned as it is; otherwise the call fails closed, or runs unprotected
// when the engine fails open.
func (e *Engine) storeFailed(ctx context.Context, key string, start time.Time, err error, run runFunc) ([]byte, bool, error) {
	if ctx.Err() != nil {
		return nil, false, fmt.Errorf("idempotency: claim %q: %w", key, err)
	}
	if !e.failOpen {
		if e.obs != nil {
			e.storeError(key, start, err, "fail-closed")
		}
		return nil, false, fmt.Errorf("%w: claim %q: %w", ErrStore, key, err)
	}
	if e.obs != nil {
		e.storeError(key, start, err, "fail-open")
	}
	value, rerr := run(ctx)
	return value, true, rerr
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func (e *Engine) event(kind bulwark.EventKind, key string) bulwark.Event {
	return bulwark.Event{Kind: kind, Component: bulwark.ComponentIdempotency, Name: e.name, Key: key}
}
