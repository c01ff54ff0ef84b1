package bulwarkgrpc_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/bulwarktest"
	bulwarkgrpc "github.com/bulwark-go/bulwark/grpc"
	"github.com/bulwark-go/bulwark/grpc/internal/echo"
	"github.com/bulwark-go/bulwark/retry"
)

func newClientInterceptor(t testing.TB, cfg bulwarkgrpc.ClientConfig) *bulwarkgrpc.ClientInterceptor {
	t.Helper()
	ci, err := bulwarkgrpc.NewClientInterceptor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ci
}

func isGet(method string) bool { return method == echo.Get }

// attemptLog records the attempts a server saw: their value and
// AttemptsHeader.
type attemptLog struct {
	mu       sync.Mutex
	previous []string
	arrived  chan struct{}
}

func (l *attemptLog) record(ctx context.Context) int {
	md, _ := metadata.FromIncomingContext(ctx)
	prev := strings.Join(md.Get(bulwarkgrpc.AttemptsHeader), ",")
	l.mu.Lock()
	l.previous = append(l.previous, prev)
	n := len(l.previous)
	l.mu.Unlock()
	if l.arrived != nil {
		l.arrived <- struct{}{}
	}
	return n
}

func (l *attemptLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.previous...)
}

// The server's pushback is honoured to the millisecond on the fake clock: the
// retry is not sent 1 ms before the pushback ends, and is sent when it does,
// with AttemptsHeader.
func TestPushbackHonoured(t *testing.T) {
	clk := bulwarktest.NewClock(time.Unix(0, 0))
	log := &attemptLog{arrived: make(chan struct{}, 4)}
	srv := startServer(t, func(ctx context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if log.record(ctx) == 1 {
			_ = grpc.SetTrailer(ctx, metadata.Pairs(bulwarkgrpc.PushbackHeader, "250"))
			return nil, status.Error(codes.Unavailable, "busy")
		}
		return in, nil
	})
	rp, err := retry.New(retry.Config{MaxAttempts: 3, Backoff: retry.Backoff{Base: time.Millisecond, Cap: time.Millisecond}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ci := newClientInterceptor(t, bulwarkgrpc.ClientConfig{Retry: rp, Idempotent: isGet})
	cc := dial(t, srv.addr, ci.DialOptions()...)

	done := make(chan error, 1)
	go func() {
		_, err := echo.Call(context.Background(), cc, echo.Get, "x")
		done <- err
	}()
	<-log.arrived
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntil(ctx, 1); err != nil { // the retry waits on the fake clock
		t.Fatal(err)
	}
	clk.Advance(249 * time.Millisecond)
	if got := clk.Timers(); got != 1 {
		t.Fatalf("after 249ms: %d timers pending, want the retry's 1", got)
	}
	select {
	case <-log.arrived:
		t.Fatal("the retry was sent before the pushback ended")
	default:
	}
	clk.Advance(time.Millisecond)
	if err := <-done; err != nil {
		t.Fatalf("call: %v", err)
	}
	if got := log.get(); len(got) != 2 || got[0] != "" || got[1] != "1" {
		t.Errorf("attempts' %s = %q, want [\"\" \"1\"]", bulwarkgrpc.AttemptsHeader, got)
	}
}

// A negative pushback asks the client not to retry.
func TestNegativePushbackStopsRetries(t *testing.T) {
	log := &attemptLog{}
	srv := startServer(t, func(ctx context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		log.record(ctx)
		_ = grpc.SetTrailer(ctx, metadata.Pairs(bulwarkgrpc.PushbackHeader, "-1"))
		return nil, status.Error(codes.Unavailable, "go away")
	})
	rp, _ := retry.New(retry.Config{MaxAttempts: 5, Delay: func(int, time.Duration, error) time.Duration { return 0 }})
	ci := newClientInterceptor(t, bulwarkgrpc.ClientConfig{Retry: rp, Idempotent: isGet})
	cc := dial(t, srv.addr, ci.DialOptions()...)
	_, err := echo.Call(context.Background(), cc, echo.Get, "x")
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("code %v, want Unavailable", got)
	}
	if !errors.Is(err, retry.ErrNotRetryable) {
		t.Errorf("error %v, want one that wraps retry.ErrNotRetryable", err)
	}
	if got := len(log.get()); got != 1 {
		t.Errorf("server saw %d attempts, want 1", got)
	}
}

// Only idempotent methods, and calls with an idempotency key, are retried; a
// status that is not retryable is not.
func TestRetryOnlyIdempotentOrKeyed(t *testing.T) {
	var calls atomic.Int64
	srv := startServer(t, func(_ context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		calls.Add(1)
		if in.GetValue() == "invalid" {
			return nil, status.Error(codes.InvalidArgument, "no")
		}
		return nil, status.Error(codes.Unavailable, "down")
	})
	rp, _ := retry.New(retry.Config{MaxAttempts: 3, Delay: func(int, time.Duration, error) time.Duration { return 0 }})
	ci := newClientInterceptor(t, bulwarkgrpc.ClientConfig{Retry: rp, Idempotent: isGet})
	cc := dial(t, srv.addr, ci.DialOptions()...)
	cases := []struct {
		name   string
		ctx    context.Context
		method string
		in     string
		want   int64
	}{
		{"idempotent method", context.Background(), echo.Get, "x", 3},
		{"other method", context.Background(), echo.Create, "x", 1},
		{"other method with a key", bulwarkgrpc.WithIdempotencyKey(context.Background(), "k"), echo.Create, "x", 3},
		{"status not retryable", context.Background(), echo.Get, "invalid", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := calls.Load()
			_, err := echo.Call(tc.ctx, cc, tc.method, tc.in)
			if err == nil {
				t.Fatal("call succeeded, want an error")
			}
			if got := calls.Load() - before; got != tc.want {
				t.Errorf("%s: server saw %d attempts, want %d", tc.method, got, tc.want)
			}
		})
	}
}

