package limit_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/limit"
)

func ExampleBulkhead() {
	clk := bulwarktest.NewClock(time.Time{})
	b, err := limit.NewBulkhead(limit.BulkheadConfig{Name: "db", Limit: 1, MaxQueue: 1, MaxWait: 50 * time.Millisecond, Clock: clk})
	if err != nil {
		panic(err)
	}
	p, _ := b.Acquire(context.Background()) // takes the only slot

	done := make(chan error)
	go func() { _, err := b.Acquire(context.Background()); done <- err }()
	_ = clk.BlockUntil(context.Background(), 1) // it waits in the queue
	clk.Advance(50 * time.Millisecond)
	err = <-done
	var rej *limit.RejectedError
	if errors.As(err, &rej) {
		fmt.Println(rej.Reason, rej.RetryAfter())
	}
	p.Done(nil)
	fmt.Println(b.InFlight(), b.Queued())
	// Output:
	// wait_timeout 50ms
	// 0 0
}

func ExampleLimiter_Acquire() {
	clk := bulwarktest.NewClock(time.Time{})
	lim, err := limit.New(limit.Config{Name: "payments", InitialLimit: 4, Clock: clk})
	if err != nil {
		panic(err)
	}
	// A callee with 4 workers: each call takes 10 ms, longer when more
	// than 4 run at once.
	for range 200 {
		var ps []limit.Permit
		for range 10 {
			p, err := lim.Acquire(context.Background())
			if err != nil {
				break // refused: the limit is reached
			}
			ps = append(ps, p)
		}
		clk.Advance(time.Duration(max(len(ps), 4)) * 10 * time.Millisecond / 4)
		for i := range ps {
			ps[i].Done(nil)
		}
	}
	fmt.Println("baseline:", lim.Baseline())
	fmt.Println("limit near the 4 workers:", lim.Limit() >= 4 && lim.Limit() <= 6)
	// Output:
	// baseline: 10ms
	// limit near the 4 workers: true
}

func ExampleMiddleware() {
	b, _ := limit.NewBulkhead(limit.BulkheadConfig{Limit: 100})
	rules, err := limit.ParseRules("GET /orders = critical, /reports/ = sheddable")
	if err != nil {
		panic(err)
	}
	mw, err := limit.Middleware(limit.MiddlewareConfig{Limiter: b, Rules: rules})
	if err != nil {
		panic(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println(r.URL.Path, limit.CriticalityFrom(r.Context()), r.Header.Get(limit.DefaultHeader))
	}))
	for _, path := range []string{"/orders/7", "/reports/daily", "/health"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	// Output:
	// /orders/7 critical critical
	// /reports/daily sheddable sheddable
	// /health normal normal
}
