package idempotency

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
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
// that the business write and the stored result commit together, and a run
// whose lease was taken over cannot commit (pgstore.Store.CompleteTx checks
// the token in that transaction). A store's transactional completion calls
// MarkCompleted, so that the Engine neither completes the key again nor
// treats the completed key as a lost lease.
//
// A Lease is safe for concurrent use by multiple goroutines.
type Lease struct {
	key       string
	token     uint64
	retention time.Duration
	completed atomic.Bool // MarkCompleted was called

	// The rest is set only for an Engine's run.
	e      *Engine
	ctx    leaseCtx // the context of the run
	cancel context.CancelCauseFunc

	// Guarded by e.renew.mu.
	prev, next  *Lease
	granted     time.Time // when the call that granted the lease now held was sent
	renewing    bool      // an Extend is in flight
	lost        bool
	ended       bool               // the run has returned; no more renewals
	renewCtx    context.Context    // of the Extend calls; set once, before the first
	stopRenewal context.CancelFunc // ends renewCtx
	renewals    sync.WaitGroup     // Extend calls in flight
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
// Engine then stops renewing the lease, and when the operation returns
// without an error it stores nothing; when the operation returns an error
// (its transaction may have rolled back), the Engine stores or releases the
// outcome as usual, and a refusal because the key is already completed is
// no error.
func (l *Lease) MarkCompleted() { l.completed.Store(true) }

// leaseKey is the context key of the Lease.
type leaseKey struct{}

// leaseCtx is the context of a run: its cancelable context, and the Lease as
// a value, without the allocation of a context.WithValue.
type leaseCtx struct {
	context.Context
	l *Lease
}

func (c *leaseCtx) Value(key any) any {
	if key == (leaseKey{}) {
		return c.l
	}
	return c.Context.Value(key)
}

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

// startLease makes the Lease of a run that claimed key with token, by a Claim
// sent at sent, registers it for renewal and returns it. ctx is the caller's.
func (e *Engine) startLease(ctx context.Context, key string, token uint64, sent time.Time) *Lease {
	l := &Lease{key: key, token: token, retention: e.retention, e: e, granted: sent}
	cctx, cancel := context.WithCancelCause(ctx)
	l.ctx = leaseCtx{Context: cctx, l: l}
	l.cancel = cancel
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
	return l
}

// endLease stops the renewal of l, waiting for an Extend in flight, and
// reports whether the lease was lost.
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
	stop, lost := l.stopRenewal, l.lost
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
	l.renewals.Wait()
	return lost
}

// tick is the renewer's timer function.
func (e *Engine) tick() {
	now := e.clock.Now()
	p := e.period()
	r := &e.renew
	var due, lost []*Lease
	r.mu.Lock()
	for l := r.head; l != nil; l = l.next {
		if l.lost || l.completed.Load() {
			continue
		}
		switch rest := l.granted.Add(e.lease).Sub(now); {
		case rest <= 2*p:
			l.lost = true
			lost = append(lost, l)
		case !l.renewing && now.Sub(l.granted) >= 2*p:
			l.renewing = true
			if l.stopRenewal == nil {
				l.renewCtx, l.stopRenewal = context.WithCancel(context.WithoutCancel(l.ctx.Context))
			}
			l.renewals.Add(1)
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
	defer l.renewals.Done()
	sent := e.clock.Now()
	err := e.store.Extend(l.renewCtx, l.key, l.token, e.lease)
	r := &e.renew
	r.mu.Lock()
	l.renewing = false
	if err == nil && sent.After(l.granted) {
		l.granted = sent
	}
	ended := l.ended || l.lost
	r.mu.Unlock()
	switch {
	case err == nil || ended || l.completed.Load():
	case errors.Is(err, ErrFenced):
		r.mu.Lock()
		first := !l.lost
		l.lost = true
		r.mu.Unlock()
		if first {
			e.loseLease(l, err)
		}
	case e.obs != nil:
		e.storeError(l.key, sent, err, "extend")
	}
}

// loseLease ends the context of l's run with ErrLeaseLost. err is the
// renewal's error, if one caused it.
func (e *Engine) loseLease(l *Lease, err error) {
	l.cancel(ErrLeaseLost)
	if e.obs != nil {
		ev := e.event(bulwark.EventStoreError, l.key)
		ev.Reason = "lease_lost"
		ev.Err = ErrLeaseLost
		if err != nil {
			ev.Err = errors.Join(ErrLeaseLost, err)
		}
		bulwark.ObserveContext(l.ctx.Context, e.obs, ev)
	}
}
