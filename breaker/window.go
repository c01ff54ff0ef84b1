package breaker

import (
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/bulwark-go/bulwark"
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
// one counter; completed buckets are summed into a ring. The window holds
// the completed buckets of the last WindowDuration plus the current one.
//
// Calls do not read the clock: while calls come, a timer on the breaker's
// clock closes the current bucket at its end. After a bucket without calls
// the timer is not re-armed, and the next call reads the clock once to move
// the window over the idle time and arm it again.
type timeRing struct {
	flags atomic.Uint32 // ringArmed, ringSlid; anything but ringArmed sends a call to wake
	_     [cacheLine - 4]byte

	stripes []stripe
	width   int64 // bucket width, ns
	clk     bulwark.Clock
	now     func() int64 // elapsed ns on clk

	mu      sync.Mutex    // guards what follows and the stripes' hand-over
	ver     atomic.Uint64 // odd while a roll moves counts, so totals can retry
	end     int64         // elapsed ns at which the current bucket ends
	timer   bulwark.Timer // nil until first armed
	stopped bool          // the ring's generation is over
	ring    []counts      // completed buckets, oldest at head
	head    int
	winSum  struct{ calls, fails, slows atomic.Int64 } // sum of ring; written under mu
}

const (
	ringArmed uint32 = 1 << iota // the timer will close the current bucket
	ringSlid                     // the window moved since a call last saw it
)

type counts struct{ calls, fails, slows int64 }

func newTimeRing(width int64, buckets, nstripes int, start int64, clk bulwark.Clock, now func() int64) *timeRing {
	return &timeRing{
		stripes: make([]stripe, nstripes),
		width:   width,
		clk:     clk,
		now:     now,
		end:     start + width,
		ring:    make([]counts, buckets-1),
	}
}

// record counts one call. It reports whether the window slid since the last
// call, which can raise a rate without any new failure.
func (t *timeRing) record(failed, slow bool) (slid bool) {
	if t.flags.Load() != ringArmed {
		slid = t.wake()
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

// wake moves the window to the present and arms the timer.
func (t *timeRing) wake() (slid bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	slid = t.flags.Load()&ringSlid != 0
	if t.stopped {
		return slid
	}
	now := t.now()
	if now >= t.end {
		t.roll(now)
		slid = true
	}
	if t.flags.Load()&ringArmed == 0 {
		t.arm(now)
	}
	t.flags.Store(ringArmed)
	return slid
}

// arm sets the timer to the current bucket's end; t.mu is held.
func (t *timeRing) arm(now int64) {
	d := time.Duration(t.end - now)
	if t.timer == nil {
		t.timer = t.clk.AfterFunc(d, t.fire)
	} else {
		t.timer.Reset(d)
	}
}

// fire closes the current bucket, from the timer.
func (t *timeRing) fire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	now := t.now()
	if now < t.end { // fired early, or a wake rolled already
		t.arm(now)
		return
	}
	if t.roll(now) > 0 {
		t.arm(now)
		t.flags.Store(ringArmed | ringSlid)
	} else {
		t.flags.Store(ringSlid)
	}
}

// stop ends the ring's timer: its generation is over.
func (t *timeRing) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	t.flags.Store(0)
	if t.timer != nil {
		t.timer.Stop()
	}
}

// roll closes the current bucket and every empty one up to now, and returns
// the calls of the bucket it closed; t.mu is held.
func (t *timeRing) roll(now int64) int64 {
	t.ver.Add(1)
	defer t.ver.Add(1)
	var cur counts
	for i := range t.stripes {
		s := &t.stripes[i]
		cur.calls += s.calls.Swap(0)
		cur.fails += s.fails.Swap(0)
		cur.slows += s.slows.Swap(0)
	}
	steps := (now-t.end)/t.width + 1
	t.end += steps * t.width
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
	return cur.calls
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
