package bulwarkgrpc_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/bulwark-go/bulwark/bulwarktest"
	bulwarkgrpc "github.com/bulwark-go/bulwark/grpc"
	"github.com/bulwark-go/bulwark/grpc/internal/echo"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/ratelimit"
)

func newEngine(t *testing.T, cfg idempotency.Config) *idempotency.Engine {
	t.Helper()
	store, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{JanitorInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	cfg.Store = store
	e, err := idempotency.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func newServerInterceptor(t *testing.T, cfg bulwarkgrpc.ServerConfig) *bulwarkgrpc.ServerInterceptor {
	t.Helper()
	si, err := bulwarkgrpc.NewServerInterceptor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return si
}

// A duplicate unary call with a key gets the first call's response replayed,
// with ReplayedHeader, and the handler runs once.
func TestIdempotentUnaryReplays(t *testing.T) {
	var runs atomic.Int64
	si := newServerInterceptor(t, bulwarkgrpc.ServerConfig{Idempotency: newEngine(t, idempotency.Config{})})
	srv := startServer(t, func(_ context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		n := runs.Add(1)
		return wrapperspb.String(fmt.Sprintf("%s#%d", in.GetValue(), n)), nil
	}, si.ServerOptions()...)
	cc := dial(t, srv.addr)
	ctx := bulwarkgrpc.WithIdempotencyKey(context.Background(), "order-1")

	var h1, h2 metadata.MD
	first, err := echo.Call(ctx, cc, echo.Create, "pay", grpc.Header(&h1))
	if err != nil {
		t.Fatal(err)
	}
	second, err := echo.Call(ctx, cc, echo.Create, "pay", grpc.Header(&h2))
	if err != nil {
		t.Fatal(err)
	}
	if second != first {
		t.Errorf("duplicate got %q, want the replay %q", second, first)
	}
	if got := runs.Load(); got != 1 {
		t.Errorf("handler ran %d times, want 1", got)
	}
	if got := h2.Get(bulwarkgrpc.ReplayedHeader); len(got) != 1 || got[0] != "true" {
		t.Errorf("replay header %s = %q, want [true]", bulwarkgrpc.ReplayedHeader, got)
	}
	if got := h1.Get(bulwarkgrpc.ReplayedHeader); len(got) != 0 {
		t.Errorf("first call header %s = %q, want none", bulwarkgrpc.ReplayedHeader, got)
	}

	// The same key with another request is refused.
	_, err = echo.Call(ctx, cc, echo.Create, "refund")
	if got := status.Code(err); got != codes.FailedPrecondition {
		t.Errorf("key reused with another payload: code %v, want FailedPrecondition (%v)", got, err)
	}
	// Another key runs again; a call without a key runs unprotected.
	if _, err := echo.Call(bulwarkgrpc.WithIdempotencyKey(context.Background(), "order-2"), cc, echo.Create, "pay"); err != nil {
		t.Fatal(err)
	}
	if _, err := echo.Call(context.Background(), cc, echo.Create, "pay"); err != nil {
		t.Fatal(err)
	}
	if got := runs.Load(); got != 3 {
		t.Errorf("handler ran %d times, want 3", got)
	}
}

// A final error status is stored and replayed with its code and details; a
// retryable one releases the key so that the next call runs again.
func TestIdempotentUnaryStatuses(t *testing.T) {
	var runs atomic.Int64
	si := newServerInterceptor(t, bulwarkgrpc.ServerConfig{Idempotency: newEngine(t, idempotency.Config{})})
	srv := startServer(t, func(_ context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		runs.Add(1)
		switch in.GetValue() {
		case "bad":
			st, _ := status.New(codes.InvalidArgument, "bad amount").WithDetails(&errdetails.BadRequest{
				FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "amount"}}})
			return nil, st.Err()
		case "down":
			return nil, status.Error(codes.Unavailable, "database down")
		}
		return in, nil
	}, si.ServerOptions()...)
	cc := dial(t, srv.addr)

	ctx := bulwarkgrpc.WithIdempotencyKey(context.Background(), "k-bad")
	for i := range 2 {
		_, err := echo.Call(ctx, cc, echo.Create, "bad")
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || st.Message() != "bad amount" || len(st.Details()) != 1 {
			t.Errorf("call %d: status %v %q with %d details, want InvalidArgument \"bad amount\" with 1", i, st.Code(), st.Message(), len(st.Details()))
		}
	}
	if got := runs.Load(); got != 1 {
		t.Errorf("a final status: handler ran %d times, want 1", got)
	}
	ctx = bulwarkgrpc.WithIdempotencyKey(context.Background(), "k-down")
	for range 2 {
		if _, err := echo.Call(ctx, cc, echo.Create, "down"); status.Code(err) != codes.Unavailable {
			t.Errorf("code %v, want Unavailable", status.Code(err))
		}
	}
	if got := runs.Load(); got != 3 {
		t.Errorf("a retryable status: handler ran %d times in all, want 3 (the key released)", got)
	}
}

