package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/ratelimit"
)

// A limiter of 2 calls per second with bursts of 3: the burst passes, the
// next call is refused with the wait until its token, and after that wait
// it passes.
func ExampleLimiter_Do() {
	clk := bulwarktest.NewClock(time.Time{}) // the wall clock in production: leave Clock nil
	lim, err := ratelimit.New(ratelimit.Config{Name: "reports", Rate: 2, Burst: 3, Clock: clk})
	if err != nil {
		panic(err)
	}
	call := func(context.Context) error { return nil }
	for i := 1; i <= 4; i++ {
		fmt.Println(i, lim.Do(context.Background(), call))
	}
	err = lim.Do(context.Background(), call)
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		clk.Advance(ra.RetryAfter())
	}
	fmt.Println(5, lim.Do(context.Background(), call))
	// Output:
	// 1 <nil>
	// 2 <nil>
	// 3 <nil>
	// 4 ratelimit: rate limit exceeded (reports, retry after 500ms)
	// 5 <nil>
}

// One limit per tenant: a tenant that spends its burst does not slow the
// others down.
func Example_perTenant() {
	clk := bulwarktest.NewClock(time.Time{})
	tenants, err := ratelimit.NewGroup(ratelimit.GroupConfig{
		Limit: ratelimit.Config{Rate: 10, Period: time.Minute, Burst: 2, Clock: clk},
	})
	if err != nil {
		panic(err)
	}
	for _, t := range []string{"acme", "acme", "acme", "globex"} {
		r := tenants.AllowN(t, clk.Now(), 1)
		fmt.Printf("%s allowed=%v remaining=%d retry-after=%v\n", t, r.Allowed, r.Remaining, r.RetryAfter)
	}
	// Output:
	// acme allowed=true remaining=1 retry-after=0s
	// acme allowed=true remaining=0 retry-after=0s
	// acme allowed=false remaining=0 retry-after=6s
	// globex allowed=true remaining=1 retry-after=0s
}

// The HTTP middleware keys each request by its API key and answers 429
// with Retry-After and the RateLimit header fields.
func ExampleMiddleware() {
	clk := bulwarktest.NewClock(time.Time{})
	keys, err := ratelimit.NewGroup(ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 1, Burst: 1, Clock: clk}})
	if err != nil {
		panic(err)
	}
	mw, err := ratelimit.Middleware(ratelimit.HTTPConfig{
		Limiter: keys,
		Key:     func(r *http.Request) string { return r.Header.Get("X-Api-Key") },
		Headers: true,
	})
	if err != nil {
		panic(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") }))
	for range 2 {
		req := httptest.NewRequest(http.MethodGet, "/search", nil)
		req.Header.Set("X-Api-Key", "k-123")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Header().Get("Retry-After"), rec.Header().Get("RateLimit"))
	}
	// Output:
	// 200  "default";r=0;t=1
	// 429 1 "default";r=0;t=1
}

// Wait blocks until a token comes, but never past the context's deadline:
// a wait that cannot end in time fails at once.
func ExampleLimiter_Wait() {
	lim, err := ratelimit.New(ratelimit.Config{Rate: 1, Period: time.Hour})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println(lim.Wait(ctx))
	err = lim.Wait(ctx) // the next token is an hour away
	fmt.Println(errors.Is(err, ratelimit.ErrLimited))
	// Output:
	// <nil>
	// true
}
