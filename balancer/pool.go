package balancer

import (
	"math"
	"math/bits"
	"math/rand/v2"

	"github.com/bulwark-go/bulwark"
)

// poolKind names a pool's round-robin position counters.
type poolKind uint8

const (
	poolAll     poolKind = iota // every eligible endpoint, no zone preference
	poolLocal                   // eligible endpoints of the caller's zone
	poolRemote                  // eligible endpoints of other zones
	poolPending                 // every pending endpoint, when none is eligible
	poolPanic                   // every endpoint, in panic mode
	numPoolKinds
)

// entry is one endpoint of a snapshot; it is immutable once published.
type entry struct {
	ep       bulwark.Endpoint
	st       *state
	w        uint64 // effective weight: EffectiveWeight × slow-start step (of rampSteps)
	eligible bool   // every judge finds it healthy
	pending  bool   // no judge finds it unhealthy, but one has yet to pronounce
	local    bool   // in the caller's zone
	done     doneKind
}

// doneKind is what Pick.Done has to do for an entry.
type doneKind uint8

const (
	doneGeneral doneKind = iota // see Pick.done2
	doneCount                   // only end the in-flight count
	doneNothing                 // nothing but mark the pick done
)

// snapshot is an immutable view of the endpoint set that picks work on.
type snapshot struct {
	entries []entry
	panic   bool
	primary *pool      // nil when no endpoint is eligible and panic mode is off
	other   *pool      // the other zone's pool, for spill-over and breaker fallback
	split   bool       // picks go to primary with probability pLocal/2^64, else other
	pLocal  uint64     // with split
	hash    *hashIndex // ConsistentHash only
	gen     uint64     // Balancer.gen before the verdicts were read
}

// pool is a set of entries that one pick chooses among.
type pool struct {
	kind    poolKind
	idx     []int32  // entry indices
	total   uint64   // sum of the entries' w
	uniform bool     // all w equal: sample without the alias table
	prob    []uint32 // alias method: keep idx[k] when the low random bits are below prob[k]
	alias   []int32  // alias method: else take idx[alias[k]]
	sched   []int32  // smooth weighted round robin: entry indices, one period; nil to sample
	magic   uint64   // fastmod multiplier for len(sched)
	off     [numStripes]uint64
}

// member reports whether e belongs in a pool of kind k.
func member(k poolKind, e *entry) bool {
	switch k {
	case poolAll:
		return e.eligible
	case poolLocal:
		return e.eligible && e.local
	case poolRemote:
		return e.eligible && !e.local
	case poolPending:
		return e.pending
	}
	return true
}

// buildLocked makes the snapshot of the current set at now (ns since base),
// starting the slow start of endpoints that became eligible and ending those
// that are over. It returns the delay until the next slow-start step, or 0
// when no endpoint is ramping.
func (b *Balancer) buildLocked(now int64) (*snapshot, int64) {
	s := &snapshot{entries: make([]entry, len(b.set)), hash: b.hashIdx}
	var next int64
	eligible, pending := 0, 0
	var localW, localEligW uint64
	for i, ep := range b.set {
		st := b.states[ep.Addr]
		v := st.verdict.Load()
		elig := v == 0
		if elig && !st.eligible {
			if b.slowStart > 0 && !st.fullStart {
				st.rampStart = now
			}
			st.fullStart = false
		}
		st.eligible = elig
		k := uint64(rampSteps)
		if st.rampStart >= 0 {
			el := now - st.rampStart
			if el < 0 || el >= int64(b.slowStart) {
				st.rampStart = -1
			} else {
				w := uint64(b.slowStart)
				hi, lo := bits.Mul64(uint64(el), rampSteps)
				step, _ := bits.Div64(hi, lo, w) // < rampSteps
				k = step + 1
				hi, lo = bits.Mul64(k, w)
				at, rem := bits.Div64(hi, lo, rampSteps)
				if rem > 0 {
					at++
				}
				d := st.rampStart + int64(at) - now
				if d <= 0 {
					d = 1
				}
				if next == 0 || d < next {
					next = d
				}
			}
		}
		e := entry{
			ep:       ep,
			st:       st,
			w:        uint64(ep.EffectiveWeight()) * k,
			eligible: elig,
			pending:  v&downBits == 0 && v&pendingBits != 0,
			local:    b.zone != "" && ep.Zone == b.zone,
		}
		switch {
		case st.gated || b.heavyDone:
		case b.inflight:
			e.done = doneCount
		default:
			e.done = doneNothing
		}
		s.entries[i] = e
		switch {
		case e.eligible:
			eligible++
		case e.pending:
			pending++
		}
		if e.local && !e.pending {
			localW += uint64(ep.EffectiveWeight())
			if e.eligible {
				localEligW += uint64(ep.EffectiveWeight())
			}
		}
	}
	n := len(s.entries)
	judged := n - pending
	s.panic = judged > 0 && b.panicAt > 0 && float64(eligible) < b.panicAt*float64(judged)
	switch {
	case n == 0:
	case s.panic:
		s.primary = b.newPool(s, poolPanic)
	case eligible == 0:
		s.primary = b.newPool(s, poolPending) // nil if none is pending either
	case b.zone == "":
		s.primary = b.newPool(s, poolAll)
	default:
		local, remote := b.newPool(s, poolLocal), b.newPool(s, poolRemote)
		share := 0.0
		if localW > 0 {
			share = float64(localEligW) / float64(localW)
		}
		switch {
		case local == nil:
			s.primary = remote
		case remote == nil || share >= b.minLocal:
			s.primary, s.other = local, remote
		default:
			s.primary, s.other, s.split = local, remote, true
			s.pLocal = uint64(math.Ldexp(share/b.minLocal, 64))
		}
	}
	return s, next
}