// A duplicate that arrives while the first call runs gets Aborted with a
// pushback; a missing key is refused when keys are required.
func TestIdempotentUnaryInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	si := newServerInterceptor(t, bulwarkgrpc.ServerConfig{
		Idempotency:       newEngine(t, idempotency.Config{RetryAfter: 750 * time.Millisecond}),
		IdempotentMethods: []string{echo.Create},
		RequireKey:        true,
	})
	srv := startServer(t, func(_ context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		close(entered)
		<-release
		return in, nil
	}, si.ServerOptions()...)
	cc := dial(t, srv.addr)
	ctx := bulwarkgrpc.WithIdempotencyKey(context.Background(), "slow")
	done := make(chan error, 1)
	go func() {
		_, err := echo.Call(ctx, cc, echo.Create, "x")
		done <- err
	}()
	<-entered
	var trailer metadata.MD
	_, err := echo.Call(ctx, cc, echo.Create, "x", grpc.Trailer(&trailer))
	if got := status.Code(err); got != codes.Aborted {
		t.Errorf("duplicate in flight: code %v, want Aborted (%v)", got, err)
	}
	if got := trailer.Get(bulwarkgrpc.PushbackHeader); len(got) != 1 || got[0] != "750" {
		t.Errorf("pushback trailer = %q, want [750]", got)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, err = echo.Call(context.Background(), cc, echo.Create, "x")
	if got := status.Code(err); got != codes.InvalidArgument {
		t.Errorf("missing key: code %v, want InvalidArgument", got)
	}
}

// countingCodec is the proto codec, counting the requests it decodes.
type countingCodec struct {
	encoding.CodecV2
	decoded atomic.Int64
}

func (c *countingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	c.decoded.Add(1)
	return c.CodecV2.Unmarshal(data, v)
}

