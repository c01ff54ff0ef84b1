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

	"github.com/bulwark-go/bulwark"
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
// Deciding for a known key takes no lock: a lookup in an immutable map
// snapshot, one clock read and one compare-and-swap. A new key takes the
// group's lock and waits in a small side map until enough lookups have
// missed the snapshot to pay for rebuilding it (as sync.Map once did), and
// may sweep the group, as breaker.Group does. Keys are evicted two ways:
// keys whose bucket has been full for IdleTimeout, which loses nothing; and,
// when MaxKeys is reached, the sixteenth of the keys whose buckets are
// closest to full. A key evicted that way comes back with a full bucket, so
// it may pass up to Burst minus the tokens it had left more than its limit:
// set MaxKeys above the number of keys busy at once.
type Group struct {
	s    *settings
	max  int
	idle int64                              // ns
	read atomic.Pointer[map[string]*bucket] // immutable snapshot: readers never lock
	n    atomic.Int64                       // len(*read) + len(dirty); written under mu

	mu      sync.Mutex
	dirty   map[string]*bucket // guarded by mu: keys added since read was built
	misses  int                // guarded by mu: lookups that missed read since it was built
	lastSwp int64              // guarded by mu: time of the last sweep, ns since s.base
	scratch []candidate        // guarded by mu: reused by evictLocked
}

type bucket struct {
	tat atomic.Int64 // ns since Group.s.base; dead once evicted
}

type candidate struct {
	key string
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
	g := &Group{s: s, max: cfg.MaxKeys, idle: int64(cfg.IdleTimeout), dirty: map[string]*bucket{}}
	g.read.Store(&map[string]*bucket{})
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
		// Evicted: the snapshot has been rebuilt without it; look again.
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

// Policy returns a bulwark.Policy that runs each call through Do, with the
// key that key returns for the call's context: a tenant or a route that the
// caller put there. A nil key means the key "" for every call.
func (g *Group) Policy(key func(context.Context) string) bulwark.Policy {
	return bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		k := ""
		if key != nil {
			k = key(ctx)
		}
		return g.Do(ctx, k, op)
	})
}

func (g *Group) waitN(ctx context.Context, key string, n int, maxWait int64) error {
	for {
		b := g.get(key, g.s.now())
		if err := g.s.wait(ctx, &b.tat, key, n, maxWait); err != errDead {
			return err
		}
	}
}

// Len returns the number of keys held.
func (g *Group) Len() int { return int(g.n.Load()) }

// get returns the bucket of key, adding one if needed. The bucket may turn
// dead at any time; callers then ask again, and find the rebuilt snapshot.
func (g *Group) get(key string, now int64) *bucket {
	if b, ok := (*g.read.Load())[key]; ok {
		return b
	}
	return g.getSlow(key, now)
}

func (g *Group) getSlow(key string, now int64) *bucket {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := (*g.read.Load())[key]; ok {
		return b // promoted since the caller looked
	}
	g.misses++
	b, ok := g.dirty[key]
	if !ok {
		if now-g.lastSwp >= g.idle/4 {
			g.sweepLocked(now)
		}
		if int(g.n.Load()) >= g.max {
			g.evictLocked()
		}
		b = &bucket{}
		b.tat.Store(now)
		g.dirty[key] = b
		g.n.Add(1)
	}
	if g.misses >= int(g.n.Load()) {
		g.rebuildLocked(nil)
	}
	return b
}

// rebuildLocked publishes a new snapshot of every live key, read's and
// dirty's, without those in gone.
func (g *Group) rebuildLocked(gone map[string]bool) {
	old := *g.read.Load()
	m := make(map[string]*bucket, len(old)+len(g.dirty)-len(gone))
	for _, src := range []map[string]*bucket{old, g.dirty} {
		for k, b := range src {
			if !gone[k] {
				m[k] = b
			}
		}
	}
	g.read.Store(&m)
	clear(g.dirty)
	g.misses = 0
	g.n.Store(int64(len(m)))
}

// sweepLocked evicts the keys whose bucket has been full for IdleTimeout.
func (g *Group) sweepLocked(now int64) {
	g.lastSwp = now
	var gone map[string]bool
	for _, src := range []map[string]*bucket{*g.read.Load(), g.dirty} {
		for k, b := range src {
			if old := b.tat.Load(); old <= now-g.idle && b.tat.CompareAndSwap(old, dead) {
				if gone == nil {
					gone = map[string]bool{}
				}
				gone[k] = true
			}
		}
	}
	if gone != nil {
		g.rebuildLocked(gone)
	}
}

// evictLocked evicts the sixteenth of the keys (at least one) whose buckets
// are closest to full, the full ones first.
func (g *Group) evictLocked() {
	c := g.scratch[:0]
	for _, src := range []map[string]*bucket{*g.read.Load(), g.dirty} {
		for k, b := range src {
			c = append(c, candidate{key: k, b: b, tat: b.tat.Load()})
		}
	}
	slices.SortFunc(c, func(a, b candidate) int { return cmp.Compare(a.tat, b.tat) })
	want := max(len(c)/16, 1)
	gone := make(map[string]bool, want)
	for i := 0; i < len(c) && len(gone) < want; i++ {
		if c[i].b.tat.CompareAndSwap(c[i].tat, dead) {
			gone[c[i].key] = true
		}
	}
	clear(c)
	g.scratch = c[:0]
	g.rebuildLocked(gone)
}
