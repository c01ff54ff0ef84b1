package bulwark_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bulwark-go/bulwark"
)

// recorder is a Policy that records when it enters and leaves.
type recorder struct {
	name string
	log  *[]string
}

func (r recorder) Do(ctx context.Context, op func(context.Context) error) error {
	*r.log = append(*r.log, r.name+">")
	err := op(ctx)
	*r.log = append(*r.log, "<"+r.name)
	return err
}

// retrier runs op up to n times until it succeeds.
type retrier struct{ n int }

func (r retrier) Do(ctx context.Context, op func(context.Context) error) error {
	var err error
	for i := 0; i < r.n; i++ {
		if err = op(ctx); err == nil || bulwark.IsPermanent(err) {
			return err
		}
	}
	return err
}

func TestComposeOrder(t *testing.T) {
	tests := []struct {
		name  string
		names []string
		want  string
	}{
		{"none", nil, "op"},
		{"one", []string{"a"}, "a> op <a"},
		{"two", []string{"a", "b"}, "a> b> op <b <a"},
		{"three", []string{"a", "b", "c"}, "a> b> c> op <c <b <a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log []string
			var ps []bulwark.Policy
			for _, n := range tt.names {
				ps = append(ps, recorder{n, &log})
			}
			err := bulwark.Compose(ps...).Do(context.Background(), func(context.Context) error {
				log = append(log, "op")
				return nil
			})
			if err != nil {
				t.Fatalf("Do = %v, want nil", err)
			}
			if got := strings.Join(log, " "); got != tt.want {
				t.Errorf("Compose(%v) ran %q, want %q", tt.names, got, tt.want)
			}
		})
	}
}

func TestComposeSkipsNil(t *testing.T) {
	var log []string
	p := bulwark.Compose(nil, recorder{"a", &log}, nil)
	if _, ok := p.(recorder); !ok {
		t.Fatalf("Compose(nil, a, nil) = %T, want the single policy itself", p)
	}
}

func TestComposeInnerLayersRunPerAttempt(t *testing.T) {
	var log []string
	calls := 0
	p := bulwark.Compose(retrier{3}, recorder{"b", &log})
	err := p.Do(context.Background(), func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("transient")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Do = %v, want nil", err)
	}
	if calls != 3 || len(log) != 6 {
		t.Errorf("op ran %d times and inner layer %d times, want 3 and 3", calls, len(log)/2)
	}
}

