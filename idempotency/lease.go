package idempotency

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

// ErrLeaseLost is the cause with which the Engine ends the context of a run
// whose lease it can no longer guarantee: a renewal was fenced (the key was
// taken over), or renewals failed until too little of the lease was left.
// Test for it with errors.Is(context.Cause(ctx), ErrLeaseLost) inside the
// operation; Do's error wraps it too when the operation then fails.
var ErrLeaseLost = errors.New("idempotency: lease lost")

// Lease is the claim under which a run holds its idempotency key: the key as
// the Store knows it, the fencing token, and the retention of the result. The
// Engine puts it in the context of the operation it runs (op's ctx in Do,
// the request's context in the middleware), where LeaseFromContext finds it,
// and renews it while the run goes on.
//
// A Lease lets the operation complete its key inside its own transaction, so
// that the business write and the stored result commit together; otherwise
// a process can die after its business write and before its key is
// completed, and a duplicate then runs again. Where the keys and the
// business data share PostgreSQL, pgstore.Store.CompleteTx checks the
// lease's fencing token and stores the result in the operation's
// transaction, so that a run whose lease was taken over cannot commit, and
// the Engine then stores nothing more. The result is encoded as the Engine
// would ([EncodeResult], [EncodeError], [EncodeResponse]), so duplicates get
// it replayed like any other:
//
//	order, err := idempotency.Do(ctx, engine, key, fp, func(ctx context.Context) (Order, error) {
//		var o Order
//		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//			if err := insertOrder(ctx, tx, &o); err != nil {
//				return err
//			}
//			v, err := idempotency.EncodeResult(o)
//			if err != nil {
//				return err
//			}
//			return keys.CompleteTx(ctx, tx, idempotency.LeaseFromContext(ctx), v) // keys: a *pgstore.Store
//		})
//		return o, err
//	})
//
// A store's transactional completion calls MarkCompleted, so that the Engine
// neither completes the key again nor treats the completed key as a lost
// lease. Elsewhere (keys in Redis), the defence is the business table's
// unique constraint on the tenant and the key: a run that finds its key's
// row already written returns that row's result instead of writing another.
//
// A Lease is safe for concurrent use by multiple goroutines.
type Lease struct {
	key       string
	token     uint64
	retention time.Duration
	completed atomic.Bool // MarkCompleted was called

	ctx runCtx // the context of an Engine's run

	// Guarded by the Engine's renew.mu.
	prev, next *Lease
	granted    time.Duration // when the call that granted the lease now held was sent, since the Engine's epoch
	renewal    *renewal      // nil until the first renewal
	lost       bool
	ended      bool // the run has returned; no more renewals
}

// renewal is the state of the renewals of a Lease, made for a run that lasts
// long enough to need one.
type renewal struct {
	ctx      context.Context    // of the Extend calls
	stop     context.CancelFunc // ends ctx
	inFlight bool               // guarded by the Engine's renew.mu
	calls    sync.WaitGroup     // Extend calls in flight
}

// NewLease returns the Lease of a claim made directly on a Store, without an
// Engine: key and token as Claim issued them, and the retention to keep the
// result for. It is not renewed, and MarkCompleted only records the call.
func NewLease(key string, token uint64, retention time.Duration) *Lease {
	return &Lease{key: key, token: token, retention: retention}
}

// LeaseFromContext returns the Lease of the run whose context ctx is or
// derives from, or nil if there is none (the operation runs unprotected
// because the Store failed and the Engine fails open, or ctx is not an
// Engine's).
func LeaseFromContext(ctx context.Context) *Lease {
	l, _ := ctx.Value(leaseKey{}).(*Lease)
	return l
}

// Key returns the key under which the Store keeps the record: the key given
// to Do, or the one the middleware derives from the Idempotency-Key header,
// its tenant, method and route.
func (l *Lease) Key() string { return l.key }

// Token returns the fencing token of the claim.
func (l *Lease) Token() uint64 { return l.token }

// Retention returns how long a completed result is kept: the Engine's
// Config.Retention.
func (l *Lease) Retention() time.Duration { return l.retention }

