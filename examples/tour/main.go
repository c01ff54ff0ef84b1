// Command tour runs a short, self-contained tour of bulwark: every package
// that exists so far, exercised in one process with nothing to install.
//
//	go run ./examples/tour
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/bulwark-go/bulwark"
)

func main() {
	verbose := flag.Bool("v", false, "log every event")
	flag.Parse()
	if err := run(*verbose); err != nil {
		fmt.Fprintln(os.Stderr, "tour:", err)
		os.Exit(1)
	}
}

// attempts is a small retrying policy for the tour until package retry lands
// in it: it tries op up to n times and stops at a permanent error.
type attempts struct {
	n   int
	obs bulwark.Observer
}

func (a attempts) Do(ctx context.Context, op func(context.Context) error) error {
	var err error
	for i := 1; i <= a.n; i++ {
		if err = op(ctx); err == nil || bulwark.IsPermanent(err) {
			return err
		}
		if i < a.n && a.obs != nil {
			a.obs.Observe(bulwark.Event{Kind: bulwark.EventRetry, Component: bulwark.ComponentRetry, Name: "tour", Attempt: i + 1, Err: err, Reason: "error"})
		}
	}
	if a.obs != nil {
		a.obs.Observe(bulwark.Event{Kind: bulwark.EventGiveUp, Component: bulwark.ComponentRetry, Name: "tour", Attempt: a.n, Err: err, Reason: "attempts"})
	}
	return err
}

func run(verbose bool) error {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	events := 0
	obs := bulwark.Observers(
		bulwark.SlogObserver(slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: level}))),
		bulwark.ObserverFunc(func(bulwark.Event) { events++ }),
	)
	ctx := context.Background()

	fmt.Println("== Compose and Call: a flaky dependency behind a retrying guard")
	guard := bulwark.Compose(attempts{n: 3, obs: obs})
	calls := 0
	price, err := bulwark.Call(ctx, guard, func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, errors.New("connection reset")
		}
		return 1299, nil
	})
	if err != nil || price != 1299 || calls != 3 {
		return fmt.Errorf("flaky call: got %d, %v after %d calls; want 1299 after 3", price, err, calls)
	}
	fmt.Printf("price %d after %d calls\n", price, calls)

	fmt.Println("== Permanent: a validation error is not retried")
	calls = 0
	err = guard.Do(ctx, func(context.Context) error {
		calls++
		return fmt.Errorf("charge: %w", bulwark.Permanent(errors.New("card declined")))
	})
	if !bulwark.IsPermanent(err) || calls != 1 {
		return fmt.Errorf("permanent error: %v after %d calls; want one call", err, calls)
	}
	fmt.Printf("%v after %d call\n", err, calls)

	fmt.Printf("== %d events observed\n", events)
	return nil
}
