package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/bulwark-go/bulwark/retry"
)

// Package retry waits out a refusal's RetryAfter: composed outside the
// limiter, it schedules its next attempt no earlier than the next token, and
// then the call passes.
func TestRetryHonoursRetryAfter(t *testing.T) {
	l, clk := newLimiter(t, ratelimit.Config{Rate: 1, Burst: 1})
	retries := &recorder{}
	rp, err := retry.New(retry.Config{MaxAttempts: 3, Clock: clk, Observer: retries})
	if err != nil {
		t.Fatal(err)
	}
	l.Allow() // the next token is due in 1s
	ran := 0
	done := make(chan error, 1)
	go func() {
		done <- bulwark.Compose(rp, l).Do(context.Background(), func(context.Context) error { ran++; return nil })
	}()
	if err := clk.BlockUntil(context.Background(), 1); err != nil { // the retry is waiting
		t.Fatal(err)
	}
	var delays []time.Duration
	for _, e := range retries.events() {
		if e.Kind == bulwark.EventRetry {
			delays = append(delays, e.Delay)
		}
	}
	if len(delays) != 1 || delays[0] < time.Second {
		t.Fatalf("retry delays %v, want one of at least the refusal's RetryAfter, 1s", delays)
	}
	clk.Advance(delays[0])
	if err := <-done; err != nil || ran != 1 {
		t.Fatalf("Do = %v (op ran %d times), want nil once the token came", err, ran)
	}
}
