package timeout_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/timeout"
)

// A call that overruns its timeout fails with an error that matches both
// timeout.ErrTimeout and context.DeadlineExceeded.
func ExamplePolicy_Do() {
	clk := bulwarktest.NewClock(time.Time{}) // the wall clock in production: leave Clock nil
	tp, err := timeout.New(timeout.Config{Name: "inventory", Timeout: 800 * time.Millisecond, Clock: clk})
	if err != nil {
		panic(err)
	}
	slowReserve := func(ctx context.Context) error {
		clk.Advance(time.Second) // the dependency takes a second to answer…
		<-ctx.Done()             // …and the call gives up at its deadline
		return ctx.Err()
	}
	err = tp.Do(context.Background(), slowReserve)
	fmt.Println(err)
	fmt.Println(errors.Is(err, timeout.ErrTimeout), errors.Is(err, context.DeadlineExceeded))
	// Output:
	// timeout: call timed out after 800ms (inventory): context deadline exceeded
	// true true
}
