package limit

import (
	"context"
	"hash/maphash"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/bulwark-go/bulwark"
)

// slots is the admission core that Limiter and Bulkhead share: one token per
// call in flight, limit tokens in all.
//
// Free tokens live in the shared pool (avail) or, while the pool is far from
// empty, one at a time in a stripe's cache, so that cores taking and
// returning tokens do not all write one cache line. Near the limit every
// token goes back to the pool, where the reserves of the lower criticality
// levels are enforced; a call finding the pool empty takes a cached token
// before it is refused, so the limit is never exceeded and a free token is
// never missed for good.
//
// Lowering the limit takes tokens out of the pool, which may go below zero:
// that debt is paid back by the tokens of the calls still in flight.
type slots struct {
	avail   atomic.Int64            // free tokens in the pool; below zero, a debt
	waiting atomic.Int32            // calls in the queue
	limit   atomic.Int64            // tokens in all: the limit in force
	reserve [numLevels]atomic.Int64 // pool tokens that each level may not take
	spill   atomic.Int64            // a returned token goes to a stripe's cache only while avail is at least this
	stripes []stripe                // power-of-two length
	mask    uint                    // len(stripes) - 1
	tenants *tenants                // nil when no tenant bound applies
	share   float64                 // a tenant may hold this fraction of the limit (rounded up)
	head    float64                 // Headroom
	mu      sync.Mutex              // guards queue and qlen, and orders limit changes
	queue   [numLevels][]*waiter    // guarded by mu; FIFO per level
	qlen    int                     // guarded by mu
	_       [0]func()               // not comparable
}

// stripe is one cache line: a cached token and a sampling countdown.
type stripe struct {
	cache     atomic.Int64 // bit 0: a free token; above: tokens ever taken from it
	countdown atomic.Int64 // Limiter: calls admitted from the pool until the next sampled one
	_         [48]byte
}

// waiter is a call in a Bulkhead's queue.
type waiter struct {
	ch     chan struct{} // receives once: granted or evicted
	level  int
	reason Reason // guarded by slots.mu: set when evicted; zero when granted
}

func (s *slots) init(limit int64, head, share float64) {
	n := 8
	for n < 4*runtime.GOMAXPROCS(0) && n < 64 {
		n <<= 1
	}
	s.stripes = make([]stripe, n)
	s.mask = uint(n - 1)
	s.head = head
	s.share = share
	if share > 0 && share < 1 {
		s.tenants = newTenants()
	}
	s.setLimitLocked(limit)
}

// setLimitLocked sets the number of tokens. Callers hold mu or own s alone.
func (s *slots) setLimitLocked(n int64) {
	old := s.limit.Swap(n)
	for lv := range numLevels {
		// Sheddable keeps 2×Headroom of the limit free, Normal 1×, Critical none.
		s.reserve[lv].Store(int64(math.Floor(s.head * float64(numLevels-1-lv) * float64(n))))
	}
	s.spill.Store(s.reserve[0].Load() + 2*int64(len(s.stripes)))
	s.avail.Add(n - old)
}

// setLimit changes the limit and wakes waiters if it grew.
func (s *slots) setLimit(n int64) {
	s.mu.Lock()
	old := s.limit.Load()
	s.setLimitLocked(n)
	if n > old {
		s.wakeLocked()
	}
	s.mu.Unlock()
}

// stackHint returns a number that differs between goroutines and stays the
// same for one while its stack does not move: the stripe to use.
func stackHint() uint {
	var x byte
	h := uint64(uintptr(unsafe.Pointer(&x)) >> 11)
	return uint((h * 0x9E3779B97F4A7C15) >> 32)
}

// take takes a token for a call of level lv from stripe hint's cache or the
// pool. It reports whether it got one and, when the token came from the
// cache, the number of tokens ever taken from that cache (for sampling),
// else -1.
func (s *slots) take(lv int, hint uint) (n int64, ok bool) {
	c := &s.stripes[hint&s.mask].cache
	if v := c.Load(); v&1 != 0 && c.CompareAndSwap(v, v+1) {
		return (v + 1) >> 1, true
	}
	res := s.reserve[lv].Load()
	for a := s.avail.Load(); a > res; a = s.avail.Load() {
		if s.avail.CompareAndSwap(a, a-1) {
			return -1, true
		}
	}
	if res > 0 {
		return 0, false // a lower level never takes the tokens cached near the limit
	}
	for i := range s.stripes {
		if c := &s.stripes[i].cache; c.Load()&1 != 0 {
			if v := c.Load(); v&1 != 0 && c.CompareAndSwap(v, v+1) {
				return -1, true
			}
		}
	}
	return 0, false
}

// put returns a token to stripe hint's cache, or to the pool when the pool
// runs low, and wakes the waiters.
func (s *slots) put(hint uint) {
	if s.avail.Load() >= s.spill.Load() {
		c := &s.stripes[hint&s.mask].cache
		if v := c.Load(); v&1 == 0 && c.CompareAndSwap(v, v|1) {
			if s.waiting.Load() > 0 {
				s.wake()
			}
			return
		}
	}
	s.avail.Add(1)
	if s.waiting.Load() > 0 {
		s.wake()
	}
}

