package breaker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
)

// GroupConfig configures a Group.
type GroupConfig struct {
	// Breaker configures every breaker of the group. Each breaker's Name
	// (in events and errors) is its key, prefixed by Breaker.Name and "/"
	// when that is set. Its Clock is the group's clock.
	Breaker Config

	// MaxKeys bounds the number of breakers of keys that are not members
	// (see SetEndpoints). When a new key would exceed it, the least
	// recently used of them goes, a closed one before an open one. If
	// zero, 1024.
	MaxKeys int

	// IdleTimeout evicts a breaker of a key that is not a member, unused
	// for this long, when a new key is added. Eviction is approximate: a
	// breaker goes between IdleTimeout and 1.25 × IdleTimeout after its
	// last use. If zero, 10 minutes.
	IdleTimeout time.Duration
}

// Group holds one Breaker per key (per host, tenant or route), created on
// first use from one Config. A Group is safe for concurrent use by multiple
// goroutines. Use NewGroup; the zero Group is not usable.
//
// Keys come and go in one of two ways. By default a key's breaker lives
// while it is used: the group evicts idle breakers and, beyond MaxKeys, the
// least recently used ones. A group that guards a fleet follows its
// membership instead: SetEndpoints makes the endpoints' addresses the
// members, whose breakers are never evicted however long they stay idle, and
// forgets every other key, so that its memory follows the fleet under churn.
//
// Looking up an existing key takes no lock and does not read the clock; a new
// key takes the group's lock and may sweep the group for idle breakers.
type Group struct {
	s       settings // of every breaker, but for the name
	max     int
	idle    int64    // ns
	m       sync.Map // string -> *entry
	n       atomic.Int64
	mu      sync.Mutex          // serialises additions, evictions, sweeps and membership changes
	members map[string]struct{} // guarded by mu; the addresses of the last SetEndpoints
	pinned  int                 // guarded by mu; entries of members in m
	lastSwp int64               // elapsed ns of the last sweep; guarded by mu
	base    time.Time
}

type entry struct {
	b        *Breaker
	used     atomic.Bool // set on use, cleared by sweeps
	lastSeen int64       // elapsed ns when last seen used by a sweep; guarded by Group.mu
	member   bool        // guarded by Group.mu: the key is a member, never evicted
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
		m := v.(*entry)
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
		return v.(*entry).b
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
	g.deleteLocked(key)
}

// SetEndpoints makes the addresses of eps the group's members, the keys of a
// fleet's per-endpoint breakers: each member has a breaker from now on
// (created closed if it had none), which stays whatever its idleness and
// however many members there are, and which keeps its state while the
// endpoint stays a member. The breaker of every other key is dropped, as
// Remove does: calls in flight on it finish normally, and a later Get of
// that key creates a new one, which is evicted as usual. A balancer or a
// discovery loop calls SetEndpoints with the whole fleet on each change.
//
// It returns an error wrapping bulwark.ErrInvalidEndpoint, and changes
// nothing, if an endpoint fails Validate or two have the same address.
func (g *Group) SetEndpoints(eps []bulwark.Endpoint) error {
	members := make(map[string]struct{}, len(eps))
	for _, ep := range eps {
		if err := ep.Validate(); err != nil {
			return fmt.Errorf("breaker: %w", err)
		}
		if _, dup := members[ep.Addr]; dup {
			return fmt.Errorf("breaker: %w %q: duplicate address", bulwark.ErrInvalidEndpoint, ep.Addr)
		}
		members[ep.Addr] = struct{}{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.members = members
	g.pinned = 0
	g.m.Range(func(k, v any) bool {
		if _, ok := members[k.(string)]; ok {
			v.(*entry).member = true
			g.pinned++
		} else {
			g.deleteLocked(k.(string))
		}
		return true
	})
	now := int64(g.s.clk.Since(g.base))
	for _, ep := range eps {
		if _, ok := g.m.Load(ep.Addr); !ok {
			g.storeLocked(ep.Addr, now)
		}
	}
	return nil
}

func (g *Group) add(key string) *Breaker {
	g.mu.Lock()
	defer g.mu.Unlock()
	if v, ok := g.m.Load(key); ok {
		return v.(*entry).b
	}
	now := int64(g.s.clk.Since(g.base))
	if _, member := g.members[key]; !member {
		if now-g.lastSwp >= g.idle/4 {
			g.sweepLocked(now)
		}
		if int(g.n.Load())-g.pinned >= g.max {
			g.evictLocked()
		}
	}
	return g.storeLocked(key, now).b
}

// storeLocked creates the breaker of key.
func (g *Group) storeLocked(key string, now int64) *entry {
	s := g.s
	if s.name != "" {
		s.name += "/" + key
	} else {
		s.name = key
	}
	m := &entry{b: newBreaker(s), lastSeen: now}
	if _, ok := g.members[key]; ok {
		m.member = true
		g.pinned++
	}
	m.used.Store(true)
	g.m.Store(key, m)
	g.n.Add(1)
	return m
}

// deleteLocked drops the breaker of key, if any.
func (g *Group) deleteLocked(key string) {
	if v, ok := g.m.LoadAndDelete(key); ok {
		g.n.Add(-1)
		if v.(*entry).member {
			g.pinned--
		}
	}
}

// sweepLocked notes which breakers were used since the last sweep and evicts
// those of non-members idle for IdleTimeout.
func (g *Group) sweepLocked(now int64) {
	g.lastSwp = now
	g.m.Range(func(k, v any) bool {
		m := v.(*entry)
		if m.used.Swap(false) {
			m.lastSeen = now
		} else if !m.member && now-m.lastSeen >= g.idle {
			g.deleteLocked(k.(string))
		}
		return true
	})
}

// evictLocked removes the breaker of one non-member: a closed one before an
// open one, then one unused since the last sweep, then the one seen in use
// the longest ago.
func (g *Group) evictLocked() {
	var (
		victim    any
		bestScore [3]int64
	)
	g.m.Range(func(k, v any) bool {
		m := v.(*entry)
		if m.member {
			return true
		}
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
		g.deleteLocked(victim.(string))
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
