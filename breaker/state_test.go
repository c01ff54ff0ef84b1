package breaker

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

// probeCounter tracks the probes in flight per generation.
type probeCounter struct {
	mu    sync.Mutex
	n     map[uint64]int
	max   int
	total int
}

func (p *probeCounter) start(tok uint64) {
	if tok&slotMask == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		p.n = map[uint64]int{}
	}
	p.n[tok>>32]++
	p.total++
	p.max = max(p.max, p.n[tok>>32])
}

func (p *probeCounter) end(tok uint64) {
	if tok&slotMask == 0 {
		return
	}
	p.mu.Lock()
	p.n[tok>>32]--
	p.mu.Unlock()
}

func TestBreakerConcurrentSafe(t *testing.T) {
	defer checkNoLeak(t)()
	clk := bulwarktest.NewClock(time.Time{})
	var changes, rejected, calls atomic.Int64
	obs := bulwark.ObserverFunc(func(e bulwark.Event) {
		switch e.Kind {
		case bulwark.EventStateChange:
			changes.Add(1)
		case bulwark.EventRejected:
			rejected.Add(1)
		case bulwark.EventCall:
			calls.Add(1)
		}
	})
	const probes = 3
	b, err := New(Config{
		Clock: clk, Observer: obs,
		ConsecutiveFailures: 8, FailureRate: 0.5, WindowCalls: 64, WindowDuration: time.Second, MinCalls: 8,
		SlowCallRate: 0.9, SlowCallDuration: 50 * time.Millisecond,
		OpenDuration: 20 * time.Millisecond, MaxOpenDuration: 200 * time.Millisecond, OpenJitter: 0.3,
		HalfOpenProbes: probes, HalfOpenSuccesses: 2, ProbeTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var pc probeCounter
	var wg sync.WaitGroup
	const workers, perWorker = 32, 400
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; i < perWorker; i++ {
				// Phases of health and sickness, so the breaker keeps moving.
				sick := (i/50)%2 == 1
				switch x := r.IntN(100); {
				case x < 3:
					clk.Advance(time.Duration(r.IntN(30)) * time.Millisecond)
				case w == 1 && x == 3 && i%10 == 0:
					b.ForceOpen()
					clk.Advance(time.Millisecond)
					b.Reset()
				case x < 60:
					_ = b.Do(context.Background(), func(context.Context) error {
						if sick && r.IntN(3) > 0 {
							return errors.New("sick")
						}
						return nil
					})
				default:
					tok, err := b.Acquire()
					if err != nil {
						continue
					}
					pc.start(tok)
					if r.IntN(50) == 0 {
						continue // a call that never returns
					}
					o := bulwark.Success
					if sick && r.IntN(2) == 0 {
						o = bulwark.Failure
					} else if r.IntN(10) == 0 {
						o = bulwark.Neutral
					}
					pc.end(tok)
					b.Release(tok, o, time.Duration(r.IntN(60))*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	b.Reset()
	if pc.max > probes {
		t.Errorf("%d probes ran at once, want at most %d", pc.max, probes)
	}
	if changes.Load() < 10 || pc.total == 0 || rejected.Load() == 0 {
		t.Errorf("%d state changes, %d probes, %d rejections: the stress did not cross transitions", changes.Load(), pc.total, rejected.Load())
	}
	if st := b.State(); st != Closed {
		t.Errorf("State() after Reset = %v, want closed", st)
	}
	t.Logf("%d calls, %d rejected, %d state changes, %d probes", calls.Load(), rejected.Load(), changes.Load(), pc.total)
}

// FuzzStateMachine plays random sequences of calls, outcomes and clock moves
// against a breaker and checks its invariants: never more probes in flight
// than HalfOpenProbes; the breaker opens from closed only when a trip rule
// fires on the outcomes of the current generation; it closes only after
// HalfOpenSuccesses successful probes; stale results change nothing.
func FuzzStateMachine(f *testing.F) {
	f.Add([]byte{0, 2, 0, 2, 0, 2, 4, 120, 0, 1, 0, 1, 0, 1})
	f.Add([]byte{0, 0, 0, 0, 2, 2, 2, 2, 4, 200, 4, 200, 0, 0, 0, 1, 1, 1, 0, 5})
	f.Add([]byte{0, 1, 0, 1, 0, 2, 0, 2, 0, 5, 0, 5, 0, 5, 0, 3, 4, 255, 4, 255, 0, 0, 1, 3})
	f.Add([]byte{0, 2, 0, 2, 0, 2, 4, 100, 0, 4, 255, 4, 255, 0, 0, 1, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const (
			consecutive = 3
			window      = 8
			minCalls    = 4
			failRate    = 0.5
			slowRate    = 0.75
			slow        = 100 * time.Millisecond
			probes      = 2
			successes   = 3
		)
		clk := bulwarktest.NewClock(time.Time{})
		var (
			b        *Breaker
			model    []byte // outcomes of the current closed generation: 'f', 's', 'S' (slow), 'F'
			probeOK  int    // successful probes in the current half-open generation
			failures []string
		)
		check := func(e bulwark.Event) {
			if e.Kind != bulwark.EventStateChange {
				return
			}
			switch {
			case e.From == "closed" && e.To == "open":
				if !ruleFires(model, consecutive, window, minCalls, failRate, slowRate) {
					failures = append(failures, "opened by "+e.Reason+" on "+string(model))
				}
			case e.From == "half-open" && e.To == "closed":
				if probeOK < successes {
					failures = append(failures, "closed after too few probes")
				}
			case e.To == "closed" && e.From != "half-open":
				failures = append(failures, "closed from "+e.From)
			}
			model, probeOK = model[:0], 0
		}
		b, err := New(Config{
			Clock: clk, Observer: bulwark.ObserverFunc(check),
			ConsecutiveFailures: consecutive, FailureRate: failRate, WindowCalls: window, MinCalls: minCalls,
			SlowCallRate: slowRate, SlowCallDuration: slow,
			OpenDuration: time.Second, MaxOpenDuration: 4 * time.Second,
			HalfOpenProbes: probes, HalfOpenSuccesses: successes, ProbeTimeout: 2 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		var pc probeCounter
		var held []uint64
		for i := 0; i < len(ops); i++ {
			op := ops[i] % 6
			if op == 0 {
				if tok, err := b.Acquire(); err == nil {
					pc.start(tok)
					held = append(held, tok)
				}
				continue
			}
			if op == 4 {
				d := time.Duration(0)
				if i+1 < len(ops) {
					i++
					d = time.Duration(ops[i]) * 10 * time.Millisecond
				}
				clk.Advance(d)
				continue
			}
			if len(held) == 0 {
				continue
			}
			tok := held[0]
			held = held[1:]
			o, lat, c := bulwark.Success, time.Duration(0), byte('s')
			switch op {
			case 2:
				o, c = bulwark.Failure, 'f'
			case 3:
				o, c = bulwark.Neutral, 0
			case 5:
				lat, c = slow, 'S'
			}
			e := b.cur.Load()
			if sameGen(tok, e.gen) && e.state == Closed && c != 0 {
				model = append(model, c)
			}
			if sameGen(tok, e.gen) && e.state == HalfOpen && c == 's' {
				probeOK++
			}
			pc.end(tok)
			b.Release(tok, o, lat)
		}
		if pc.max > probes {
			t.Errorf("%d probes in flight, want at most %d", pc.max, probes)
		}
		for _, f := range failures {
			t.Error(f)
		}
	})
}

// ruleFires is the reference model of the trip rules over the outcomes of one
// closed generation.
func ruleFires(model []byte, consecutive, window, minCalls int, failRate, slowRate float64) bool {
	run := 0
	for i := len(model) - 1; i >= 0 && (model[i] == 'f' || model[i] == 'F'); i-- {
		run++
	}
	if run >= consecutive {
		return true
	}
	last := model[max(0, len(model)-window):]
	if len(last) < minCalls {
		return false
	}
	var fails, slows int
	for _, c := range last {
		if c == 'f' || c == 'F' {
			fails++
		}
		if c == 'S' || c == 'F' {
			slows++
		}
	}
	return float64(fails) >= failRate*float64(len(last)) || float64(slows) >= slowRate*float64(len(last))
}

func TestTimeWindowWallClock(t *testing.T) {
	defer checkNoLeak(t)()
	b, err := New(Config{FailureRate: 0.5, WindowDuration: time.Hour, MinCalls: 100})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		_ = b.Do(context.Background(), func(context.Context) error { return nil })
	}
	old := b.cur.Load().time
	if calls, _, _ := old.totals(); calls != 1000 {
		t.Errorf("time window holds %d calls after 1000, want 1000", calls)
	}
	if old.timer == nil || old.flags.Load() != ringArmed {
		t.Fatalf("time window on the wall clock: timer %v, flags %d; want an armed timer", old.timer, old.flags.Load())
	}
	b.Reset()
	if !old.stopped || old.timer.Stop() {
		t.Errorf("after Reset the old window's timer is still pending")
	}
}
