package outlier

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

func newDetector(t *testing.T, cfg Config) (*Detector, *recorder, *bulwarktest.Clock) {
	t.Helper()
	clk := bulwarktest.NewClock(time.Time{})
	rec := newRecorder()
	cfg.Clock, cfg.Listener, cfg.Observer = clk, rec, rec
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d, rec, clk
}

func TestOutlierConsecutiveFailures(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		outcomes []bulwark.Outcome
		gateway  bool
		want     bool
	}{
		{"four failures stay", Config{MaxEjectionPercent: 100}, fails(4), false, false},
		{"five failures eject", Config{MaxEjectionPercent: 100}, fails(5), false, true},
		{"a success breaks the run", Config{MaxEjectionPercent: 100},
			append(append(fails(4), bulwark.Success), fails(4)...), false, false},
		{"neutral does not break the run", Config{MaxEjectionPercent: 100},
			append(append(fails(4), bulwark.Neutral), fails(1)...), false, true},
		{"custom threshold", Config{MaxEjectionPercent: 100, ConsecutiveFailures: 2}, fails(2), false, true},
		{"rule disabled", Config{MaxEjectionPercent: 100, Rules: RuleSuccessRate}, fails(10), false, false},
		{"gateway rule", Config{MaxEjectionPercent: 100, Rules: RuleConsecutiveGatewayFailures,
			ConsecutiveGatewayFailures: 3}, fails(3), true, true},
		{"gateway rule ignores plain failures", Config{MaxEjectionPercent: 100, Rules: RuleConsecutiveGatewayFailures,
			ConsecutiveGatewayFailures: 3}, fails(5), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, rec, _ := newDetector(t, tt.cfg)
			for _, o := range tt.outcomes {
				d.Record(ep(1), o, tt.gateway)
			}
			if got := d.Ejected(ep(1)); got != tt.want {
				t.Errorf("Ejected(%q) after %v = %v, want %v", ep(1).Addr, tt.outcomes, got, tt.want)
			}
			if tt.want {
				if got, want := rec.lines(), []string{"ejection 10.0.0.1:80 true"}; !slices.Equal(got, want) {
					t.Errorf("Listener got %q, want %q", got, want)
				}
			}
		})
	}
}

func TestOutlierGatewayRunBrokenByOtherFailure(t *testing.T) {
	d, _, _ := newDetector(t, Config{MaxEjectionPercent: 100, Rules: RuleConsecutiveGatewayFailures,
		ConsecutiveGatewayFailures: 3})
	d.Record(ep(1), bulwark.Failure, true)
	d.Record(ep(1), bulwark.Failure, true)
	d.Record(ep(1), bulwark.Failure, false)
	d.Record(ep(1), bulwark.Failure, true)
	if d.Ejected(ep(1)) {
		t.Errorf("Ejected(%q) = true after gateway, gateway, other, gateway; want false", ep(1).Addr)
	}
	d.Record(ep(1), bulwark.Failure, true)
	d.Record(ep(1), bulwark.Failure, true)
	if !d.Ejected(ep(1)) {
		t.Errorf("Ejected(%q) = false after three gateway failures in a row; want true", ep(1).Addr)
	}
}

func fails(n int) []bulwark.Outcome {
	out := make([]bulwark.Outcome, n)
	for i := range out {
		out[i] = bulwark.Failure
	}
	return out
}

func TestNewOutlierDetectorErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"negative interval", Config{Interval: -time.Second}},
		{"negative base", Config{BaseEjectionTime: -1}},
		{"negative jitter", Config{EjectionJitter: -1}},
		{"max below base", Config{BaseEjectionTime: time.Minute, MaxEjectionTime: time.Second}},
		{"negative max", Config{MaxEjectionTime: -1}},
		{"percent above 100", Config{MaxEjectionPercent: 101}},
		{"negative percent", Config{MaxEjectionPercent: -1}},
		{"failure percentage above 100", Config{FailurePercentageThreshold: 150}},
		{"negative consecutive", Config{ConsecutiveFailures: -1}},
		{"negative gateway", Config{ConsecutiveGatewayFailures: -5}},
		{"negative stdev factor", Config{SuccessRateStdevFactor: -1}},
		{"NaN stdev factor", Config{SuccessRateStdevFactor: nan()}},
		{"negative minimum hosts", Config{SuccessRateMinimumHosts: -1}},
		{"negative request volume", Config{FailurePercentageRequestVolume: -1}},
		{"unknown rule", Config{Rules: 1 << 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New(%+v) = %v, %v; want an error wrapping ErrInvalidConfig", tt.cfg, d, err)
			}
		})
	}
}