// The tap refuses a call over the concurrency limit before the request is
// read, with ResourceExhausted; the slot comes back when the call ends.
func TestTapShedsOverLimit(t *testing.T) {
	lim, err := limit.New(limit.Config{InitialLimit: 1, MinLimit: 1, MaxLimit: 1, Headroom: -1})
	if err != nil {
		t.Fatal(err)
	}
	codec := &countingCodec{CodecV2: encoding.GetCodecV2("proto")}
	decoded := &codec.decoded
	si := newServerInterceptor(t, bulwarkgrpc.ServerConfig{Limiter: lim})
	entered, release := make(chan struct{}), make(chan struct{})
	srv := startServer(t, func(_ context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if in.GetValue() == "hold" {
			close(entered)
			<-release
		}
		return in, nil
	}, append(si.ServerOptions(), grpc.ForceServerCodecV2(codec))...)
	cc := dial(t, srv.addr)
	done := make(chan error, 1)
	go func() {
		_, err := echo.Call(context.Background(), cc, echo.Get, "hold")
		done <- err
	}()
	<-entered
	_, err = echo.Call(context.Background(), cc, echo.Get, "shed")
	if got := status.Code(err); got != codes.ResourceExhausted {
		t.Errorf("call over the limit: code %v, want ResourceExhausted (%v)", got, err)
	}
	if got := decoded.Load(); got != 1 {
		t.Errorf("server decoded %d requests, want 1: the refused call must not be read", got)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := echo.Call(context.Background(), cc, echo.Get, "after"); err != nil {
		t.Errorf("call after the slot came back: %v", err)
	}
	if got := lim.InFlight(); got != 0 {
		t.Errorf("InFlight() = %d after every call ended, want 0", got)
	}
}

// A rate-limited call is refused in the tap with ResourceExhausted and a
// RetryInfo detail that says when the next token comes.
func TestTapRateLimit(t *testing.T) {
	clk := bulwarktest.NewClock(time.Unix(1000, 0))
	g, err := ratelimit.NewGroup(ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 2, Period: time.Second, Burst: 1, Clock: clk}})
	if err != nil {
		t.Fatal(err)
	}
	si := newServerInterceptor(t, bulwarkgrpc.ServerConfig{RateLimit: g, Clock: clk})
	srv := startServer(t, nil, si.ServerOptions()...)
	cc := dial(t, srv.addr)
	if _, err := echo.Call(context.Background(), cc, echo.Get, "a"); err != nil {
		t.Fatal(err)
	}
	_, err = echo.Call(context.Background(), cc, echo.Get, "b")
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("second call: code %v, want ResourceExhausted (%v)", st.Code(), err)
	}
	var wait time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			wait = ri.GetRetryDelay().AsDuration()
		}
	}
	if wait != 500*time.Millisecond {
		t.Errorf("RetryInfo delay = %v, want 500ms", wait)
	}
	if got := srv.calls.Load(); got != 1 {
		t.Errorf("handler saw %d calls, want 1", got)
	}
	clk.Advance(500 * time.Millisecond)
	if _, err := echo.Call(context.Background(), cc, echo.Get, "c"); err != nil {
		t.Errorf("call after the wait: %v", err)
	}
}

// Without the tap, the interceptors admit; a Bulkhead (which may wait) always
// admits there. A refusal in the interceptor carries the pushback trailer.
func TestInterceptorAdmitsWithoutTap(t *testing.T) {
	bh, err := limit.NewBulkhead(limit.BulkheadConfig{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	si := newServerInterceptor(t, bulwarkgrpc.ServerConfig{Limiter: bh})
	entered, release := make(chan struct{}), make(chan struct{})
	srv := startServer(t, func(_ context.Context, _ string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
		if in.GetValue() == "hold" {
			close(entered)
			<-release
		}
		return in, nil
	}, grpc.ChainUnaryInterceptor(si.Unary), grpc.ChainStreamInterceptor(si.Stream))
	cc := dial(t, srv.addr)
	done := make(chan error, 1)
	go func() {
		_, err := echo.Call(context.Background(), cc, echo.Get, "hold")
		done <- err
	}()
	<-entered
	_, err = echo.Call(context.Background(), cc, echo.Get, "x")
	if got := status.Code(err); got != codes.ResourceExhausted {
		t.Errorf("code %v, want ResourceExhausted", got)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := bh.InFlight(); got != 0 {
		t.Errorf("InFlight() = %d, want 0", got)
	}
	// Streams are admitted too.
	st, err := cc.NewStream(context.Background(), echo.ListStream, echo.List)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(wrapperspb.String("s")); err != nil {
		t.Fatal(err)
	}
	_ = st.CloseSend()
	n := 0
	for {
		if err := st.RecvMsg(new(wrapperspb.StringValue)); err != nil {
			break
		}
		n++
	}
	if n != 3 {
		t.Errorf("stream got %d messages, want 3", n)
	}
}
