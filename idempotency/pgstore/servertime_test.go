package pgstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// serverTime returns PostgreSQL's clock_timestamp().
func serverTime(t *testing.T, pool *pgxpool.Pool) time.Time {
	t.Helper()
	var now time.Time
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT clock_timestamp()").Scan(&now))
	return now
}

// within fails unless got is in [lo, hi].
func within(t *testing.T, what string, got, lo, hi time.Time) {
	t.Helper()
	if got.Before(lo) || got.After(hi) {
		t.Errorf("%s = %v, want between %v and %v by the server's clock", what, got, lo, hi)
	}
}

// TestServerClockDecides: in production (no TestClock), every expiry is the
// server's clock plus the duration, whatever the client's clock says.
func TestServerClockDecides(t *testing.T) {
	ctx := context.Background()
	pool := serverPool(t)
	s := newStore(t, pool, nil)

	before := serverTime(t, pool)
	c, err := s.Claim(ctx, "k", fp, lease)
	require.NoError(t, err)
	after := serverTime(t, pool)
	rec, err := s.Get(ctx, "k")
	require.NoError(t, err)
	within(t, "LeaseExpiry after Claim", rec.LeaseExpiry, before.Add(lease), after.Add(lease))

	before = serverTime(t, pool)
	require.NoError(t, s.Extend(ctx, "k", c.Token, 2*lease))
	after = serverTime(t, pool)
	rec, err = s.Get(ctx, "k")
	require.NoError(t, err)
	within(t, "LeaseExpiry after Extend", rec.LeaseExpiry, before.Add(2*lease), after.Add(2*lease))

	before = serverTime(t, pool)
	require.NoError(t, s.Complete(ctx, "k", c.Token, []byte("v"), retention))
	after = serverTime(t, pool)
	rec, err = s.Get(ctx, "k")
	require.NoError(t, err)
	within(t, "ExpiresAt after Complete", rec.ExpiresAt, before.Add(retention), after.Add(retention))
}

// TestShortRealLease: in production, a lease expires by the server's clock:
// a claim of 200 ms is refused to others until then, and taken over after.
func TestShortRealLease(t *testing.T) {
	ctx := context.Background()
	pool := serverPool(t)
	s := newStore(t, pool, nil)
	const short = 200 * time.Millisecond
	first, err := s.Claim(ctx, "k", fp, short)
	require.NoError(t, err)
	rec, err := s.Get(ctx, "k")
	require.NoError(t, err)
	var taken idempotency.Claim
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		taken, err = s.Claim(ctx, "k", fp, lease)
		require.NoError(t, err)
		if taken.Won {
			if after := serverTime(t, pool); after.Before(rec.LeaseExpiry) {
				t.Fatalf("taken over before %v, before the lease's end %v by the server's clock", after, rec.LeaseExpiry)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a %v lease still held after 10 s", short)
		}
	}
	if !taken.TakenOver || taken.Token == first.Token {
		t.Errorf("Claim after the short lease = %+v, want a takeover with a new token", taken)
	}
	if err := s.Extend(ctx, "k", first.Token, lease); !errors.Is(err, idempotency.ErrFenced) {
		t.Errorf("Extend by the first owner = %v, want ErrFenced", err)
	}
}