func nan() float64 { z := 0.0; return z / z }

func TestOutlierStartClose(t *testing.T) {
	d, _, _ := newDetector(t, Config{})
	if err := d.Start(context.Background()); err != nil {
		t.Fatalf("Start = %v, want nil", err)
	}
	if err := d.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close = %v, want nil", err)
	}
	if err := d.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}

func TestOutlierEjectionEvent(t *testing.T) {
	d, rec, _ := newDetector(t, Config{Name: "users", MaxEjectionPercent: 100})
	for range 5 {
		d.Record(ep(1), bulwark.Failure, false)
	}
	got := rec.eventsOf(bulwark.EventEjected)
	want := []bulwark.Event{{Kind: bulwark.EventEjected, Component: bulwark.ComponentOutlier, Name: "users",
		Endpoint: ep(1), Delay: 30 * time.Second, Reason: "consecutive_failures", Count: 1}}
	if !slices.Equal(got, want) {
		t.Errorf("events = %+v, want %+v", got, want)
	}
}

// waitIdle waits until the detector's goroutine has handled every wake and
// timer due at the clock's current time.
func (d *Detector) waitIdle(t *testing.T) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		d.mu.Lock()
		for d.woken || !d.clk.Now().Before(d.armedAt) || !d.notes.Idle() {
			d.idle.Wait()
		}
		d.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("outlier detector not idle after 10s")
	}
}

// feed records, for each host i, ok[i] successes then bad[i] failures.
func feed(d *Detector, ok, bad []int) {
	for i := range ok {
		for range ok[i] {
			d.Record(ep(i), bulwark.Success, false)
		}
		for range bad[i] {
			d.Record(ep(i), bulwark.Failure, false)
			d.Record(ep(i), bulwark.Success, false) // keep consecutive rules out of it
			d.Record(ep(i), bulwark.Failure, false)
		}
	}
}

func ejectedSet(d *Detector, n int) []int {
	var out []int
	for i := range n {
		if d.Ejected(ep(i)) {
			out = append(out, i)
		}
	}
	return out
}

func TestOutlierSuccessRate(t *testing.T) {
	// Each host gets ok[i] successes and 2*bad[i] failures (and bad[i] more
	// successes).
	tests := []struct {
		name string
		cfg  Config
		ok   []int
		bad  []int
		want []int
	}{
		{"one outlier among six", Config{},
			[]int{100, 100, 100, 100, 100, 60}, []int{0, 1, 0, 1, 0, 20}, []int{5}},
		// With 4 hosts no z-score reaches 1.9 (the largest is √3): k = 1.
		{"too few hosts with volume", Config{SuccessRateStdevFactor: 1},
			[]int{100, 100, 100, 60, 10}, []int{0, 1, 0, 20, 0}, nil},
		{"minimum hosts lowered", Config{SuccessRateStdevFactor: 1, SuccessRateMinimumHosts: 4},
			[]int{100, 100, 100, 60, 10}, []int{0, 1, 0, 20, 0}, []int{3}},
		{"outlier below request volume", Config{},
			[]int{100, 100, 100, 100, 100, 30}, []int{0, 1, 0, 1, 0, 20}, nil},
		{"uniform fleet", Config{},
			[]int{90, 90, 90, 90, 90, 90}, []int{5, 5, 5, 5, 5, 5}, nil},
		{"larger stdev factor spares it", Config{SuccessRateStdevFactor: 3},
			[]int{100, 100, 100, 100, 100, 60}, []int{0, 1, 0, 1, 0, 20}, nil},
		{"rule disabled", Config{Rules: RuleConsecutiveFailures},
			[]int{100, 100, 100, 100, 100, 60}, []int{0, 1, 0, 1, 0, 20}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.MaxEjectionPercent = 50
			d, rec, clk := newDetector(t, tt.cfg)
			feed(d, tt.ok, tt.bad)
			d.EvaluateAt(clk.Now().Add(10 * time.Second))
			if got := ejectedSet(d, len(tt.ok)); !slices.Equal(got, tt.want) {
				t.Errorf("ejected %v, want %v", got, tt.want)
			}
			for _, e := range rec.eventsOf(bulwark.EventEjected) {
				if e.Reason != "success_rate" {
					t.Errorf("ejection reason %q, want success_rate", e.Reason)
				}
			}
			// The next interval starts afresh: without calls, no ejection.
			d.EvaluateAt(clk.Now().Add(20 * time.Second))
			if got := len(rec.eventsOf(bulwark.EventEjected)); got != len(tt.want) {
				t.Errorf("%d ejections after an empty interval, want %d", got, len(tt.want))
			}
		})
	}
}

