package healthcheck

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

func newDetector(t *testing.T, cfg OutlierConfig) (*OutlierDetector, *recorder, *bulwarktest.Clock) {
	t.Helper()
	clk := bulwarktest.NewClock(time.Time{})
	rec := newRecorder()
	cfg.Clock, cfg.Listener, cfg.Observer = clk, rec, rec
	d, err := NewOutlierDetector(cfg)
	if err != nil {
		t.Fatalf("NewOutlierDetector: %v", err)
	}
	return d, rec, clk
}

func TestOutlierConsecutiveFailures(t *testing.T) {
	tests := []struct {
		name     string
		cfg      OutlierConfig
		outcomes []bulwark.Outcome
		gateway  bool
		want     bool
	}{
		{"four failures stay", OutlierConfig{MaxEjectionPercent: 100}, fails(4), false, false},
		{"five failures eject", OutlierConfig{MaxEjectionPercent: 100}, fails(5), false, true},
		{"a success breaks the run", OutlierConfig{MaxEjectionPercent: 100},
			append(append(fails(4), bulwark.Success), fails(4)...), false, false},
		{"neutral does not break the run", OutlierConfig{MaxEjectionPercent: 100},
			append(append(fails(4), bulwark.Neutral), fails(1)...), false, true},
		{"custom threshold", OutlierConfig{MaxEjectionPercent: 100, ConsecutiveFailures: 2}, fails(2), false, true},
		{"rule disabled", OutlierConfig{MaxEjectionPercent: 100, Rules: SuccessRate}, fails(10), false, false},
		{"gateway rule", OutlierConfig{MaxEjectionPercent: 100, Rules: ConsecutiveGatewayFailures,
			ConsecutiveGatewayFailures: 3}, fails(3), true, true},
		{"gateway rule ignores plain failures", OutlierConfig{MaxEjectionPercent: 100, Rules: ConsecutiveGatewayFailures,
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
	d, _, _ := newDetector(t, OutlierConfig{MaxEjectionPercent: 100, Rules: ConsecutiveGatewayFailures,
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
		cfg  OutlierConfig
	}{
		{"negative interval", OutlierConfig{Interval: -time.Second}},
		{"negative base", OutlierConfig{BaseEjectionTime: -1}},
		{"negative jitter", OutlierConfig{EjectionJitter: -1}},
		{"max below base", OutlierConfig{BaseEjectionTime: time.Minute, MaxEjectionTime: time.Second}},
		{"negative max", OutlierConfig{MaxEjectionTime: -1}},
		{"percent above 100", OutlierConfig{MaxEjectionPercent: 101}},
		{"negative percent", OutlierConfig{MaxEjectionPercent: -1}},
		{"failure percentage above 100", OutlierConfig{FailurePercentageThreshold: 150}},
		{"negative consecutive", OutlierConfig{ConsecutiveFailures: -1}},
		{"negative gateway", OutlierConfig{ConsecutiveGatewayFailures: -5}},
		{"negative stdev factor", OutlierConfig{SuccessRateStdevFactor: -1}},
		{"NaN stdev factor", OutlierConfig{SuccessRateStdevFactor: nan()}},
		{"negative minimum hosts", OutlierConfig{SuccessRateMinimumHosts: -1}},
		{"negative request volume", OutlierConfig{FailurePercentageRequestVolume: -1}},
		{"unknown rule", OutlierConfig{Rules: 1 << 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := NewOutlierDetector(tt.cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("NewOutlierDetector(%+v) = %v, %v; want an error wrapping ErrInvalidConfig", tt.cfg, d, err)
			}
		})
	}
}

func nan() float64 { z := 0.0; return z / z }

func TestOutlierStartClose(t *testing.T) {
	d, _, _ := newDetector(t, OutlierConfig{})
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
	d, rec, _ := newDetector(t, OutlierConfig{Name: "users", MaxEjectionPercent: 100})
	for range 5 {
		d.Record(ep(1), bulwark.Failure, false)
	}
	got := rec.eventsOf(bulwark.EventEjected)
	want := []bulwark.Event{{Kind: bulwark.EventEjected, Component: bulwark.ComponentOutlier, Name: "users",
		Endpoint: ep(1), Delay: 30 * time.Second, Reason: "consecutive_failures", Attempt: 1}}
	if !slices.Equal(got, want) {
		t.Errorf("events = %+v, want %+v", got, want)
	}
}