// MarkCompleted records that the key has been completed with this lease's
// token inside the operation's own transaction. A store's transactional
// completion calls it once its statement succeeded, before the commit. The
// Engine then stops renewing the lease, and when the operation succeeds (Do's
// op returns no error; the middleware's handler answers with a status that
// HTTPConfig.Cacheable selects) it stores nothing. Otherwise (the
// transaction may have rolled back) the Engine stores or releases the
// outcome as usual, and a refusal because the key is already completed is
// no error.
func (l *Lease) MarkCompleted() { l.completed.Store(true) }

// leaseKey is the context key of the Lease.
type leaseKey struct{}

// runCtx is the context of a run. It carries the Lease as a value, and ends
// when the run's lease is lost or the run returns. The cancelable context
// behind it, from context.WithCancelCause, is made only when first needed:
// by Done, by a Value other than the Lease (context.Cause is one), or by an
// end while it exists; a short run whose operation never asks costs nothing
// more than the Lease.
type runCtx struct {
	parent context.Context
	l      *Lease
	inner  atomic.Pointer[cancelable]
	cause  atomic.Pointer[error] // why it ended; nil while the run goes on
}

type cancelable struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// The causes of end, as pointers that need no allocation.
var (
	causeCanceled  = &context.Canceled
	causeLeaseLost = &ErrLeaseLost
)

// materialize returns the cancelable context behind c, making it if needed.
func (c *runCtx) materialize() *cancelable {
	if in := c.inner.Load(); in != nil {
		return in
	}
	ctx, cancel := context.WithCancelCause(c.parent)
	in := &cancelable{ctx, cancel}
	if !c.inner.CompareAndSwap(nil, in) {
		cancel(nil) // another goroutine made one first
		return c.inner.Load()
	}
	if cause := c.cause.Load(); cause != nil {
		cancel(*cause)
	}
	return in
}

// end ends c with cause, unless it has ended already.
func (c *runCtx) end(cause *error) {
	c.cause.CompareAndSwap(nil, cause)
	if in := c.inner.Load(); in != nil {
		in.cancel(*c.cause.Load())
	}
}

func (c *runCtx) Deadline() (time.Time, bool) { return c.parent.Deadline() }

func (c *runCtx) Done() <-chan struct{} { return c.materialize().ctx.Done() }

func (c *runCtx) Err() error {
	if in := c.inner.Load(); in != nil {
		return in.ctx.Err()
	}
	if c.cause.Load() != nil {
		return context.Canceled
	}
	return c.parent.Err()
}

func (c *runCtx) Value(key any) any {
	if key == (leaseKey{}) {
		return c.l
	}
	return c.materialize().ctx.Value(key)
}

func (c *runCtx) String() string { return "idempotency run context" }

// renewer keeps the leases of an Engine's runs. Runs register in a list; one
// timer, armed when a run registers while it is idle, ticks every sixth of
// the lease while runs remain, and renews each run whose lease was granted a
// third of a lease ago or more, all at once, on the timer's goroutine. A
// short run therefore costs a lock, two list operations and no timer or
// goroutine of its own.
type renewer struct {
	mu    sync.Mutex
	head  *Lease        // guarded by mu; the running leases
	timer bulwark.Timer // guarded by mu; nil until first armed
	armed bool          // guarded by mu
}

// period is the interval of the renewer's ticks. A lease granted at g is
// renewed at the first tick from g+2*period on (a third of the lease), and a
// renewal that fails is tried again at the next tick; the lease is given up
// as lost at a tick that finds 2*period or less of it left, so that the run
// learns of it while a sixth of the lease, or more, remains.
func (e *Engine) period() time.Duration { return max(e.lease/6, time.Nanosecond) }

// startLease starts l, the Lease of a run that claimed key with token, by a
// Claim sent at sent (since the Engine's epoch), and registers it for
// renewal. ctx is the caller's.
func (e *Engine) startLease(ctx context.Context, l *Lease, key string, token uint64, sent time.Duration) {
	l.key, l.token, l.retention, l.granted = key, token, e.retention, sent
	l.ctx.parent, l.ctx.l = ctx, l
	r := &e.renew
	r.mu.Lock()
	l.next = r.head
	if r.head != nil {
		r.head.prev = l
	}
	r.head = l
	if !r.armed {
		r.armed = true
		if r.timer == nil {
			r.timer = e.clock.AfterFunc(e.period(), e.tick)
		} else {
			r.timer.Reset(e.period())
		}
	}
	r.mu.Unlock()
}

