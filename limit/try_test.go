package limit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/limit"
)

// events records the events of a limiter.
type events struct{ evs []bulwark.Event }

func (e *events) Observe(ev bulwark.Event) { e.evs = append(e.evs, ev) }

func (e *events) count(k bulwark.EventKind) int {
	n := 0
	for _, ev := range e.evs {
		if ev.Kind == k {
			n++
		}
	}
	return n
}

// TryAcquire admits up to the limit, then refuses at once, silently, with an
// error that is a refusal for the limit; Release gives the slot back.
func TestTryAcquireRefusesSilently(t *testing.T) {
	obs := &events{}
	l, err := limit.New(limit.Config{Name: "lb/10.0.0.1:80", InitialLimit: 3, MinLimit: 3, MaxLimit: 3, Headroom: -1, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	var tokens []uint64
	for range 3 {
		tok, err := l.TryAcquire()
		if err != nil {
			t.Fatalf("TryAcquire under the limit of 3 = %v", err)
		}
		tokens = append(tokens, tok)
	}
	_, err = l.TryAcquire()
	var rej *limit.RejectedError
	var ra interface{ RetryAfter() time.Duration }
	if !errors.Is(err, limit.ErrRejected) || !errors.As(err, &rej) || !errors.As(err, &ra) {
		t.Fatalf("TryAcquire at the limit = %v, want a refusal wrapping ErrRejected, with a *RejectedError and RetryAfter", err)
	}
	if rej.Reason != limit.ReasonLimit || rej.Name != "lb/10.0.0.1:80" || rej.Criticality != limit.Normal {
		t.Errorf("refusal = %+v, want ReasonLimit, the limiter's name, Normal", rej)
	}
	if want := "limit: rejected (lb/10.0.0.1:80, limit, normal)"; err.Error() != want {
		t.Errorf("refusal message = %q, want %q", err.Error(), want)
	}
	if n := obs.count(bulwark.EventRejected); n != 0 {
		t.Errorf("TryAcquire's refusal emitted %d EventRejected, want none (the caller may go elsewhere)", n)
	}
	if allocs := testing.AllocsPerRun(100, func() { _, _ = l.TryAcquire() }); allocs != 0 {
		t.Errorf("a refused TryAcquire allocates %v, want 0", allocs)
	}
	for i, o := range []bulwark.Outcome{bulwark.Success, bulwark.Failure, bulwark.Neutral} {
		l.Release(tokens[i], o, false)
	}
	if got := l.InFlight(); got != 0 {
		t.Errorf("InFlight after releasing every token = %d, want 0", got)
	}
	allocs := testing.AllocsPerRun(100, func() {
		tok, err := l.TryAcquire()
		if err != nil {
			t.Fatal(err)
		}
		l.Release(tok, bulwark.Success, false)
	})
	if allocs != 0 {
		t.Errorf("TryAcquire and Release allocate %v, want 0", allocs)
	}
}

// A limiter fed through TryAcquire and Release learns as one fed through
// Acquire and the Permit: Success as Done(nil), Failure as a failure that is
// not a timeout, Neutral as a cancellation, and overload as Drop (fast
// failures and cancellations end before the others: learning from their
// latency would move the limit). Two
// limiters on one clock see the same calls, one through each API, and their
// limits must stay equal round after round, and move.
func TestReleaseLearnsAsPermit(t *testing.T) {
	type end struct {
		permit  func(p *limit.Permit)
		outcome bulwark.Outcome
		over    bool
		fast    bool // ends at once, before the others are answered
	}
	success := end{func(p *limit.Permit) { p.Done(nil) }, bulwark.Success, false, false}
	phases := []struct {
		name   string
		rounds int
		knee   int
		end    func(i int) end // how call i of a round ends
	}{
		{"successes find the knee", 300, 40, func(int) end { return success }},
		{"fast failures and cancellations teach nothing", 100, 40, func(i int) end {
			switch i % 5 {
			case 0, 1:
				return end{func(p *limit.Permit) { p.Done(errors.New("bad request")) }, bulwark.Failure, false, true}
			case 2, 3:
				return end{func(p *limit.Permit) { p.Done(context.Canceled) }, bulwark.Neutral, false, true}
			}
			return success
		}},
		{"a third refused as too busy", 100, 40, func(i int) end {
			if i%3 == 0 {
				return end{func(p *limit.Permit) { p.Drop() }, bulwark.Failure, true, false}
			}
			return success
		}},
		{"timeouts", 100, 20, func(i int) end {
			if i%2 == 0 {
				return end{func(p *limit.Permit) { p.Done(context.DeadlineExceeded) }, bulwark.Success, true, false}
			}
			return success
		}},
	}
	clk := bulwarktest.NewClock(time.Time{})
	cfg := limit.Config{Clock: clk, Headroom: -1}
	byPermit, err := limit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	byToken, err := limit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The calls start on the tokens' 16 ns units (l.now() counts from 1),
	// which then keep the starts exactly.
	clk.Advance(15)
	const demand = 200
	permits := make([]limit.Permit, 0, demand)
	tokens := make([]uint64, 0, demand)
	for _, ph := range phases {
		srv := server{base: 10 * time.Millisecond, knee: ph.knee}
		before := byPermit.Limit()
		for round := range ph.rounds {
			permits, tokens = permits[:0], tokens[:0]
			for range demand {
				p, err := byPermit.Acquire(context.Background())
				if err != nil {
					break
				}
				permits = append(permits, p)
			}
			for range demand {
				tok, err := byToken.TryAcquire()
				if err != nil {
					break
				}
				tokens = append(tokens, tok)
			}
			if len(permits) != len(tokens) {
				t.Fatalf("%s, round %d: %d calls admitted through Acquire, %d through TryAcquire; want the same", ph.name, round, len(permits), len(tokens))
			}
			for _, fast := range []bool{true, false} {
				if !fast {
					clk.Advance(srv.latency(len(permits)))
				}
				for i := range permits {
					if e := ph.end(i); e.fast == fast {
						e.permit(&permits[i])
						byToken.Release(tokens[i], e.outcome, e.over)
					}
				}
			}
			if a, b := byPermit.Limit(), byToken.Limit(); a != b {
				t.Fatalf("%s, round %d: limit %d through Permit, %d through Release; want the same", ph.name, round, a, b)
			}
		}
		t.Logf("%s: limit %d → %d", ph.name, before, byPermit.Limit())
		if ph.name != "fast failures and cancellations teach nothing" && byPermit.Limit() == before {
			t.Errorf("%s: the limit stayed at %d; the phase tests nothing", ph.name, before)
		}
	}
}
