package limit

import (
	"context"
	"fmt"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

var _ bulwark.Policy = (*Bulkhead)(nil)

// BulkheadConfig configures a Bulkhead. Limit is required.
type BulkheadConfig struct {
	// Name names the bulkhead in events and errors. Optional.
	Name string

	// Limit is the number of calls that may run at once. It must be
	// positive.
	Limit int

	// MaxQueue is how many calls may wait for a slot when all are taken,
	// served most critical first, then in order of arrival. When the queue
	// is full, a call evicts the newest waiter of a lower criticality
	// (refused with ReasonShed) or is refused itself (ReasonQueueFull). If
	// zero, no call waits: a full bulkhead refuses at once (ReasonLimit).
	MaxQueue int

	// MaxWait bounds a wait in the queue; a call that waited that long is
	// refused with ReasonWaitTimeout. If zero, a call waits until its
	// context ends. It must not be negative.
	MaxWait time.Duration

	// Headroom reserves part of the limit for the more critical calls:
	// Normal calls may hold up to (1 − Headroom) of Limit, Sheddable ones
	// up to (1 − 2×Headroom), the reserved part rounded down, and Critical
	// ones all of it. In
	// [0, 0.5); if zero, every criticality may use the whole limit and only
	// the queue's order favours the critical calls.
	Headroom float64

	// TenantShare bounds the calls that one tenant (see WithTenant) may
	// hold, running or waiting, to this fraction of Limit, rounded up: a
	// tenant over it is refused with ReasonTenant. In [0, 1]; if zero or
	// one, tenants are not bounded.
	TenantShare float64

	// Clock is the time source of MaxWait. If nil, the wall clock.
	Clock bulwark.Clock

	// Observer receives EventRejected for each refused call (Reason is the
	// refusal's Reason) and EventMisuse for a Permit ended twice, on the
	// caller's goroutine. If nil, no events and no cost.
	Observer bulwark.Observer
}

// Bulkhead is a fixed concurrency limit: at most Limit calls run at once,
// and the others wait in a bounded queue for a bounded time, or are refused.
// It isolates the calls to one dependency, or one kind of work, so that they
// cannot take every goroutine, connection or thread of the service.
//
// Taking and returning a slot reads no clock and, far from the limit,
// writes only the cache line of the caller's stripe (chosen by goroutine),
// so that cores rarely contend; near the limit every slot goes through one shared counter, so
// the limit is exact.
//
// A Bulkhead is safe for concurrent use by multiple goroutines. Use
// NewBulkhead; the zero Bulkhead is not usable.
type Bulkhead struct {
	s        slots
	name     string
	maxQueue int
	maxWait  time.Duration
	clk      bulwark.Clock
	obs      bulwark.Observer
}

// NewBulkhead returns a Bulkhead configured by cfg, or an error wrapping
// ErrInvalidConfig that names the first invalid field.
func NewBulkhead(cfg BulkheadConfig) (*Bulkhead, error) {
	switch {
	case cfg.Limit <= 0:
		return nil, fmt.Errorf("%w: Limit %d must be positive", ErrInvalidConfig, cfg.Limit)
	case cfg.MaxQueue < 0:
		return nil, fmt.Errorf("%w: MaxQueue %d must not be negative", ErrInvalidConfig, cfg.MaxQueue)
	case cfg.MaxWait < 0:
		return nil, fmt.Errorf("%w: MaxWait %v must not be negative", ErrInvalidConfig, cfg.MaxWait)
	}
	if err := checkShares(cfg.Headroom, cfg.TenantShare); err != nil {
		return nil, err
	}
	b := &Bulkhead{
		name:     cfg.Name,
		maxQueue: cfg.MaxQueue,
		maxWait:  cfg.MaxWait,
		clk:      base.ClockOrWall(cfg.Clock),
		obs:      cfg.Observer,
	}
	b.s.init(int64(cfg.Limit), cfg.Headroom, cfg.TenantShare)
	return b, nil
}

func checkShares(headroom, share float64) error {
	switch {
	case !(headroom >= 0 && headroom < 0.5):
		return fmt.Errorf("%w: Headroom %v must be in [0, 0.5)", ErrInvalidConfig, headroom)
	case !(share >= 0 && share <= 1):
		return fmt.Errorf("%w: TenantShare %v must be in [0, 1]", ErrInvalidConfig, share)
	}
	return nil
}

// Name returns BulkheadConfig.Name.
func (b *Bulkhead) Name() string { return b.name }

// Limit returns BulkheadConfig.Limit.
func (b *Bulkhead) Limit() int { return int(b.s.limit.Load()) }

// InFlight returns the number of calls holding a slot.
func (b *Bulkhead) InFlight() int { return int(b.s.inflight()) }

// Queued returns the number of calls waiting for a slot.
func (b *Bulkhead) Queued() int { return b.s.queued() }

// Acquire admits one call, with the criticality and tenant that ctx carries
// (WithCriticality, WithTenant). When every slot is taken it waits in the
// queue (BulkheadConfig.MaxQueue, MaxWait) or is refused. On success the
// Permit must be ended with Done once the call is over. On refusal the
// error is a *RejectedError wrapping ErrRejected; when ctx ends while the
// call waits, it is ctx.Err(). Acquire allocates nothing unless it refuses
// or waits.
func (b *Bulkhead) Acquire(ctx context.Context) (Permit, error) {
	info := infoFrom(ctx)
	lv := info.crit.level()
	tenant := ""
	if b.s.tenants != nil && info.tenant != "" {
		if !b.s.tenants.acquire(info.tenant, b.s.tenantCap()) {
			return Permit{}, b.reject(ctx, ReasonTenant, info, 0)
		}
		tenant = info.tenant
	}
	hint := stackHint()
	if b.s.waiting.Load() == 0 {
		if _, ok := b.s.take(lv, hint); ok {
			return Permit{b: b, tenant: tenant, stripe: uint32(hint & b.s.mask)}, nil
		}
	}
	reason, err := ReasonLimit, error(nil)
	if b.maxQueue > 0 {
		reason, err = b.s.wait(ctx, b.clk, lv, b.maxQueue, b.maxWait)
		if reason == 0 && err == nil {
			return Permit{b: b, tenant: tenant}, nil
		}
	}
	if tenant != "" {
		b.s.tenants.release(tenant)
	}
	if err != nil {
		return Permit{}, err
	}
	var after time.Duration
	if reason == ReasonWaitTimeout {
		after = b.maxWait
	}
	return Permit{}, b.reject(ctx, reason, info, after)
}

func (b *Bulkhead) reject(ctx context.Context, r Reason, info callInfo, after time.Duration) error {
	err := &RejectedError{Name: b.name, Reason: r, Criticality: info.crit, Tenant: info.tenant, retryAfter: after}
	if b.obs != nil {
		base.ObserveContext(ctx, b.obs, bulwark.Event{Kind: bulwark.EventRejected, Component: bulwark.ComponentBulkhead, Name: b.name, Err: err, Reason: r.String()})
	}
	return err
}

func (b *Bulkhead) release(p *Permit) {
	if p.tenant != "" {
		b.s.tenants.release(p.tenant)
	}
	b.s.put(uint(p.stripe))
}

// Do runs op if the bulkhead admits it (see Acquire) and returns op's error,
// or the refusal without running op. If op panics, its slot is returned and
// the panic goes on. Do satisfies bulwark.Policy.
func (b *Bulkhead) Do(ctx context.Context, op func(context.Context) error) error {
	p, err := b.Acquire(ctx)
	if err != nil {
		return err
	}
	finished := false
	defer func() {
		if !finished { // op panicked (or called runtime.Goexit); the panic goes on
			b.release(&p)
		}
	}()
	err = op(ctx)
	finished = true
	b.release(&p)
	return err
}