func TestOutlierFailurePercentage(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   []int
		bad  []int // 2*bad failures, bad more successes
		want []int
	}{
		{"all succeed", Config{},
			[]int{50, 50, 50, 50, 0}, []int{0, 0, 0, 0, 0}, nil},
		{"67 % failures, below 85", Config{},
			[]int{50, 50, 50, 50, 0}, []int{0, 0, 0, 0, 45}, nil}, // 45 ok of 135
		{"67 % failures, above 60", Config{FailurePercentageThreshold: 60},
			[]int{50, 50, 50, 50, 0}, []int{0, 0, 0, 0, 45}, []int{4}},
		{"too few hosts", Config{FailurePercentageThreshold: 60},
			[]int{50, 50, 50, 0}, []int{0, 0, 0, 45}, nil},
		{"below request volume", Config{FailurePercentageThreshold: 60, FailurePercentageRequestVolume: 200},
			[]int{250, 250, 250, 250, 0}, []int{0, 0, 0, 0, 45}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.MaxEjectionPercent = 50
			tt.cfg.Rules = RuleFailurePercentage
			d, rec, clk := newDetector(t, tt.cfg)
			feed(d, tt.ok, tt.bad)
			d.EvaluateAt(clk.Now().Add(10 * time.Second))
			if got := ejectedSet(d, len(tt.ok)); !slices.Equal(got, tt.want) {
				t.Errorf("ejected %v, want %v", got, tt.want)
			}
			for _, e := range rec.eventsOf(bulwark.EventEjected) {
				if e.Reason != "failure_percentage" {
					t.Errorf("ejection reason %q, want failure_percentage", e.Reason)
				}
			}
		})
	}
}

func TestOutlierFailurePercentageAllFailing(t *testing.T) {
	d, _, clk := newDetector(t, Config{Rules: RuleFailurePercentage, MaxEjectionPercent: 50})
	for i := range 5 {
		for range 60 {
			if i == 4 {
				d.Record(ep(i), bulwark.Failure, false)
			} else {
				d.Record(ep(i), bulwark.Success, false)
			}
		}
	}
	d.EvaluateAt(clk.Now().Add(10 * time.Second))
	if got := ejectedSet(d, 5); !slices.Equal(got, []int{4}) {
		t.Errorf("ejected %v, want [4]", got)
	}
}