// endLease stops the renewal of l, waiting for an Extend in flight, ends
// the run's context, and reports whether the lease was lost.
func (e *Engine) endLease(l *Lease) (lost bool) {
	r := &e.renew
	r.mu.Lock()
	l.ended = true
	if l.prev != nil {
		l.prev.next = l.next
	} else {
		r.head = l.next
	}
	if l.next != nil {
		l.next.prev = l.prev
	}
	l.prev, l.next = nil, nil
	rn, lost := l.renewal, l.lost
	r.mu.Unlock()
	if rn != nil {
		rn.stop()
		rn.calls.Wait()
	}
	l.ctx.end(causeCanceled)
	return lost
}

// tick is the renewer's timer function.
func (e *Engine) tick() {
	now := e.clock.Since(e.epoch)
	p := e.period()
	r := &e.renew
	var due, lost []*Lease
	r.mu.Lock()
	for l := r.head; l != nil; l = l.next {
		if l.lost || l.completed.Load() {
			continue
		}
		switch rest := l.granted + e.lease - now; {
		case rest <= 2*p:
			l.lost = true
			lost = append(lost, l)
		case now-l.granted >= 2*p && (l.renewal == nil || !l.renewal.inFlight):
			if l.renewal == nil {
				l.renewal = &renewal{}
				l.renewal.ctx, l.renewal.stop = context.WithCancel(context.WithoutCancel(l.ctx.parent))
			}
			l.renewal.inFlight = true
			l.renewal.calls.Add(1)
			due = append(due, l)
		}
	}
	if r.head != nil {
		r.timer.Reset(p)
	} else {
		r.armed = false
	}
	r.mu.Unlock()
	for _, l := range lost {
		e.loseLease(l, nil)
	}
	// Renew concurrently, and return when every renewal has: the timer
	// runs tick on a goroutine of its own (the wall clock's) or on the
	// goroutine that moves a test's clock, which then knows the renewals
	// done. The timer is already re-armed, so a hung renewal delays no
	// later tick.
	var wg sync.WaitGroup
	for _, l := range due[min(1, len(due)):] {
		wg.Go(func() { e.extend(l) })
	}
	if len(due) > 0 {
		e.extend(due[0])
	}
	wg.Wait()
}

// extend renews l once, for the tick that found it due.
func (e *Engine) extend(l *Lease) {
	rn := l.renewal
	defer rn.calls.Done()
	sent := e.clock.Since(e.epoch)
	var start time.Time
	if e.obs != nil {
		start = e.clock.Now()
	}
	err := e.store.Extend(rn.ctx, l.key, l.token, e.lease)
	r := &e.renew
	r.mu.Lock()
	rn.inFlight = false
	if err == nil && sent > l.granted {
		l.granted = sent
	}
	fenced := errors.Is(err, ErrFenced) && !l.ended && !l.lost && !l.completed.Load()
	if fenced {
		l.lost = true
	}
	quiet := l.ended || l.lost || l.completed.Load()
	r.mu.Unlock()
	switch {
	case fenced:
		e.loseLease(l, err)
	case err != nil && !quiet && e.obs != nil:
		e.storeError(l.key, start, err, "extend")
	}
}

// loseLease ends the context of l's run with ErrLeaseLost. err is the
// renewal's error, if one caused it.
func (e *Engine) loseLease(l *Lease, err error) {
	l.ctx.end(causeLeaseLost)
	if e.obs != nil {
		ev := e.event(bulwark.EventStoreError, l.key)
		ev.Reason = "lease_lost"
		ev.Err = ErrLeaseLost
		if err != nil {
			ev.Err = errors.Join(ErrLeaseLost, err)
		}
		base.ObserveContext(l.ctx.parent, e.obs, ev)
	}
}
