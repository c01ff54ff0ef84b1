package throttle_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/throttle"
)

// The backend starts refusing: once the client's requests exceed twice the
// backend's accepts, the client refuses some locally, without sending them.
func ExamplePolicy_Do() {
	draw := 0.99 // math/rand in production: leave Random nil
	th, err := throttle.New(throttle.Config{
		Name:   "search",
		Clock:  bulwarktest.NewClock(time.Time{}),
		Random: func() float64 { return draw },
	})
	if err != nil {
		panic(err)
	}
	search := func(fail bool) func(context.Context) error {
		return func(context.Context) error {
			if fail {
				return errors.New("503 overloaded")
			}
			return nil
		}
	}
	for range 4 {
		_ = th.Do(context.Background(), search(false))
	}
	for range 8 {
		_ = th.Do(context.Background(), search(true))
	}
	fmt.Printf("refusal probability %.2f\n", th.Probability()) // (12 − 2 × 4) / 13
	draw = 0.3
	fmt.Println(th.Do(context.Background(), search(true))) // 0.3 < 0.31: refused
	draw = 0.6
	fmt.Println(th.Do(context.Background(), search(true))) // sent
	// Output:
	// refusal probability 0.31
	// throttle: request throttled by the client
	// 503 overloaded
}
