package ratelimit

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// GroupConfig configures a Group.
type GroupConfig struct {
	// Limit configures the bucket of every key: each key has its own Rate
	// per Period and Burst. Its Name names the group in events and errors,
	// whose Key is the key.
	Limit Config

	// MaxKeys bounds the number of keys held. When a new key would exceed
	// it, the buckets closest to full are evicted, a sixteenth of them at a
	// time (see Group). If zero, 65536.
	MaxKeys int

	// IdleTimeout evicts a key whose bucket has been full for this long,
	// when a new key is added. Evicting a full bucket loses nothing: the
	// key comes back with a full bucket, as it would have had. Eviction is
	// approximate: a key goes between IdleTimeout and 1.25 × IdleTimeout
	// after its bucket filled up. If zero, 10 minutes.
	IdleTimeout time.Duration
}

// Group is a keyed rate limiter: one bucket per key (a tenant, a route, a
// client), created on first use from one Config, so that each key has its
// own limit. A Group is safe for concurrent use by multiple goroutines. Use
// NewGroup; the zero Group is not usable.
//
// Deciding for an existing key takes no lock: one lookup in a sync.Map, one
// clock read and one compare-and-swap. A new key takes the group's lock and
// may sweep the group, as breaker.Group does. Keys are evicted two ways:
// keys whose bucket has been full for IdleTimeout, which loses nothing; and,
// when MaxKeys is reached, the sixteenth of the keys whose buckets are
// closest to full. A key evicted that way comes back with a full bucket, so
// it may pass up to Burst minus the tokens it had left more than its limit:
// set MaxKeys above the number of keys busy at once.
type Group struct {
	s       *settings
	max     int
	idle    int64    // ns
	m       sync.Map // string -> *bucket
	n       atomic.Int64
	mu      sync.Mutex  // serialises additions, evictions and sweeps
	lastSwp int64       // time of the last sweep, ns since s.base; guarded by mu
	scratch []candidate // guarded by mu; reused by evictLocked
}

type bucket struct {
	tat atomic.Int64 // ns since Group.s.base; dead once evicted
}

type candidate struct {
	key any
	b   *bucket
	tat int64
}

// NewGroup returns an empty Group. It returns an error wrapping
// ErrInvalidConfig if cfg.Limit is not a valid Config or MaxKeys or
// IdleTimeout is negative.
func NewGroup(cfg GroupConfig) (*Group, error) {
	s, err := cfg.Limit.settings()
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.MaxKeys < 0:
		return nil, fmt.Errorf("%w: MaxKeys %d is negative", ErrInvalidConfig, cfg.MaxKeys)
	case cfg.IdleTimeout < 0:
		return nil, fmt.Errorf("%w: IdleTimeout %v is negative", ErrInvalidConfig, cfg.IdleTimeout)
	}
	g := &Group{s: s, max: cfg.MaxKeys, idle: int64(cfg.IdleTimeout)}
	if g.max == 0 {
		g.max = 1 << 16
	}
	if g.idle == 0 {
		g.idle = int64(10 * time.Minute)
	}
	return g, nil
}

// Allow reports whether one event of key may happen now, and takes its
// token if so. For an existing key it allocates nothing.
func (g *Group) Allow(key string) bool { return g.allow1(key, g.s.now()) }

// AllowAt is Allow at time now.
func (g *Group) AllowAt(key string, now time.Time) bool { return g.allow1(key, g.s.at(now)) }

func (g *Group) allow1(key string, now int64) bool {
	s := g.s
	for {
		b := g.get(key, now)
		for {
			old := b.tat.Load()
			if old == dead {
				break
			}
			nt := max(old, now) + s.interval
			if nt-now > s.tau {
				if s.obs != nil {
					s.reject(context.Background(), key, time.Duration(nt-s.tau-now), reasonRate)
				}
				return false
			}
			if b.tat.CompareAndSwap(old, nt) {
				return true
			}
		}
		g.m.CompareAndDelete(key, b)
	}
}

// AllowN decides on n tokens of key at time now, as Limiter.AllowN does.
func (g *Group) AllowN(key string, now time.Time, n int) Result {
	return g.takeAt(context.Background(), key, g.s.at(now), n)
}

