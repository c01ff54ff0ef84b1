package fallback_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/fallback"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type rejected struct{}

func (rejected) Error() string             { return "breaker: circuit open" }
func (rejected) RetryAfter() time.Duration { return time.Second }

func cached(_ context.Context, err error) (string, error) { return "cached", nil }

func newFallback(t *testing.T, cfg fallback.Config[string]) *fallback.Fallback[string] {
	t.Helper()
	if cfg.Func == nil {
		cfg.Func = cached
	}
	f, err := fallback.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestNewInvalidConfig(t *testing.T) {
	if _, err := fallback.New(fallback.Config[int]{}); !errors.Is(err, fallback.ErrInvalidConfig) {
		t.Fatalf("New without Func = %v, want ErrInvalidConfig", err)
	}
}

func TestCall(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	boom := errors.New("connection reset")
	for _, tt := range []struct {
		name    string
		ctx     context.Context
		opErr   error
		want    string
		wantErr error
	}{
		{"success", context.Background(), nil, "fresh", nil},
		{"failure", context.Background(), boom, "cached", nil},
		{"rejection", context.Background(), rejected{}, "cached", nil},
		{"deadline", context.Background(), context.DeadlineExceeded, "cached", nil},
		{"permanent", context.Background(), bulwark.Permanent(boom), "", boom},
		{"caller canceled", canceled, context.Canceled, "", context.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var handled error
			f := newFallback(t, fallback.Config[string]{Func: func(_ context.Context, err error) (string, error) {
				handled = err
				return "cached", nil
			}})
			got, err := f.Call(tt.ctx, nil, func(context.Context) (string, error) {
				if tt.opErr != nil {
					return "partial", tt.opErr
				}
				return "fresh", nil
			})
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Call = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
			if tt.want == "cached" && handled != tt.opErr {
				t.Fatalf("Func got %v, want the call's error %v", handled, tt.opErr)
			}
		})
	}
}

// Through a composed guard: the value comes back as bulwark.Call returns it,
// and a refusal by an inner layer is handled.
func TestCallThroughPolicy(t *testing.T) {
	calls := 0
	open := false
	breaker := bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		if open {
			return rejected{}
		}
		return op(ctx)
	})
	retry := bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		var err error
		for range 2 {
			if err = op(ctx); err == nil {
				return nil
			}
		}
		return err
	})
	f := newFallback(t, fallback.Config[string]{})
	op := func(context.Context) (string, error) {
		calls++
		if calls == 1 {
			return "", errors.New("unavailable")
		}
		return "fresh", nil
	}
	guard := bulwark.Compose(retry, breaker)
	if got, err := f.Call(context.Background(), guard, op); got != "fresh" || err != nil {
		t.Fatalf("Call = %q, %v; want the retried value", got, err)
	}
	open = true
	if got, err := f.Call(context.Background(), guard, op); got != "cached" || err != nil {
		t.Fatalf("Call with the breaker open = %q, %v; want the fallback", got, err)
	}
}

func TestWhenAndFuncError(t *testing.T) {
	notFound := errors.New("not found")
	f := newFallback(t, fallback.Config[string]{
		When: func(_ context.Context, err error) bool { return errors.Is(err, notFound) },
		Func: func(_ context.Context, err error) (string, error) {
			return "", fmt.Errorf("no default either: %w", err)
		},
	})
	_, err := f.Call(context.Background(), nil, func(context.Context) (string, error) { return "", errors.New("other") })
	if err == nil || err.Error() != "other" {
		t.Fatalf("an error When does not select: Call = %v, want it as it is", err)
	}
	_, err = f.Call(context.Background(), nil, func(context.Context) (string, error) { return "", notFound })
	if err == nil || err.Error() != "no default either: not found" {
		t.Fatalf("a failing Func: Call = %v, want Func's error", err)
	}
}

// A panic in op goes up as it is, and Func does not run for it.
func TestPanicNotSwallowed(t *testing.T) {
	ran := false
	f := newFallback(t, fallback.Config[string]{
		When: func(context.Context, error) bool { return true },
		Func: func(context.Context, error) (string, error) { ran = true; return "cached", nil },
	})
	defer func() {
		if r := recover(); r != "boom" || ran {
			t.Fatalf("recovered %v (Func ran: %v), want the op's panic \"boom\" and no fallback", r, ran)
		}
	}()
	_, _ = f.Call(context.Background(), bulwark.Compose(), func(context.Context) (string, error) { panic("boom") })
	t.Fatal("Call returned after a panic")
}

type recorder struct {
	mu  sync.Mutex
	evs []bulwark.Event
}

func (r *recorder) Observe(e bulwark.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func TestEvents(t *testing.T) {
	rec := &recorder{}
	fail := errors.New("no cache")
	f := newFallback(t, fallback.Config[string]{Name: "price", Observer: rec, Func: func(_ context.Context, err error) (string, error) {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fail
		}
		return "cached", nil
	}})
	for _, err := range []error{nil, rejected{}, context.DeadlineExceeded, errors.New("reset")} {
		_, _ = f.Call(context.Background(), nil, func(context.Context) (string, error) { return "", err })
	}
	want := []struct {
		reason  string
		outcome bulwark.Outcome
	}{{"rejected", bulwark.Success}, {"deadline", bulwark.Failure}, {"error", bulwark.Success}}
	if len(rec.evs) != len(want) {
		t.Fatalf("%d events, want %d (none for a success)", len(rec.evs), len(want))
	}
	for i, w := range want {
		e := rec.evs[i]
		if e.Kind != bulwark.EventCall || e.Component != "fallback" || e.Name != "price" || e.Reason != w.reason || e.Outcome != w.outcome || e.Err == nil {
			t.Errorf("event %d = %+v, want a call of price, Reason %s, Outcome %v", i, e, w.reason, w.outcome)
		}
	}
}

func TestFallbackConcurrentSafe(t *testing.T) {
	rec := &recorder{}
	f := newFallback(t, fallback.Config[string]{Observer: rec})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 100 {
				got, err := f.Call(context.Background(), nil, func(context.Context) (string, error) {
					if (i+j)%2 == 0 {
						return "", errors.New("down")
					}
					return "fresh", nil
				})
				if err != nil || (got != "fresh" && got != "cached") {
					t.Errorf("Call = %q, %v", got, err)
				}
			}
		})
	}
	wg.Wait()
	if n := len(rec.evs); n != 800 {
		t.Errorf("%d fallback events, want 800", n)
	}
}