// newPool returns the pool of the members of kind k in s, or nil if it has none.
func (b *Balancer) newPool(s *snapshot, k poolKind) *pool {
	p := &pool{kind: k, uniform: true}
	for i := range s.entries {
		e := &s.entries[i]
		if !member(k, e) {
			continue
		}
		if len(p.idx) > 0 && e.w != s.entries[p.idx[0]].w {
			p.uniform = false
		}
		p.idx = append(p.idx, int32(i))
		p.total += e.w
	}
	if len(p.idx) == 0 {
		return nil
	}
	if !p.uniform {
		p.buildAlias(s)
	}
	if b.algo == RoundRobin {
		p.buildSchedule(s)
	}
	return p
}

// Limits on a round-robin schedule: its length (the sum of the weights divided
// by their greatest common divisor), and the work to build it. Beyond them,
// round robin falls back to weighted random sampling.
const (
	maxSchedule     = 1 << 16
	maxScheduleWork = 1 << 23
)

// buildSchedule lays out one period of smooth weighted round robin, as nginx
// does: each step adds every weight to its endpoint's credit, picks the
// endpoint with the most credit, and takes the total weight from it.
func (p *pool) buildSchedule(s *snapshot) {
	n := len(p.idx)
	var g uint64
	for _, i := range p.idx {
		g = gcd(g, s.entries[i].w)
	}
	total := p.total / g
	if total > maxSchedule || total*uint64(n) > maxScheduleWork {
		return
	}
	w := make([]int64, n)
	for k, i := range p.idx {
		w[k] = int64(s.entries[i].w / g)
	}
	credit := make([]int64, n)
	p.sched = make([]int32, total)
	for t := range p.sched {
		best := 0
		for k := range credit {
			credit[k] += w[k]
			if credit[k] > credit[best] {
				best = k
			}
		}
		credit[best] -= int64(total)
		p.sched[t] = p.idx[best]
	}
	p.magic = math.MaxUint64/total + 1
	for k := range p.off {
		p.off[k] = uint64(k) * total / numStripes
	}
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// buildAlias builds the alias table of Vose's method, for O(1) weighted
// sampling.
func (p *pool) buildAlias(s *snapshot) {
	n := len(p.idx)
	p.prob = make([]uint32, n)
	p.alias = make([]int32, n)
	scaled := make([]float64, n)
	var small, large []int
	for k, i := range p.idx {
		scaled[k] = float64(s.entries[i].w) * float64(n) / float64(p.total)
		p.alias[k] = int32(k)
		if scaled[k] < 1 {
			small = append(small, k)
		} else {
			large = append(large, k)
		}
	}
	for len(small) > 0 && len(large) > 0 {
		l, g := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		p.prob[l] = uint32(math.Ldexp(scaled[l], 32))
		p.alias[l] = int32(g)
		scaled[g] -= 1 - scaled[l]
		if scaled[g] < 1 {
			large = large[:len(large)-1]
			small = append(small, g)
		}
	}
	for _, k := range append(small, large...) {
		p.prob[k] = math.MaxUint32 // rounding leftovers: keep
	}
}

// sample returns an entry index drawn in proportion to weight, from the
// random bits r.
func (p *pool) sample(r uint64) int32 {
	k := ((r >> 32) * uint64(len(p.idx))) >> 32
	if p.uniform || uint32(r) < p.prob[k] {
		return p.idx[k]
	}
	return p.idx[p.alias[k]]
}

// sample2 draws two entry indices, independently, in proportion to weight:
// from one random word when the weights are equal.
//
// The two are distinct whenever the pool has two members: drawing the same
// endpoint twice would make it the choice whatever its load, which in a small
// pool (a zone of two or three endpoints) sends a slow or busy endpoint a
// fixed share of 1/n² of the picks.
func (p *pool) sample2() (int32, int32) {
	r := rand.Uint64()
	if p.uniform {
		n := uint64(len(p.idx))
		i := ((r >> 32) * n) >> 32
		j := (uint64(uint32(r)) * (n - 1)) >> 32 // one of the n-1 others
		if j >= i {
			j++
		}
		return p.idx[i], p.idx[j]
	}
	i := p.sample(r)
	j := p.sample(rand.Uint64())
	for try := 0; j == i && try < 8; try++ { // without replacement, by weight
		j = p.sample(rand.Uint64())
	}
	return i, j
}

// next returns the entry index at position n of stripe sn's walk through the
// schedule: the walk of each stripe starts at its own offset, and goes
// through the schedule in order, one position per pick.
func (p *pool) next(n uint64, sn uint64) int32 {
	pos := n + p.off[sn&(numStripes-1)]
	hi, _ := bits.Mul64(p.magic*pos, uint64(len(p.sched)))
	return p.sched[hi]
}
