package healthcheck

import (
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

// FuzzOutlierInvariants drives an OutlierDetector with any sequence of
// outcomes, evaluations, removals and clock moves, and checks after each step
// that an ejection never takes the ejected share above MaxEjectionPercent
// (but for the one AlwaysEjectOne allows), that ejection times follow
// min(base × count, cap) plus at most the jitter, so they never decrease with
// the count and never pass the cap, and that the Listener saw exactly the
// ejections in force.
func FuzzOutlierInvariants(f *testing.F) {
	f.Add(uint8(10), false, uint8(0), []byte{0x18, 0x18, 0x18, 0x18, 0x18, 0x06, 0x18, 0x19, 0x19, 0x19, 0x19, 0x19})
	f.Add(uint8(50), true, uint8(3), []byte{0x18, 0x19, 0x1a, 0x1b, 0x18, 0x18, 0x18, 0x18, 0x30, 0x31, 0x32, 0x30, 0x30, 0xfe})
	f.Add(uint8(0), true, uint8(1), []byte{0x28, 0x28, 0x28, 0x28, 0x28, 0x38, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0xff, 0x28, 0x28})
	f.Add(uint8(100), false, uint8(2), []byte{0x00, 0x01, 0x02, 0x18, 0x19, 0x1a, 0x1a, 0x1a, 0x1a, 0x1a, 0x3e, 0x3f, 0xc6, 0x18})
	f.Fuzz(func(t *testing.T, pct uint8, always bool, jitterSec uint8, ops []byte) {
		const (
			hosts = 8
			base  = 10 * time.Second
			limit = 45 * time.Second
		)
		jitter := time.Duration(jitterSec%4) * time.Second
		clk := bulwarktest.NewClock(time.Time{})
		var (
			ejected = map[string]bool{} // as the Listener was told
			events  []bulwark.Event
		)
		cfg := OutlierConfig{
			Rules:                          allRules,
			Interval:                       10 * time.Second,
			BaseEjectionTime:               base,
			MaxEjectionTime:                limit,
			EjectionJitter:                 jitter,
			MaxEjectionPercent:             int(pct % 101),
			AlwaysEjectOne:                 always,
			ConsecutiveFailures:            4,
			ConsecutiveGatewayFailures:     3,
			SuccessRateMinimumHosts:        3,
			SuccessRateRequestVolume:       4,
			FailurePercentageMinimumHosts:  3,
			FailurePercentageRequestVolume: 4,
			FailurePercentageThreshold:     70,
			Clock:                          clk,
			Observer:                       bulwark.ObserverFunc(func(e bulwark.Event) { events = append(events, e) }),
		}
		maxPct := cfg.MaxEjectionPercent
		if maxPct == 0 {
			maxPct = 10
		}
		cfg.Listener = listenerFunc(func(e bulwark.Endpoint, on bool) {
			if ejected[e.Addr] == on {
				t.Fatalf("EjectionChanged(%q, %v) twice in a row", e.Addr, on)
			}
			ejected[e.Addr] = on
		})
		d, err := NewOutlierDetector(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			e := ep(int(op % hosts))
			events = events[:0]
			switch op >> 3 % 8 {
			case 0, 1, 2:
				d.Record(e, bulwark.Success, false)
			case 3, 4:
				d.Record(e, bulwark.Failure, false)
			case 5:
				d.Record(e, bulwark.Failure, true)
			case 6:
				clk.Advance(time.Duration(op>>6+1) * 4 * time.Second)
				d.EvaluateAt(clk.Now())
			case 7:
				if op>>6 == 3 { // every host but e, as members
					var set []bulwark.Endpoint
					for i := range int(hosts) {
						if ep(i) != e {
							set = append(set, ep(i))
						}
					}
					if err := d.SetEndpoints(set); err != nil {
						t.Fatal(err)
					}
				} else {
					d.Record(e, bulwark.Neutral, false)
				}
			}
			total := len(*d.hosts.Load())
			n := 0
			for _, on := range ejected {
				if on {
					n++
				}
			}
			for _, ev := range events {
				if ev.Kind != bulwark.EventEjected {
					continue
				}
				if n*100 > maxPct*total && !(always && n == 1) {
					t.Fatalf("%d of %d hosts ejected, above %d %% (AlwaysEjectOne %v)", n, total, maxPct, always)
				}
				want := min(base*time.Duration(ev.Attempt), limit)
				if ev.Delay < want || ev.Delay > want+jitter || ev.Delay > limit+jitter {
					t.Fatalf("ejection %d of %s lasts %v, want within [%v, %v]", ev.Attempt, ev.Endpoint.Addr, ev.Delay, want, want+jitter)
				}
			}
			d.mu.Lock()
			for addr, h := range *d.hosts.Load() {
				if got := !h.ejectedUntil.IsZero(); got != ejected[addr] {
					t.Fatalf("host %s ejected = %v, but the Listener was told %v", addr, got, ejected[addr])
				}
			}
			if d.ejected != n {
				t.Fatalf("detector counts %d ejected, the Listener was told of %d", d.ejected, n)
			}
			d.mu.Unlock()
		}
	})
}

// listenerFunc is a Listener of ejections only.
type listenerFunc func(ep bulwark.Endpoint, ejected bool)

func (f listenerFunc) HealthChanged(bulwark.Endpoint, bool)       {}
func (f listenerFunc) EjectionChanged(e bulwark.Endpoint, b bool) { f(e, b) }
