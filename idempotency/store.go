package idempotency

import (
	"context"
	"errors"
	"time"
)

// Store keeps idempotency records so that every instance of a service sees
// the same claims. It is the seam between the Engine and a storage engine: the
// embedded MemoryStore, redisstore and pgstore implement it, and every
// implementation passes idempotencytest.RunStore.
//
// A key moves through two states. Claim records an in-flight claim with a
// lease and a fencing token; while its run goes on, the owner of that token
// Extends the lease; then it either Completes the key with the result, kept
// for a retention period, or Releases it so that a retry may run. A claim
// whose lease has passed may be taken over by a new Claim, which issues a new
// token: the old owner's late Extend, Complete or Release is then refused
// with ErrFenced.
//
// Expiry is decided by the store's own clock, never by the caller's: a shared
// store reads its server's clock (Redis TIME, PostgreSQL now()) in the same
// operation that checks or sets an expiry, so that a client whose clock is
// skewed cannot shorten another's lease, and the MemoryStore, being its own
// server, reads its MemoryConfig.Clock. A lease of d granted by a call sent at
// time s (by any clock that runs at the right rate) lasts at least until s+d:
// that is what the Engine relies on to renew in time. Stores whose server
// clock cannot be moved by a test offer an explicit test-only option that
// replaces it (redisstore's and pgstore's Config.TestClock). Server-side TTLs
// only collect garbage. Implementations are safe for concurrent use by
// multiple goroutines and processes.
//
// The contract in detail, which idempotencytest.RunStore checks with the
// store's clock under the test's control:
//   - A claim taken at time t with lease d is live while the clock reads
//     before t+d. From t+d on it is expired: Get returns ErrNotFound,
//     Extend, Complete and Release with its token return ErrFenced, and a
//     Claim takes it over. A record completed at t with retention r is live,
//     and replayed, while the clock reads before t+r; then it is gone, and a
//     Claim wins the key afresh (TakenOver unset).
//   - Record.LeaseExpiry of a claim is exactly t+d, and after an Extend at t2
//     with lease d2 exactly t2+d2; Record.ExpiresAt of a completed record is
//     exactly its completion time plus retention.
//   - Tokens are never zero, and every winning Claim of a key issues a token
//     that differs from every token issued before for that key.
//   - Extend, Complete and Release apply only to the live in-flight claim: a
//     second Complete, or an Extend or Release after Complete, returns
//     ErrFenced and changes nothing. Release deletes the claim, so Get then
//     returns ErrNotFound.
//   - A call with a done ctx returns an error that wraps ctx.Err() and
//     changes nothing.
//   - The store keeps its own copies: the caller may reuse the fingerprint
//     and value slices it passed once the call returns, and the slices of a
//     returned Record are the caller's to modify.
type Store interface {
	// Claim tries to claim key for a run whose payload has the given
	// fingerprint. If key is absent, expired after its retention, or in
	// flight with a lease that has passed, Claim records an in-flight claim
	// lasting lease and returns a Claim with Won set and a new Token (and
	// TakenOver set when an expired lease was taken over). Otherwise it
	// returns the existing Record in a Claim with Won unset. Exactly one of
	// any number of concurrent claims of a free key wins.
	Claim(ctx context.Context, key string, fingerprint []byte, lease time.Duration) (Claim, error)

	// Extend renews the live in-flight claim of key that token holds, so
	// that it lasts lease from now by the store's clock. It returns
	// ErrFenced, and changes nothing, if token does not hold a live
	// in-flight claim of key: the lease has passed (a late renewal never
	// revives a claim), the key was taken over, completed or released.
	Extend(ctx context.Context, key string, token uint64, lease time.Duration) error

	// Complete stores value as the result of key and keeps it for
	// retention. token must be the one that Claim issued to this run and the
	// claim must still be the current one; otherwise Complete changes nothing
	// and returns ErrFenced.
	Complete(ctx context.Context, key string, token uint64, value []byte, retention time.Duration) error

	// Release removes the in-flight claim on key so that a retry may run.
	// It returns ErrFenced if token is not the current claim's.
	Release(ctx context.Context, key string, token uint64) error

	// Get returns the current record of key, or ErrNotFound when there is
	// none or it has expired.
	Get(ctx context.Context, key string) (Record, error)
}

// Claim is the answer to Store.Claim.
type Claim struct {
	// Won reports whether this caller now owns the key and must run.
	Won bool
	// Token is the fencing token of the claim when Won; never zero then.
	Token uint64
	// TakenOver reports that Won came from taking over an expired lease.
	TakenOver bool
	// Record is the existing record when Won is false.
	Record Record
}

// Record is what a Store keeps for a key.
type Record struct {
	Key         string
	Fingerprint []byte
	// Completed is false while the key is in flight.
	Completed bool
	// Token is the fencing token of the current or last claim.
	Token uint64
	// Value is the stored result, set when Completed.
	Value []byte
	// LeaseExpiry is when an in-flight claim may be taken over, by the
	// store's clock.
	LeaseExpiry time.Time
	// ExpiresAt is when a completed record is forgotten, by the store's
	// clock.
	ExpiresAt time.Time
}

// Errors returned by Stores. Implementations wrap them with detail; callers
// test with errors.Is.
var (
	// ErrNotFound: Get found no live record.
	ErrNotFound = errors.New("idempotency: record not found")
	// ErrFenced: an Extend, Complete or Release came with a token that does
	// not hold the live in-flight claim, because the lease passed or was
	// taken over, or the key was completed or released.
	ErrFenced = errors.New("idempotency: stale fencing token")
)