// inflight returns the number of tokens held, which is exact only when no
// call is taking or returning one.
func (s *slots) inflight() int64 {
	n := s.limit.Load() - s.avail.Load()
	for i := range s.stripes {
		n -= s.stripes[i].cache.Load() & 1
	}
	return max(n, 0)
}

func (s *slots) wake() {
	s.mu.Lock()
	s.wakeLocked()
	s.mu.Unlock()
}

// wakeLocked grants free tokens to waiters, most critical first.
func (s *slots) wakeLocked() {
	for lv := numLevels - 1; lv >= 0 && s.qlen > 0; lv-- {
		for len(s.queue[lv]) > 0 {
			if _, ok := s.take(lv, 0); !ok {
				return // a more critical waiter could not take one either
			}
			w := s.queue[lv][0]
			s.queue[lv][0] = nil
			s.queue[lv] = s.queue[lv][1:]
			s.qlen--
			s.waiting.Add(-1)
			w.ch <- struct{}{}
		}
	}
}

// wait queues a call of level lv for at most maxWait (zero: until ctx ends)
// behind at most maxQueue others. It returns zero when the call got a token,
// the refusal's reason, or ctx's error.
func (s *slots) wait(ctx context.Context, clk bulwark.Clock, lv, maxQueue int, maxWait time.Duration) (Reason, error) {
	s.mu.Lock()
	s.waiting.Add(1)
	if _, ok := s.take(lv, stackHint()); ok {
		s.waiting.Add(-1)
		s.mu.Unlock()
		return 0, nil
	}
	if s.qlen >= maxQueue && !s.evictLocked(lv) {
		s.waiting.Add(-1)
		s.mu.Unlock()
		return ReasonQueueFull, nil
	}
	w := &waiter{ch: make(chan struct{}, 1), level: lv}
	s.queue[lv] = append(s.queue[lv], w)
	s.qlen++
	s.mu.Unlock()

	var tc <-chan time.Time
	if maxWait > 0 {
		t := clk.NewTimer(maxWait)
		defer t.Stop()
		tc = t.C()
	}
	var err error
	reason := ReasonWaitTimeout
	select {
	case <-w.ch:
		return w.reason, nil // zero when granted; the send happened after reason was set
	case <-ctx.Done():
		err = ctx.Err()
	case <-tc:
	}
	s.mu.Lock()
	if s.removeLocked(w) {
		s.waiting.Add(-1)
		s.mu.Unlock()
		return reason, err
	}
	s.mu.Unlock()
	<-w.ch // granted or evicted at the same moment
	if w.reason != 0 {
		return w.reason, nil
	}
	if err != nil { // granted, but the caller is gone: give the token on
		s.put(0)
		return 0, err
	}
	return 0, nil // granted as the wait ran out: take it
}

// evictLocked makes room in the full queue for a call of level lv by
// refusing the newest waiter of the lowest level below lv.
func (s *slots) evictLocked(lv int) bool {
	for low := 0; low < lv; low++ {
		if q := s.queue[low]; len(q) > 0 {
			w := q[len(q)-1]
			q[len(q)-1] = nil
			s.queue[low] = q[:len(q)-1]
			s.qlen--
			s.waiting.Add(-1)
			w.reason = ReasonShed
			w.ch <- struct{}{}
			return true
		}
	}
	return false
}

func (s *slots) removeLocked(w *waiter) bool {
	q := s.queue[w.level]
	for i, x := range q {
		if x == w {
			copy(q[i:], q[i+1:])
			q[len(q)-1] = nil
			s.queue[w.level] = q[:len(q)-1]
			s.qlen--
			return true
		}
	}
	return false
}

// queued returns the number of waiting calls.
func (s *slots) queued() int { return int(s.waiting.Load()) }

// tenantCap returns how many calls one tenant may hold at the current limit.
func (s *slots) tenantCap() int64 {
	return max(1, int64(math.Ceil(s.share*float64(s.limit.Load()))))
}

// tenants counts the calls each tenant holds, in shards.
type tenants struct {
	seed   maphash.Seed
	shards [16]tenantShard
}

type tenantShard struct {
	mu sync.Mutex
	m  map[string]int64 // guarded by mu; calls held, deleted at zero
	_  [40]byte
}

func newTenants() *tenants {
	t := &tenants{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[string]int64)
	}
	return t
}

func (t *tenants) shard(tenant string) *tenantShard {
	return &t.shards[maphash.String(t.seed, tenant)&uint64(len(t.shards)-1)]
}

// acquire counts one more call for tenant unless it holds limit already.
func (t *tenants) acquire(tenant string, limit int64) bool {
	sh := t.shard(tenant)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := sh.m[tenant]
	if n >= limit {
		return false
	}
	sh.m[tenant] = n + 1
	return true
}

func (t *tenants) release(tenant string) {
	sh := t.shard(tenant)
	sh.mu.Lock()
	if n := sh.m[tenant]; n <= 1 {
		delete(sh.m, tenant)
	} else {
		sh.m[tenant] = n - 1
	}
	sh.mu.Unlock()
}