// A safe method is hedged: when the first attempt is slow, a second one is
// sent after the hedge delay, and its answer is the call's.
func TestHedgeSafeMethod(t *testing.T) {
	clk := bulwarktest.NewClock(time.Unix(0, 0))
	log := &attemptLog{arrived: make(chan struct{}, 4)}
	srv := startServer(t, func(ctx context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if log.record(ctx) == 1 {
			<-ctx.Done() // the slow first attempt, canceled when the hedge wins
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return wrapperspb.String("hedged " + in.GetValue()), nil
	})
	h, err := retry.NewHedge(retry.HedgeConfig{MaxAttempts: 2, Delay: 30 * time.Millisecond, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ci := newClientInterceptor(t, bulwarkgrpc.ClientConfig{Hedge: h, Safe: isGet})
	cc := dial(t, srv.addr, ci.DialOptions()...)
	type result struct {
		v   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := echo.Call(context.Background(), cc, echo.Get, "x")
		done <- result{v, err}
	}()
	<-log.arrived
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntil(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(30 * time.Millisecond)
	r := <-done
	if r.err != nil || r.v != "hedged x" {
		t.Fatalf("call = %q, %v; want \"hedged x\"", r.v, r.err)
	}
	if got := log.get(); len(got) != 2 || got[1] != "1" {
		t.Errorf("attempts' %s = %q, want the hedge to say 1", bulwarkgrpc.AttemptsHeader, got)
	}
}

// A breaker per target opens after failures, and then fails calls at once
// with Unavailable and its remaining open time, without sending them.
func TestBreakerPerTarget(t *testing.T) {
	clk := bulwarktest.NewClock(time.Unix(0, 0))
	srv := startServer(t, func(context.Context, string, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return nil, status.Error(codes.Internal, "boom")
	})
	g, err := breaker.NewGroup(breaker.GroupConfig{Breaker: breaker.Config{ConsecutiveFailures: 3, OpenDuration: 5 * time.Second, Clock: clk}})
	if err != nil {
		t.Fatal(err)
	}
	ci := newClientInterceptor(t, bulwarkgrpc.ClientConfig{Breakers: g})
	cc := dial(t, srv.addr, ci.DialOptions()...)
	for range 3 {
		if _, err := echo.Call(context.Background(), cc, echo.Get, "x"); status.Code(err) != codes.Internal {
			t.Fatalf("code %v, want Internal", status.Code(err))
		}
	}
	_, err = echo.Call(context.Background(), cc, echo.Get, "x")
	if got := status.Code(err); got != codes.Unavailable {
		t.Errorf("open breaker: code %v, want Unavailable", got)
	}
	if !errors.Is(err, breaker.ErrOpen) {
		t.Errorf("open breaker: %v does not wrap breaker.ErrOpen", err)
	}
	if got := srv.calls.Load(); got != 3 {
		t.Errorf("server saw %d calls, want 3", got)
	}
	if d := bulwarkgrpc.Status(err).Details(); len(d) != 1 {
		t.Errorf("open breaker status has %d details, want a RetryInfo", len(d))
	}
	// Statuses that blame the request do not trip it.
	srv2 := startServer(t, func(context.Context, string, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		return nil, status.Error(codes.NotFound, "none")
	})
	cc2 := dial(t, srv2.addr, ci.DialOptions()...)
	for range 10 {
		if _, err := echo.Call(context.Background(), cc2, echo.Get, "x"); status.Code(err) != codes.NotFound {
			t.Fatalf("code %v, want NotFound", status.Code(err))
		}
	}
}

// Status maps each bulwark refusal to the code of the table.
func TestStatusTable(t *testing.T) {
	g, _ := breaker.NewGroup(breaker.GroupConfig{Breaker: breaker.Config{ConsecutiveFailures: 1}})
	b := g.Get("x")
	_ = b.Do(context.Background(), func(context.Context) error { return errors.New("fail") })
	openErr := b.Do(context.Background(), func(context.Context) error { return nil })
	cases := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"nil", nil, codes.OK},
		{"breaker open", openErr, codes.Unavailable},
		{"canceled", context.Canceled, codes.Canceled},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded},
		{"server status", status.Error(codes.NotFound, "x"), codes.NotFound},
		{"permanent server status", bulwark.Permanent(status.Error(codes.NotFound, "x")), codes.NotFound},
		{"other", errors.New("x"), codes.Unknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := bulwarkgrpc.Status(tc.err).Code(); got != tc.want {
				t.Errorf("Status(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// A stream gets its key and its breaker: the breaker counts a stream that
// ends well as a success, and refuses new streams once open.
func TestStreamThroughInterceptor(t *testing.T) {
	var keys atomic.Int64
	srv := startServerWith(t, nil, nil, grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		if len(md.Get(bulwarkgrpc.KeyHeader)) == 1 {
			keys.Add(1)
		}
		return h(srv, ss)
	}))
	g, _ := breaker.NewGroup(breaker.GroupConfig{Breaker: breaker.Config{ConsecutiveFailures: 1}})
	ci := newClientInterceptor(t, bulwarkgrpc.ClientConfig{Breakers: g, ForwardKey: true})
	cc := dial(t, srv.addr, ci.DialOptions()...)
	// The key of the incoming call is forwarded.
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(bulwarkgrpc.KeyHeader, "k1"))
	st, err := cc.NewStream(ctx, echo.ListStream, echo.List)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(wrapperspb.String("s")); err != nil {
		t.Fatal(err)
	}
	_ = st.CloseSend()
	n := 0
	for st.RecvMsg(new(wrapperspb.StringValue)) == nil {
		n++
	}
	if n != 3 {
		t.Errorf("stream got %d messages, want 3", n)
	}
	if got := keys.Load(); got != 1 {
		t.Errorf("server saw the forwarded key on %d streams, want 1", got)
	}
	if got := g.Get(cc.Target()).State(); got != breaker.Closed {
		t.Errorf("breaker %v after a good stream, want closed", got)
	}
}
