package retry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// With a nil Clock the policy runs on the wall clock; synctest's bubble makes
// that clock fake, so the real-deadline path of AttemptTimeout and the real
// sleeps are tested without waiting.
func TestWallClockPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew(t, Config{MaxAttempts: 3, AttemptTimeout: 2 * time.Second,
			Backoff: Backoff{Base: time.Second, Jitter: NoJitter}})
		start := time.Now()
		var at []time.Duration
		var errs []error
		err := p.Do(context.Background(), func(ctx context.Context) error {
			at = append(at, time.Since(start))
			if dl, ok := ctx.Deadline(); !ok || time.Until(dl) != 2*time.Second {
				t.Errorf("attempt deadline = %v, %v, want 2s from now", dl, ok)
			}
			if Attempt(ctx) == 3 {
				return nil
			}
			<-ctx.Done()
			errs = append(errs, ctx.Err())
			return ctx.Err()
		})
		if err != nil {
			t.Fatalf("Do = %v, want nil", err)
		}
		if want := "[0s 3s 7s]"; fmt.Sprint(at) != want {
			t.Errorf("attempts at %v, want %v", at, want)
		}
		for _, e := range errs {
			if !errors.Is(e, context.DeadlineExceeded) {
				t.Errorf("op saw %v, want context.DeadlineExceeded", e)
			}
		}

		// A real deadline on ctx: Do returns before it, with the last error.
		ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
		defer cancel()
		start = time.Now()
		err = p.Do(ctx, func(context.Context) error { return errFlaky })
		if !errors.Is(err, ErrDeadline) || !errors.Is(err, errFlaky) {
			t.Errorf("Do = %v, want ErrDeadline wrapping errFlaky", err)
		}
		if took := time.Since(start); took != time.Second {
			t.Errorf("Do took %v, want 1s (one wait, then the 2s wait would cross the deadline)", took)
		}
	})
}
