package breaker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// GroupConfig configures a Group.
type GroupConfig struct {
	// Breaker configures every breaker of the group. Each breaker's Name
	// (in events and errors) is its key, prefixed by Breaker.Name and "/"
	// when that is set. Its Clock is the group's clock.
	Breaker Config

	// MaxKeys bounds the number of breakers. When a new key would exceed
	// it, the least recently used breaker goes, a closed one before an
	// open one. If zero, 1024.
	MaxKeys int

	// IdleTimeout evicts a breaker unused for this long, when a new key is
	// added. Eviction is approximate: a breaker goes between IdleTimeout and
	// 1.25 × IdleTimeout after its last use. If zero, 10 minutes.
	IdleTimeout time.Duration
}

// Group holds one Breaker per key (per host, tenant or route), created on
// first use from one Config. A Group is safe for concurrent use by multiple
// goroutines. Use NewGroup; the zero Group is not usable.
//
// Looking up an existing key takes no lock and does not read the clock; a new
// key takes the group's lock and may sweep the group for idle breakers.
type Group struct {
	s       settings // of every breaker, but for the name
	max     int
	idle    int64    // ns
	m       sync.Map // string -> *member
	n       atomic.Int64
	mu      sync.Mutex // serialises additions, evictions and sweeps
	lastSwp int64      // elapsed ns of the last sweep; guarded by mu
	base    time.Time
}

type member struct {
	b        *Breaker
	used     atomic.Bool // set on use, cleared by sweeps
	lastSeen int64       // elapsed ns when last seen used by a sweep; guarded by Group.mu
}

// NewGroup returns an empty Group. It returns an error if cfg.Breaker is not
// a valid Config or MaxKeys or IdleTimeout is negative.
func NewGroup(cfg GroupConfig) (*Group, error) {
	s, err := cfg.Breaker.settings()
	if err != nil {
		return nil, err
	}
	var errs []string
	if cfg.MaxKeys < 0 {
		errs = append(errs, fmt.Sprintf("negative MaxKeys %d", cfg.MaxKeys))
	}
	if cfg.IdleTimeout < 0 {
		errs = append(errs, fmt.Sprintf("negative IdleTimeout %v", cfg.IdleTimeout))
	}
	if len(errs) > 0 {
		return nil, errors.New("breaker: invalid GroupConfig: " + strings.Join(errs, "; "))
	}
	g := &Group{s: s, max: cfg.MaxKeys, idle: int64(cfg.IdleTimeout)}
	if g.max == 0 {
		g.max = 1024
	}
	if g.idle == 0 {
		g.idle = int64(10 * time.Minute)
	}
	g.base = s.clk.Now()
	return g, nil
}

// Get returns the breaker for key, creating it if needed.
func (g *Group) Get(key string) *Breaker {
	if v, ok := g.m.Load(key); ok {
		m := v.(*member)
		if !m.used.Load() {
			m.used.Store(true)
		}
		return m.b
	}
	return g.add(key)
}

// Peek returns the breaker for key, or nil if the group has none. It does
// not create one, nor count as a use.
func (g *Group) Peek(key string) *Breaker {
	if v, ok := g.m.Load(key); ok {
		return v.(*member).b
	}
	return nil
}

// Do runs op through the breaker for key; see Breaker.Do.
func (g *Group) Do(ctx context.Context, key string, op func(context.Context) error) error {
	return g.Get(key).Do(ctx, op)
}

// Len returns the number of breakers in the group.
func (g *Group) Len() int { return int(g.n.Load()) }

// Remove drops the breaker for key, if any. Calls in flight on it finish
// normally; the next Get of key creates a new, closed breaker.
func (g *Group) Remove(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.m.LoadAndDelete(key); ok {
		g.n.Add(-1)
	}
}

func (g *Group) add(key string) *Breaker {
	g.mu.Lock()
	defer g.mu.Unlock()
	if v, ok := g.m.Load(key); ok {
		return v.(*member).b
	}
	now := int64(g.s.clk.Since(g.base))
	if now-g.lastSwp >= g.idle/4 {
		g.sweepLocked(now)
	}
	if int(g.n.Load()) >= g.max {
		g.evictLocked()
	}
	s := g.s
	if s.name != "" {
		s.name += "/" + key
	} else {
		s.name = key
	}
	b := newBreaker(s)
	m := &member{b: b, lastSeen: now}
	m.used.Store(true)
	g.m.Store(key, m)
	g.n.Add(1)
	return b
}

// sweepLocked notes which breakers were used since the last sweep and evicts
// those idle for IdleTimeout.
func (g *Group) sweepLocked(now int64) {
	g.lastSwp = now
	g.m.Range(func(k, v any) bool {
		m := v.(*member)
		if m.used.Swap(false) {
			m.lastSeen = now
		} else if now-m.lastSeen >= g.idle {
			g.m.Delete(k)
			g.n.Add(-1)
		}
		return true
	})
}

// evictLocked removes one breaker: a closed one before an open one, then
// one unused since the last sweep, then the one seen in use the longest ago.
func (g *Group) evictLocked() {
	var (
		victim    any
		bestScore [3]int64
	)
	g.m.Range(func(k, v any) bool {
		m := v.(*member)
		score := [3]int64{1, 1, -m.lastSeen} // higher is a better victim
		if st := m.b.cur.Load().state; st != Closed && st != ForcedClosed {
			score[0] = 0
		}
		if m.used.Load() {
			score[1] = 0
		}
		if victim == nil || greater(score, bestScore) {
			victim, bestScore = k, score
		}
		return true
	})
	if victim != nil {
		g.m.Delete(victim)
		g.n.Add(-1)
	}
}

func greater(a, b [3]int64) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return false
}
