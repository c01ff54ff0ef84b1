package bulwarktest_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
)

// A fake clock moves only when the test advances it, and runs the timers
// that come due on the way, in order, on the goroutine that advances it.
func ExampleClock() {
	clk := bulwarktest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	start := clk.Now()
	clk.AfterFunc(2*time.Second, func() { fmt.Println("fired at", clk.Since(start)) })
	clk.AfterFunc(time.Second, func() { fmt.Println("fired at", clk.Since(start)) })

	clk.Advance(1500 * time.Millisecond)
	fmt.Println("pending timers:", clk.Timers())
	clk.Advance(time.Second)
	fmt.Println("now", clk.Since(start))
	// Output:
	// fired at 1s
	// pending timers: 1
	// fired at 2s
	// now 2.5s
}

// BlockUntil waits until the code under test has armed its timers, so that
// the test advances the clock only once the code is waiting on it: no sleep,
// and no race between the two.
func ExampleClock_BlockUntil() {
	clk := bulwarktest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	done := make(chan time.Duration)
	go func() { // the code under test: waits 5 s on its timer
		start := clk.Now()
		t := clk.NewTimer(5 * time.Second)
		<-t.C()
		done <- clk.Since(start)
	}()

	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		fmt.Println(err)
		return
	}
	clk.Advance(5 * time.Second)
	fmt.Println("waited", <-done)
	// Output:
	// waited 5s
}