func TestCall(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		policy  bulwark.Policy
		results []error
		want    int
		wantErr error
	}{
		{"direct value", bulwark.Compose(), []error{nil}, 1, nil},
		{"value after retries", bulwark.Compose(retrier{3}, retrier{1}), []error{boom, boom, nil}, 3, nil},
		{"error through policies", bulwark.Compose(retrier{2}, retrier{1}), []error{boom, boom}, 0, boom},
		{"permanent stops", retrier{5}, []error{bulwark.Permanent(boom)}, 0, boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			got, err := bulwark.Call(context.Background(), tt.policy, func(context.Context) (int, error) {
				err := tt.results[n]
				n++
				return n, err
			})
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("Call = %d, %v; want %d, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestCallConcurrentSafe(t *testing.T) {
	// A hedging policy runs attempts concurrently; Call must keep one value.
	hedge := bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = op(ctx) }()
		}
		wg.Wait()
		return errors.Join(errs...)
	})
	var n atomic.Int64
	got, err := bulwark.Call(context.Background(), hedge, func(context.Context) (int64, error) {
		return n.Add(1), nil
	})
	if err != nil || got < 1 || got > 8 {
		t.Errorf("Call = %d, %v; want a value in [1, 8], nil", got, err)
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("bad request")
	p := bulwark.Permanent(base)
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", base, false},
		{"marked", p, true},
		{"wrapped once", fmt.Errorf("create order: %w", p), true},
		{"wrapped twice", fmt.Errorf("handler: %w", fmt.Errorf("create order: %w", p)), true},
		{"joined", errors.Join(errors.New("x"), p), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bulwark.IsPermanent(tt.err); got != tt.want {
				t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
	if !errors.Is(p, base) {
		t.Errorf("errors.Is(Permanent(err), err) = false, want true")
	}
	if bulwark.Permanent(nil) != nil {
		t.Errorf("Permanent(nil) != nil")
	}
	if bulwark.Permanent(p) != p {
		t.Errorf("Permanent(Permanent(err)) wrapped twice")
	}
	if p.Error() != base.Error() {
		t.Errorf("Permanent(err).Error() = %q, want %q", p.Error(), base.Error())
	}
}

func TestClassify(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want bulwark.Outcome
	}{
		{"nil error", context.Background(), nil, bulwark.Success},
		{"plain error", context.Background(), errors.New("x"), bulwark.Failure},
		{"deadline is the callee's failure", context.Background(), context.DeadlineExceeded, bulwark.Failure},
		{"caller canceled", canceled, context.Canceled, bulwark.Neutral},
		{"caller canceled, wrapped error", canceled, fmt.Errorf("get: %w", context.Canceled), bulwark.Neutral},
		{"callee's own cancellation", context.Background(), context.Canceled, bulwark.Failure},
		{"nil ctx", nil, errors.New("x"), bulwark.Failure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bulwark.Classify(tt.ctx, tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestEndpointValidate(t *testing.T) {
	tests := []struct {
		name    string
		ep      bulwark.Endpoint
		wantErr string
	}{
		{"ok", bulwark.Endpoint{Addr: "10.0.0.1:80", Zone: "a", Weight: 2}, ""},
		{"zero weight is fine", bulwark.Endpoint{Addr: "10.0.0.1:80"}, ""},
		{"empty address", bulwark.Endpoint{Zone: "a"}, "empty address"},
		{"negative weight", bulwark.Endpoint{Addr: "x:1", Weight: -1}, "negative weight -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.ep.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate(%v) = %v, want nil", tt.ep, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, bulwark.ErrInvalidEndpoint) {
				t.Errorf("Validate(%v) = %v, want ErrInvalidEndpoint containing %q", tt.ep, err, tt.wantErr)
			}
		})
	}
	if w := (bulwark.Endpoint{Addr: "x"}).EffectiveWeight(); w != 1 {
		t.Errorf("EffectiveWeight() of zero weight = %d, want 1", w)
	}
	if s := (bulwark.Endpoint{Addr: "x:1", Zone: "a", Weight: 3}).String(); s != "x:1 (zone=a, weight=3)" {
		t.Errorf("String() = %q", s)
	}
}

func TestObservers(t *testing.T) {
	if bulwark.Observers() != nil || bulwark.Observers(nil, nil) != nil {
		t.Fatal("Observers of nothing is not nil")
	}
	var got []string
	a := bulwark.ObserverFunc(func(e bulwark.Event) { got = append(got, "a:"+e.Kind.String()) })
	b := bulwark.ObserverFunc(func(e bulwark.Event) { got = append(got, "b:"+e.Kind.String()) })
	bulwark.Observers(a, nil, b).Observe(bulwark.Event{Kind: bulwark.EventRetry})
	if strings.Join(got, ",") != "a:retry,b:retry" {
		t.Errorf("Observers fan-out = %v", got)
	}
}

func TestEventKindString(t *testing.T) {
	for k := bulwark.EventCall; k <= bulwark.EventLimitChanged; k++ {
		s := k.String()
		if s == "" || strings.HasPrefix(s, "event(") {
			t.Errorf("EventKind(%d).String() = %q, want a name", k, s)
		}
	}
	if s := bulwark.EventKind(200).String(); s != "event(200)" {
		t.Errorf("EventKind(200).String() = %q", s)
	}
}

func TestSlogObserver(t *testing.T) {
	var buf strings.Builder
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := bulwark.SlogObserver(l)
	o.Observe(bulwark.Event{
		Kind: bulwark.EventStateChange, Component: bulwark.ComponentBreaker, Name: "payments",
		From: "closed", To: "open", Reason: "failure_rate",
	})
	o.Observe(bulwark.Event{
		Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry, Attempt: 3,
		Err: errors.New("boom"), Reason: "attempts", Endpoint: bulwark.Endpoint{Addr: "h:1", Zone: "z"},
	})
	out := buf.String()
	for _, want := range []string{
		`level=WARN msg="bulwark state_change" component=breaker name=payments from=closed to=open reason=failure_rate`,
		`level=WARN msg="bulwark give_up" component=retry endpoint=h:1 zone=z attempt=3 reason=attempts error=boom`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("slog output %q\nlacks %q", out, want)
		}
	}
}

func noop(context.Context) error { return nil }

type ctxKey struct{}

// ctxRecorder is a ContextObserver that records what it was given.
type ctxRecorder struct{ got []string }

func (r *ctxRecorder) Observe(e bulwark.Event) { r.got = append(r.got, "plain:"+e.Kind.String()) }
func (r *ctxRecorder) ObserveContext(ctx context.Context, e bulwark.Event) {
	v, _ := ctx.Value(ctxKey{}).(string)
	r.got = append(r.got, v+":"+e.Kind.String())
}

func TestObserveContext(t *testing.T) {
	ctx := context.WithValue(context.Background(), ctxKey{}, "req-1")
	rec := &ctxRecorder{}
	var plain []string
	p := bulwark.ObserverFunc(func(e bulwark.Event) { plain = append(plain, e.Kind.String()) })

	bulwark.ObserveContext(ctx, rec, bulwark.Event{Kind: bulwark.EventRetry})
	bulwark.ObserveContext(ctx, p, bulwark.Event{Kind: bulwark.EventRetry})
	bulwark.ObserveContext(ctx, bulwark.Observers(rec, p), bulwark.Event{Kind: bulwark.EventReplayed})
	rec.Observe(bulwark.Event{Kind: bulwark.EventGiveUp})

	if got, want := strings.Join(rec.got, ","), "req-1:retry,req-1:replayed,plain:give_up"; got != want {
		t.Errorf("ContextObserver saw %q, want %q", got, want)
	}
	if got, want := strings.Join(plain, ","), "retry,replayed"; got != want {
		t.Errorf("plain Observer saw %q, want %q", got, want)
	}
}

// ctxHandler is a slog.Handler that adds the request id from the context.
type ctxHandler struct{ slog.Handler }

func (h ctxHandler) Handle(ctx context.Context, r slog.Record) error {
	if v, ok := ctx.Value(ctxKey{}).(string); ok {
		r.AddAttrs(slog.String("request", v))
	}
	return h.Handler.Handle(ctx, r)
}

func TestSlogObserverLogsWithContext(t *testing.T) {
	var buf strings.Builder
	l := slog.New(ctxHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})})
	ctx := context.WithValue(context.Background(), ctxKey{}, "req-7")
	bulwark.ObserveContext(ctx, bulwark.SlogObserver(l), bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry, Reason: "attempts"})
	if !strings.Contains(buf.String(), "request=req-7") {
		t.Errorf("slog output %q lacks the context's request id", buf.String())
	}
}

func TestComposeAndObserversSkipTypedNil(t *testing.T) {
	var off *recorderPtr // a guard turned off by configuration
	var log []string
	p := bulwark.Compose(off, recorder{"a", &log})
	if err := p.Do(context.Background(), func(context.Context) error { return nil }); err != nil {
		t.Fatalf("Do = %v", err)
	}
	if strings.Join(log, " ") != "a> <a" {
		t.Errorf("Compose(typed nil, a) ran %q, want only a", log)
	}
	var none bulwark.ObserverFunc
	var obs *ctxRecorder
	if got := bulwark.Observers(none, obs); got != nil {
		t.Errorf("Observers(typed nils) = %T, want nil", got)
	}
}

// recorderPtr is a Policy with a pointer receiver.
type recorderPtr struct{}

func (*recorderPtr) Do(ctx context.Context, op func(context.Context) error) error { return op(ctx) }