func TestOutlierEjectionTimeGrowsAndCaps(t *testing.T) {
	d, rec, clk := newDetector(t, Config{BaseEjectionTime: 10 * time.Second, MaxEjectionTime: 35 * time.Second,
		MaxEjectionPercent: 100, ConsecutiveFailures: 1})
	want := []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 35 * time.Second, 35 * time.Second}
	for i, w := range want {
		d.Record(ep(1), bulwark.Failure, false)
		evs := rec.eventsOf(bulwark.EventEjected)
		if len(evs) != i+1 {
			t.Fatalf("ejection %d: %d events, want %d", i+1, len(evs), i+1)
		}
		if e := evs[i]; e.Delay != w || e.Count != i+1 {
			t.Errorf("ejection %d: Delay %v, Count %d; want %v, %d", i+1, e.Delay, e.Count, w, i+1)
		}
		// Come back exactly at the end of the ejection time, not before.
		clk.Advance(w - time.Millisecond)
		d.EvaluateAt(clk.Now())
		if !d.Ejected(ep(1)) {
			t.Fatalf("ejection %d: back after %v, want %v", i+1, w-time.Millisecond, w)
		}
		clk.Advance(time.Millisecond)
		d.EvaluateAt(clk.Now())
		if d.Ejected(ep(1)) {
			t.Fatalf("ejection %d: still ejected after %v", i+1, w)
		}
	}
	// A whole interval back in service forgives one ejection.
	clk.Advance(10 * time.Second)
	d.EvaluateAt(clk.Now())
	d.Record(ep(1), bulwark.Failure, false)
	evs := rec.eventsOf(bulwark.EventEjected)
	if e := evs[len(evs)-1]; e.Count != 5 || e.Delay != 35*time.Second {
		t.Errorf("after one good interval: Count %d, Delay %v; want 5, 35s", e.Count, e.Delay)
	}
	if got := len(rec.eventsOf(bulwark.EventUnejected)); got != 5 {
		t.Errorf("%d un-ejection events, want 5", got)
	}
}

func TestOutlierEjectionJitter(t *testing.T) {
	d, rec, _ := newDetector(t, Config{BaseEjectionTime: 10 * time.Second, EjectionJitter: time.Second,
		MaxEjectionPercent: 100, ConsecutiveFailures: 1})
	for i := range 50 {
		d.Record(ep(i), bulwark.Failure, false)
	}
	var delays []time.Duration
	for _, e := range rec.eventsOf(bulwark.EventEjected) {
		if e.Delay < 10*time.Second || e.Delay > 11*time.Second {
			t.Errorf("Delay %v, want within [10s, 11s]", e.Delay)
		}
		delays = append(delays, e.Delay)
	}
	if slices.Min(delays) == slices.Max(delays) {
		t.Errorf("50 jittered delays all equal %v", delays[0])
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		name   string
		hosts  int
		pct    int
		always bool
		want   int
	}{
		{"10 % of 10", 10, 10, false, 1},
		{"20 % of 10", 10, 20, false, 2},
		{"default of 30", 30, 0, false, 3},
		{"10 % of 3", 3, 10, false, 0},
		{"10 % of 3, always one", 3, 10, true, 1},
		{"50 % of 5, always one", 5, 50, true, 2},
		{"100 %", 4, 100, false, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _, _ := newDetector(t, Config{MaxEjectionPercent: tt.pct, AlwaysEjectOne: tt.always})
			for i := range tt.hosts {
				d.Record(ep(i), bulwark.Success, false)
			}
			for i := range tt.hosts {
				for range 5 {
					d.Record(ep(i), bulwark.Failure, false)
				}
			}
			if got := len(ejectedSet(d, tt.hosts)); got != tt.want {
				t.Errorf("%d of %d hosts ejected with MaxEjectionPercent %d, AlwaysEjectOne %v; want %d",
					got, tt.hosts, tt.pct, tt.always, tt.want)
			}
		})
	}
}

func TestOutlierUnejectionByStart(t *testing.T) {
	d, rec, clk := newDetector(t, Config{BaseEjectionTime: 25 * time.Second, MaxEjectionPercent: 100})
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for range 5 {
		d.Record(ep(1), bulwark.Failure, false)
	}
	d.waitIdle(t)
	ejectedAt := clk.Now()
	for d.Ejected(ep(1)) {
		clk.Advance(time.Second)
		d.waitIdle(t)
		if clk.Since(ejectedAt) > time.Minute {
			t.Fatal("still ejected after a minute")
		}
	}
	if got := clk.Since(ejectedAt); got != 25*time.Second {
		t.Errorf("back after %v, want 25s", got)
	}
	if got, want := rec.lines(), []string{"ejection 10.0.0.1:80 true", "ejection 10.0.0.1:80 false"}; !slices.Equal(got, want) {
		t.Errorf("Listener got %q, want %q", got, want)
	}
}