// Take decides on n tokens of key now, as AllowN does; it reports a refusal
// with ctx, so that the event lands on the request's span. Its error is
// always nil: Take makes a Group a Taker, for Middleware.
func (g *Group) Take(ctx context.Context, key string, n int) (Result, error) {
	return g.takeAt(ctx, key, g.s.now(), n), nil
}

func (g *Group) takeAt(ctx context.Context, key string, now int64, n int) Result {
	for {
		b := g.get(key, now)
		if r, stored := g.s.decide(ctx, &b.tat, key, now, n); stored != dead {
			return r
		}
		g.m.CompareAndDelete(key, b)
	}
}

// Wait waits until a token of key is available and takes it, never past
// ctx's deadline, as Limiter.WaitN does.
func (g *Group) Wait(ctx context.Context, key string) error {
	return g.waitN(ctx, key, 1, math.MaxInt64)
}

// Do runs op if a token of key is available now, or once one is within
// Config.MaxWait and before ctx's deadline, as Limiter.Do does; otherwise
// it returns a *LimitError with the key, without running op.
func (g *Group) Do(ctx context.Context, key string, op func(context.Context) error) error {
	if err := g.waitN(ctx, key, 1, g.s.maxWait); err != nil {
		return err
	}
	return op(ctx)
}

func (g *Group) waitN(ctx context.Context, key string, n int, maxWait int64) error {
	for {
		b := g.get(key, g.s.now())
		err := g.s.wait(ctx, &b.tat, key, n, maxWait)
		if err != errDead {
			return err
		}
		g.m.CompareAndDelete(key, b)
	}
}

// Len returns the number of keys held.
func (g *Group) Len() int { return int(g.n.Load()) }

// get returns the bucket of key, adding one if needed. The bucket may turn
// dead at any time; callers then delete it and ask again.
func (g *Group) get(key string, now int64) *bucket {
	if v, ok := g.m.Load(key); ok {
		return v.(*bucket)
	}
	return g.add(key, now)
}

func (g *Group) add(key string, now int64) *bucket {
	g.mu.Lock()
	defer g.mu.Unlock()
	if v, ok := g.m.Load(key); ok {
		b := v.(*bucket)
		if b.tat.Load() != dead {
			return b
		}
		g.m.CompareAndDelete(key, b) // counted out by whoever killed it
	}
	if now-g.lastSwp >= g.idle/4 {
		g.sweepLocked(now)
	}
	if int(g.n.Load()) >= g.max {
		g.evictLocked(now)
	}
	b := &bucket{}
	b.tat.Store(now)
	g.m.Store(key, b)
	g.n.Add(1)
	return b
}

// sweepLocked evicts the keys whose bucket has been full for IdleTimeout.
func (g *Group) sweepLocked(now int64) {
	g.lastSwp = now
	g.m.Range(func(k, v any) bool {
		b := v.(*bucket)
		if old := b.tat.Load(); old != dead && old <= now-g.idle && b.tat.CompareAndSwap(old, dead) {
			g.m.CompareAndDelete(k, b)
			g.n.Add(-1)
		}
		return true
	})
}

// evictLocked evicts the sixteenth of the keys (at least one) whose buckets
// are closest to full, the full ones first.
func (g *Group) evictLocked(now int64) {
	c := g.scratch[:0]
	g.m.Range(func(k, v any) bool {
		b := v.(*bucket)
		if old := b.tat.Load(); old != dead {
			c = append(c, candidate{key: k, b: b, tat: old})
		}
		return true
	})
	slices.SortFunc(c, func(a, b candidate) int { return cmp.Compare(a.tat, b.tat) })
	want := max(len(c)/16, 1)
	for i := 0; i < len(c) && want > 0; i++ {
		if c[i].b.tat.CompareAndSwap(c[i].tat, dead) {
			g.m.CompareAndDelete(c[i].key, c[i].b)
			g.n.Add(-1)
			want--
		}
	}
	clear(c)
	g.scratch = c[:0]
}
