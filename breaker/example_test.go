package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

// Guarding an HTTP call: a 5xx answer is a failure though the round trip
// worked, a 4xx is neutral. After three failures in a row the breaker opens
// and refuses calls without sending them.
func Example_httpCall() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer backend.Close()

	clk := bulwarktest.NewClock(time.Time{}) // time.Now in production: leave Clock nil
	cb, err := breaker.New(breaker.Config{Name: "inventory", ConsecutiveFailures: 3, OpenDuration: 30 * time.Second, Clock: clk})
	if err != nil {
		panic(err)
	}
	byStatus := func(code int, err error) bulwark.Outcome {
		switch {
		case err != nil || code >= 500:
			return bulwark.Failure
		case code >= 400:
			return bulwark.Neutral
		}
		return bulwark.Success
	}
	get := func(ctx context.Context) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, backend.URL, nil)
		if err != nil {
			return 0, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for i := 0; i < 4; i++ {
		code, err := breaker.Call(context.Background(), cb, get, byStatus)
		fmt.Println(code, err)
	}
	clk.Advance(30 * time.Second)
	fmt.Println(cb.State())
	// Output:
	// 503 <nil>
	// 503 <nil>
	// 503 <nil>
	// 0 breaker: circuit open (inventory, open, retry after 30s)
	// half-open
}

// A Group keeps one breaker per host: one failing host does not stop calls
// to the others.
func Example_keyedGroup() {
	hosts, err := breaker.NewGroup(breaker.GroupConfig{
		Breaker: breaker.Config{ConsecutiveFailures: 2, Clock: bulwarktest.NewClock(time.Time{})},
		MaxKeys: 1000,
	})
	if err != nil {
		panic(err)
	}
	call := func(host string) error {
		return hosts.Do(context.Background(), host, func(context.Context) error {
			if host == "b.example:443" {
				return errors.New("connection refused")
			}
			return nil
		})
	}
	for i := 0; i < 3; i++ {
		for _, h := range []string{"a.example:443", "b.example:443"} {
			fmt.Printf("%s: %v\n", h, call(h))
		}
	}
	// Output:
	// a.example:443: <nil>
	// b.example:443: connection refused
	// a.example:443: <nil>
	// b.example:443: connection refused
	// a.example:443: <nil>
	// b.example:443: breaker: circuit open (b.example:443, open, retry after 1m0s)
}

// Composing with a retry policy, outermost first: each attempt passes the
// breaker, and the refusal tells a retry how long the breaker stays open. This
// minimal retry waits that long; package retry fails the call at once
// instead, unless retry.Config.MaxOpenWait asks it to wait.
func Example_withRetry() {
	clk := bulwarktest.NewClock(time.Time{})
	cb, err := breaker.New(breaker.Config{ConsecutiveFailures: 2, OpenDuration: 5 * time.Second, Clock: clk})
	if err != nil {
		panic(err)
	}
	retry := bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		var err error
		for attempt := 1; attempt <= 4; attempt++ {
			if err = op(ctx); err == nil {
				return nil
			}
			var ra interface{ RetryAfter() time.Duration }
			if errors.As(err, &ra) {
				fmt.Println("waiting", ra.RetryAfter())
				clk.Advance(ra.RetryAfter()) // bulwark.Sleep(ctx, clk, d) in a real policy
			}
		}
		return err
	})
	calls := 0
	err = bulwark.Compose(retry, cb).Do(context.Background(), func(context.Context) error {
		calls++
		fmt.Println("call", calls)
		if calls <= 2 {
			return errors.New("unavailable")
		}
		return nil
	})
	fmt.Println(err, cb.State())
	// Output:
	// call 1
	// call 2
	// waiting 5s
	// call 3
	// <nil> closed
}

// Callers that cannot wrap the call in a function, such as a RoundTripper,
// take a Permit and report how the call went.
func ExampleBreaker_Allow() {
	cb, err := breaker.New(breaker.Config{ConsecutiveFailures: 1, Clock: bulwarktest.NewClock(time.Time{})})
	if err != nil {
		panic(err)
	}
	p, err := cb.Allow()
	if err != nil {
		fmt.Println("refused:", err)
		return
	}
	p.Done(context.Background(), errors.New("reset by peer"))
	_, err = cb.Allow()
	fmt.Println(errors.Is(err, breaker.ErrOpen))
	// Output:
	// true
}

// A client of one upstream guards it with the breaker of its host: after two
// 503s the breaker opens, and the next request fails at once, without being
// sent, with the time until the breaker lets a probe through.
func ExampleTransport() {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	breakers, err := breaker.NewGroup(breaker.GroupConfig{Breaker: breaker.Config{
		ConsecutiveFailures: 2, OpenDuration: 30 * time.Second, Clock: bulwarktest.NewClock(time.Time{}),
	}})
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: &breaker.Transport{Group: breakers}}
	for range 3 {
		resp, err := client.Get(srv.URL)
		if err != nil {
			var oe *breaker.OpenError
			fmt.Println(errors.As(err, &oe), oe.RetryAfter())
			continue
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
	}
	fmt.Println("requests sent:", hits.Load())
	// Output:
	// 503
	// 503
	// true 30s
	// requests sent: 2
}