func TestOutlierIntervalByStart(t *testing.T) {
	d, _, clk := newDetector(t, Config{Interval: 5 * time.Second, MaxEjectionPercent: 50})
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	feed(d, []int{100, 100, 100, 100, 100, 60}, []int{0, 1, 0, 1, 0, 20})
	clk.Advance(5*time.Second - time.Millisecond)
	d.waitIdle(t)
	if d.Ejected(ep(5)) {
		t.Fatal("ejected before the interval ended")
	}
	clk.Advance(time.Millisecond)
	d.waitIdle(t)
	if !d.Ejected(ep(5)) {
		t.Error("not ejected when the interval ended")
	}
}

// eps returns ep(i) for each i.
func eps(is ...int) []bulwark.Endpoint {
	var out []bulwark.Endpoint
	for _, i := range is {
		out = append(out, ep(i))
	}
	return out
}

func TestOutlierSetEndpoints(t *testing.T) {
	d, rec, _ := newDetector(t, Config{MaxEjectionPercent: 100})
	for range 5 {
		d.Record(ep(1), bulwark.Failure, false)
	}
	if !d.Ejected(ep(1)) {
		t.Fatal("not ejected after 5 failures")
	}
	if err := d.SetEndpoints(eps(2, 3)); err != nil {
		t.Fatal(err)
	}
	if d.Ejected(ep(1)) {
		t.Error("Ejected after it left the set")
	}
	if got, want := rec.lines(), []string{"ejection 10.0.0.1:80 true", "ejection 10.0.0.1:80 false"}; !slices.Equal(got, want) {
		t.Errorf("Listener got %q, want %q", got, want)
	}
	// Only members count now.
	for range 5 {
		d.Record(ep(1), bulwark.Failure, false)
		d.Record(ep(9), bulwark.Failure, false)
	}
	if d.Ejected(ep(1)) || d.Ejected(ep(9)) {
		t.Error("a non-member was ejected")
	}
	if n := len(*d.hosts.Load()); n != 2 {
		t.Errorf("detector tracks %d endpoints, want the 2 members", n)
	}
	// Back in the set, with a clean slate.
	if err := d.SetEndpoints(eps(1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		d.Record(ep(1), bulwark.Failure, false)
	}
	if d.Ejected(ep(1)) {
		t.Error("ejected after 4 failures since it came back")
	}
	if err := d.SetEndpoints([]bulwark.Endpoint{ep(1), ep(1)}); !errors.Is(err, bulwark.ErrInvalidEndpoint) {
		t.Errorf("SetEndpoints(duplicate) = %v, want ErrInvalidEndpoint", err)
	}
}

func TestOutlierRecordAllocs(t *testing.T) {
	d, _, _ := newDetector(t, Config{})
	d.Record(ep(1), bulwark.Success, false)
	e := ep(1)
	if n := testing.AllocsPerRun(1000, func() {
		d.Record(e, bulwark.Success, false)
		d.Record(e, bulwark.Failure, true)
	}); n != 0 {
		t.Errorf("Record allocates %v times per call, want 0", n)
	}
}

func TestOutlierConcurrentSafe(t *testing.T) {
	d, _, clk := newDetector(t, Config{MaxEjectionPercent: 30, ConsecutiveFailures: 3,
		Rules: allRules, SuccessRateRequestVolume: 10, FailurePercentageRequestVolume: 10, Interval: time.Second})
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				e := ep(i % 20)
				switch {
				case g == 0 && i%100 == 0:
					clk.Advance(300 * time.Millisecond)
				case g == 1 && i%150 == 0:
					set := eps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19)
					_ = d.SetEndpoints(slices.Delete(set, i%20, i%20+1))
				case g == 2 && i%50 == 0:
					d.EvaluateAt(clk.Now())
				case (i+g)%3 == 0:
					d.Record(e, bulwark.Failure, i%2 == 0)
				default:
					d.Record(e, bulwark.Success, false)
				}
				d.Ejected(e)
			}
		}()
	}
	wg.Wait()
	if err := d.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, h := range *d.hosts.Load() {
		if !h.ejectedUntil.IsZero() {
			n++
		}
	}
	if n != d.ejected {
		t.Errorf("%d hosts ejected, counter says %d", n, d.ejected)
	}
}

