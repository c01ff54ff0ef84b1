package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/retry"
)

// advancing returns an Observer that prints each retry and moves the fake
// clock past its delay once the policy waits on it, so that the examples run
// at once and print the same every time. With the wall clock (a nil Clock),
// none of this is needed.
func advancing(clk *bulwarktest.Clock) bulwark.Observer {
	return bulwark.ObserverFunc(func(e bulwark.Event) {
		switch e.Kind {
		case bulwark.EventRetry:
			fmt.Printf("retry: attempt %d in %v after %v\n", e.Attempt, e.Delay, e.Err)
		case bulwark.EventHedge:
			fmt.Printf("hedge: attempt %d after %v\n", e.Attempt, e.Delay)
		case bulwark.EventGiveUp:
			fmt.Printf("give up after %d attempts: %s\n", e.Attempt, e.Reason)
			return
		default:
			return
		}
		go func() {
			_ = clk.BlockUntil(context.Background(), 1)
			clk.Advance(e.Delay)
		}()
	})
}

// Retrying an HTTP GET: the server is unavailable once and asks to come back
// in 2 s; the Transport waits that long, then returns the good response.
func Example_httpGet() {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "hello")
	}))
	defer srv.Close()

	clk := bulwarktest.NewClock(time.Time{})
	policy, err := retry.New(retry.Config{MaxAttempts: 4, Clock: clk, Observer: advancing(clk), Seed: 1})
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: &retry.Transport{Policy: policy}}

	resp, err := client.Get(srv.URL)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))
	// Output:
	// retry: attempt 2 in 2s after HTTP 503 Service Unavailable (retry after 2s)
	// 200 hello
}

// A shared budget: two policies that would each try 5 times spend from one
// budget, so a dependency that fails every call sees about 1.1 × the calls,
// not 5 ×.
func Example_sharedBudget() {
	clk := bulwarktest.NewClock(time.Time{})
	budget, err := retry.NewBudget(retry.BudgetConfig{Ratio: 0.1, MinPerSecond: 0.5, Window: 10 * time.Second, Clock: clk})
	if err != nil {
		panic(err)
	}
	noWait := func(int, time.Duration, error) time.Duration { return 0 }
	orders, _ := retry.New(retry.Config{MaxAttempts: 5, Budget: budget, Delay: noWait, Clock: clk})
	stock, _ := retry.New(retry.Config{MaxAttempts: 5, Budget: budget, Delay: noWait, Clock: clk})

	attempts, refused := 0, 0
	down := func(context.Context) error { attempts++; return errors.New("connection refused") }
	for i := range 1000 {
		clk.Advance(10 * time.Millisecond) // 100 calls a second
		p := orders
		if i%2 == 1 {
			p = stock
		}
		if err := p.Do(context.Background(), down); errors.Is(err, retry.ErrBudget) {
			refused++
		}
	}
	fmt.Printf("1000 calls, %d attempts (%.2f× the calls), %d calls cut short by the budget\n", attempts, float64(attempts)/1000, refused)
	// Output:
	// 1000 calls, 1109 attempts (1.11× the calls), 999 calls cut short by the budget
}

// Hedging a slow read: when the first replica has not answered after 50 ms, a
// second attempt starts; the first answer wins and the slow attempt is
// canceled.
func ExampleHedge() {
	clk := bulwarktest.NewClock(time.Time{})
	hedge, err := retry.NewHedge(retry.HedgeConfig{Delay: 50 * time.Millisecond, Clock: clk, Observer: advancing(clk)})
	if err != nil {
		panic(err)
	}
	go func() { // the first attempt is slow: let 50 ms pass on the fake clock
		_ = clk.BlockUntil(context.Background(), 1)
		clk.Advance(50 * time.Millisecond)
	}()
	slow := make(chan error, 1)
	value, err := bulwark.Call(context.Background(), hedge, func(ctx context.Context) (string, error) {
		if retry.Attempt(ctx) == 1 { // the slow replica
			<-ctx.Done()
			slow <- ctx.Err()
			return "", ctx.Err()
		}
		return "stock=7 from replica 2", nil
	})
	fmt.Println(value, err)
	fmt.Println("first attempt:", <-slow)
	// Output:
	// hedge: attempt 2 after 50ms
	// stock=7 from replica 2 <nil>
	// first attempt: context canceled
}

// Composing with a breaker, outermost first: each attempt passes the breaker,
// and once the breaker is open the call fails at once with its refusal, as a
// breaker means it to, instead of waiting for it.
func Example_withBreaker() {
	clk := bulwarktest.NewClock(time.Time{})
	cb, err := breaker.New(breaker.Config{ConsecutiveFailures: 2, OpenDuration: 10 * time.Second, Clock: clk})
	if err != nil {
		panic(err)
	}
	policy, err := retry.New(retry.Config{MaxAttempts: 5, Clock: clk, Observer: advancing(clk), Seed: 1,
		Backoff: retry.Backoff{Base: time.Second, Jitter: retry.NoJitter}})
	if err != nil {
		panic(err)
	}
	calls := 0
	err = bulwark.Compose(policy, cb).Do(context.Background(), func(context.Context) error {
		calls++
		return errors.New("payment service unavailable")
	})
	fmt.Println(errors.Is(err, breaker.ErrOpen), "after", calls, "calls; breaker", cb.State())
	// Output:
	// retry: attempt 2 in 1s after payment service unavailable
	// retry: attempt 3 in 2s after payment service unavailable
	// give up after 3 attempts: circuit_open
	// true after 2 calls; breaker open
}

// Waiting out an open breaker is opt-in: with MaxOpenWait, the policy waits
// for the breaker's RetryAfter, here 8 s, when it is no longer than that, and
// never past the context's deadline.
func Example_waitForBreaker() {
	clk := bulwarktest.NewClock(time.Time{})
	cb, err := breaker.New(breaker.Config{ConsecutiveFailures: 2, OpenDuration: 10 * time.Second, Clock: clk})
	if err != nil {
		panic(err)
	}
	policy, err := retry.New(retry.Config{MaxAttempts: 5, MaxOpenWait: 30 * time.Second, Clock: clk, Observer: advancing(clk), Seed: 1,
		Backoff: retry.Backoff{Base: time.Second, Jitter: retry.NoJitter}})
	if err != nil {
		panic(err)
	}
	calls := 0
	err = bulwark.Compose(policy, cb).Do(context.Background(), func(context.Context) error {
		calls++
		if calls <= 2 {
			return errors.New("payment service unavailable")
		}
		return nil
	})
	fmt.Println(err, "after", calls, "calls; breaker", cb.State()) // the breaker's refusal ran no call
	// Output:
	// retry: attempt 2 in 1s after payment service unavailable
	// retry: attempt 3 in 2s after payment service unavailable
	// retry: attempt 4 in 8s after breaker: circuit open (open, retry after 8s)
	// <nil> after 3 calls; breaker closed
}
