package breaker

import (
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// cacheLine is the padding unit that keeps counters written by different
// cores on different cache lines.
const cacheLine = 64

// countRing is a count window: the outcomes of the last n calls, as two
// bitsets (failed, slow) indexed by call position modulo n. A call writes
// its bits only when they change, so a run of fast successes writes nothing
// shared. The counts of set bits are exact: only the atomic operation that
// flips a bit adjusts them.
//
// Positions are handed out from one counter, in chunks of up to 64 (at most
// n/16) per stripe when the window is large enough, so that cores do not
// contend on the counter for every call. A chunk's positions that are
// reserved but not yet used still hold outcomes of the previous lap: with one
// caller at a time there are none; with k stripes in use at once, at most
// k × n/16, and those outcomes are only one window older.
type countRing struct {
	pos atomic.Uint64 // positions handed out
	_   [cacheLine - 8]byte

	n       uint64
	m       uint64 // fastmod multiplier for n
	chunk   uint64 // positions a stripe reserves at once; 1 means no stripes
	stripes []ringStripe
	wasted  atomic.Int64 // positions reserved by a stripe that lost a race, never used
	fail    []atomic.Uint64
	slow    []atomic.Uint64 // nil without a slow-call rule
	fails   atomic.Int64    // set bits in fail
	slows   atomic.Int64    // set bits in slow
}

// ringStripe is a chunk of positions being used: next << 8 | left.
type ringStripe struct {
	st atomic.Uint64
	_  [cacheLine - 8]byte
}

func newCountRing(n, nstripes int, withSlow bool) *countRing {
	words := (n + 63) / 64
	r := &countRing{n: uint64(n), m: ^uint64(0)/uint64(n) + 1, chunk: 1, fail: make([]atomic.Uint64, words)}
	for r.chunk < 64 && int(r.chunk)*2*8 <= n {
		r.chunk *= 2
	}
	if r.chunk > 1 {
		r.stripes = make([]ringStripe, nstripes)
	}
	if withSlow {
		r.slow = make([]atomic.Uint64, words)
	}
	return r
}

// slot returns p mod n for the low 32 bits of p (Lemire's fastmod), which
// costs two multiplications instead of a division. The ring's order breaks
// once every 2^32 calls, when a few outcomes land out of turn.
func (r *countRing) slot(p uint64) uint64 {
	hi, _ := bits.Mul64(r.m*uint64(uint32(p)), r.n)
	return hi
}

// take returns a position for one call.
func (r *countRing) take() uint64 {
	if r.stripes == nil {
		return r.pos.Add(1) - 1
	}
	s := &r.stripes[stackHint()&uint(len(r.stripes)-1)]
	for {
		st := s.st.Load()
		next, left := st>>8, st&0xff
		// A chunk whose positions left the window while its stripe was idle
		// is still used: each of its calls then replaces an outcome older
		// than itself, which keeps the window a set of recent outcomes.
		if left > 0 {
			if s.st.CompareAndSwap(st, (next+1)<<8|(left-1)) {
				return next
			}
			continue
		}
		// The chunk is used up: reserve the next one.
		base := r.pos.Add(r.chunk) - r.chunk
		if s.st.CompareAndSwap(st, (base+1)<<8|(r.chunk-1)) {
			return base
		}
		r.wasted.Add(int64(r.chunk - 1)) // another goroutine refilled the stripe first
		return base
	}
}

func (r *countRing) record(failed, slow bool) {
	i := r.slot(r.take())
	w, bit := i>>6, uint64(1)<<(i&63)
	setBit(&r.fail[w], bit, failed, &r.fails)
	if r.slow != nil {
		setBit(&r.slow[w], bit, slow, &r.slows)
	}
}

func setBit(word *atomic.Uint64, bit uint64, on bool, count *atomic.Int64) {
	if on {
		if word.Or(bit)&bit == 0 {
			count.Add(1)
		}
	} else if word.Load()&bit != 0 {
		if word.And(^bit)&bit != 0 {
			count.Add(-1)
		}
	}
}

// totals returns the calls, failures and slow calls in the window.
func (r *countRing) totals() (calls, fails, slows int64) {
	pos := r.pos.Load()
	calls = int64(pos) - r.wasted.Load()
	for i := range r.stripes {
		st := r.stripes[i].st.Load()
		if pos-st>>8 < r.n {
			calls -= int64(st & 0xff)
		}
	}
	calls = max(0, min(calls, int64(r.n)))
	return calls, r.fails.Load(), r.slows.Load()
}

// stripe is one core's share of the current time bucket.
type stripe struct {
	calls, fails, slows atomic.Int64
	_                   [cacheLine - 24]byte
}

// timeRing is a time window of buckets of width ns each. The current bucket
// is counted in stripes, one per stack hint, so that cores do not contend on
// one counter; completed buckets are summed into a ring when time moves past
// the current bucket's end. The window holds the completed buckets of the
// last WindowDuration plus the current one.
type timeRing struct {
	end     atomic.Int64 // elapsed ns at which the current bucket ends
	_       [cacheLine - 8]byte
	stripes []stripe

	width int64 // bucket width, ns

	mu     sync.Mutex    // guards ring, head and the stripes' hand-over
	ver    atomic.Uint64 // odd while a roll moves counts, so totals can retry
	ring   []counts      // completed buckets, oldest at head
	head   int
	winSum struct{ calls, fails, slows atomic.Int64 } // sum of ring; written under mu
}

type counts struct{ calls, fails, slows int64 }

func newTimeRing(width int64, buckets, nstripes int, now int64) *timeRing {
	t := &timeRing{
		stripes: make([]stripe, nstripes),
		width:   width,
		ring:    make([]counts, buckets-1),
	}
	t.end.Store(now + width)
	return t
}

// record counts one call finished at now (elapsed ns). It reports whether
// the window slid, which can raise a rate without any new failure.
func (t *timeRing) record(now int64, failed, slow bool) (slid bool) {
	if now >= t.end.Load() {
		t.roll(now)
		slid = true
	}
	s := &t.stripes[stackHint()&uint(len(t.stripes)-1)]
	s.calls.Add(1)
	if failed {
		s.fails.Add(1)
	}
	if slow {
		s.slows.Add(1)
	}
	return slid
}

// roll closes the current bucket and every empty one up to now.
func (t *timeRing) roll(now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	end := t.end.Load()
	if now < end {
		return
	}
	t.ver.Add(1)
	defer t.ver.Add(1)
	var cur counts
	for i := range t.stripes {
		s := &t.stripes[i]
		cur.calls += s.calls.Swap(0)
		cur.fails += s.fails.Swap(0)
		cur.slows += s.slows.Swap(0)
	}
	steps := (now-end)/t.width + 1
	if steps > int64(len(t.ring)) {
		steps = int64(len(t.ring)) + 1 // everything older falls out anyway
	}
	for i := int64(0); i < steps && len(t.ring) > 0; i++ {
		add := counts{}
		if i == 0 {
			add = cur
		}
		old := t.ring[t.head]
		t.ring[t.head] = add
		t.head = (t.head + 1) % len(t.ring)
		t.winSum.calls.Add(add.calls - old.calls)
		t.winSum.fails.Add(add.fails - old.fails)
		t.winSum.slows.Add(add.slows - old.slows)
	}
	t.end.Store(end + ((now-end)/t.width+1)*t.width)
}

// totals returns the calls, failures and slow calls in the window. It
// retries while a roll moves the current bucket into the ring, so that no
// count is seen twice or missed.
func (t *timeRing) totals() (calls, fails, slows int64) {
	for {
		v := t.ver.Load()
		if v&1 != 0 {
			runtime.Gosched()
			continue
		}
		calls, fails, slows = t.winSum.calls.Load(), t.winSum.fails.Load(), t.winSum.slows.Load()
		for i := range t.stripes {
			s := &t.stripes[i]
			calls += s.calls.Load()
			fails += s.fails.Load()
			slows += s.slows.Load()
		}
		if t.ver.Load() == v {
			return calls, fails, slows
		}
	}
}

// stackHint returns a number that is stable for a goroutine and usually
// differs between goroutines: a hash of the address of a stack slot, in units
// of the smallest goroutine stack (2 KiB). Goroutines running at once have
// distinct stacks, so they mostly pick distinct stripes. It is only a hint: a
// stack that grows moves, and two goroutines may share a stripe, which costs
// speed, never correctness.
func stackHint() uint {
	var x byte
	h := uint64(uintptr(unsafe.Pointer(&x)) >> 11)
	return uint((h * 0x9E3779B97F4A7C15) >> 32) // Fibonacci hashing: the high bits mix all of h
}

// numStripes returns a power of two of at least four times procs, in [8, 64].
func numStripes(procs int) int {
	n := 8
	for n < 4*procs && n < 64 {
		n <<= 1
	}
	return n
}