func TestOutlierConsecutiveRetriesAfterRefusal(t *testing.T) {
	d, _, _ := newDetector(t, Config{MaxEjectionPercent: 50})
	for i := range 4 {
		d.Record(ep(i), bulwark.Success, false)
	}
	for range 5 {
		d.Record(ep(0), bulwark.Failure, false)
		d.Record(ep(1), bulwark.Failure, false)
		d.Record(ep(2), bulwark.Failure, false) // refused: 2 of 4 is the cap
	}
	if d.Ejected(ep(2)) {
		t.Fatal("third of four hosts ejected with a 50 % cap")
	}
	if err := d.SetEndpoints(eps(1, 2, 3, 4)); err != nil { // 1 of 4 ejected now
		t.Fatal(err)
	}
	for range 4 {
		d.Record(ep(2), bulwark.Failure, false)
	}
	if d.Ejected(ep(2)) {
		t.Error("ejected after 9 failures in a row, want at the 10th")
	}
	d.Record(ep(2), bulwark.Failure, false)
	if !d.Ejected(ep(2)) {
		t.Error("not ejected after 10 failures in a row once the cap allowed it")
	}
}

type reentrantDetector struct {
	d   *Detector
	got []bool
}

func (r *reentrantDetector) EjectionChanged(ep bulwark.Endpoint, ejected bool) {
	r.got = append(r.got, r.d.Ejected(ep))
	r.d.Record(ep, bulwark.Success, false)
}

func TestOutlierListenerOutsideLock(t *testing.T) {
	r := &reentrantDetector{}
	d, err := New(Config{MaxEjectionPercent: 100, Listener: r})
	if err != nil {
		t.Fatal(err)
	}
	r.d = d
	for range 5 {
		d.Record(ep(1), bulwark.Failure, false)
	}
	if !slices.Equal(r.got, []bool{true}) {
		t.Errorf("Ejected from inside EjectionChanged = %v, want [true]", r.got)
	}
}

// TestOutlierCapCountsCurrentMembers: ten endpoints scaled down to two, with
// a 50 % cap: faults on both live ones eject one of them, not both.
func TestOutlierCapCountsCurrentMembers(t *testing.T) {
	ten := eps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	for _, tt := range []struct {
		name  string
		fault []int // failing before the scale-down
	}{
		{"healthy before", nil},
		{"the two survivors ejected before", []int{8, 9}},
		{"others ejected before", []int{0, 1, 2, 3, 4}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, _, _ := newDetector(t, Config{MaxEjectionPercent: 50})
			if err := d.SetEndpoints(ten); err != nil {
				t.Fatal(err)
			}
			for _, i := range tt.fault {
				for range 5 {
					d.Record(ep(i), bulwark.Failure, true)
				}
			}
			if got, want := len(ejectedSet(d, 10)), len(tt.fault); got != want {
				t.Fatalf("%d of 10 ejected before the scale-down, want %d", got, want)
			}
			if err := d.SetEndpoints(eps(8, 9)); err != nil {
				t.Fatal(err)
			}
			if got := len(ejectedSet(d, 10)); got > 1 {
				t.Errorf("%d of the 2 members ejected right after the scale-down, want at most 1 (50 %%)", got)
			}
			for range 10 {
				d.Record(ep(8), bulwark.Failure, true)
				d.Record(ep(9), bulwark.Failure, true)
			}
			if got := ejectedSet(d, 10); len(got) != 1 {
				t.Errorf("ejected after faults on both members = %v, want exactly 1 of 2 (50 %%)", got)
			}
			if d.ejected != 1 {
				t.Errorf("ejection count = %d, want 1", d.ejected)
			}
		})
	}
}
