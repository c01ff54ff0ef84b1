package retry

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

var errFlaky = errors.New("flaky")

// recorder is an Observer that keeps every event and hands each retry to the
// driver of the fake clock.
type recorder struct {
	mu      sync.Mutex
	events  []bulwark.Event
	retries chan bulwark.Event
}

func newRecorder() *recorder { return &recorder{retries: make(chan bulwark.Event, 1)} }

func (r *recorder) Observe(e bulwark.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	if e.Kind == bulwark.EventRetry {
		r.retries <- e
	}
}

func (r *recorder) kinds(k bulwark.EventKind) []bulwark.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []bulwark.Event
	for _, e := range r.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// drive runs p.Do on another goroutine and advances clk by each announced
// retry delay once Do waits on its timer, until Do returns.
func drive(t *testing.T, clk *bulwarktest.Clock, rec *recorder, do func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- do() }()
	for {
		select {
		case err := <-done:
			return err
		case e := <-rec.retries:
			if e.Delay <= 0 {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := clk.BlockUntil(ctx, 1); err != nil {
				cancel()
				t.Fatalf("Do never waited on the clock after %+v", e)
			}
			cancel()
			clk.Advance(e.Delay)
		}
	}
}

// clockDeadline is a context whose deadline is on the fake clock's time line;
// it never ends by itself.
type clockDeadline struct {
	context.Context
	at time.Time
}

func (c clockDeadline) Deadline() (time.Time, bool) { return c.at, true }

// waitErr is an error that asks for a wait, as a breaker's rejection or a
// Retry-After does.
type waitErr struct{ d time.Duration }

func (e waitErr) Error() string             { return "wait " + e.d.String() }
func (e waitErr) RetryAfter() time.Duration { return e.d }

// openErr is an error like a circuit breaker's refusal: it asks for a wait,
// and says that a breaker refused the call.
type openErr struct{ d time.Duration }

func (e openErr) Error() string             { return "circuit open, retry after " + e.d.String() }
func (e openErr) RetryAfter() time.Duration { return e.d }
func (e openErr) CircuitOpen() bool         { return true }
