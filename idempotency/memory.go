package idempotency

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/internal/base"
)

var _ Store = (*MemoryStore)(nil)

// ErrFull is returned by MemoryStore.Claim, wrapped, when the store holds
// MaxEntries live records and none has expired: a new key cannot be recorded
// without forgetting one that still protects a request.
var ErrFull = errors.New("idempotency: memory store full")

// ErrClosed is returned by a MemoryStore's methods after Close.
var ErrClosed = errors.New("idempotency: store closed")

// ErrStarted is returned by a second MemoryStore.Start.
var ErrStarted = errors.New("idempotency: already started")

// MemoryConfig configures a MemoryStore. The zero MemoryConfig is valid.
type MemoryConfig struct {
	// Clock is the time source for leases and retention: the store's own
	// clock, which decides every expiry. If nil, the wall clock.
	Clock bulwark.Clock
	// MaxEntries bounds the number of records held, in flight and completed.
	// It is enforced per shard (MaxEntries/Shards each, rounded up), so a
	// Claim may see ErrFull slightly before the total is reached. If zero,
	// 100,000. It must not be negative.
	MaxEntries int
	// Shards is the number of independently locked partitions of the key
	// space. If zero, 64. It must not be negative.
	Shards int
	// JanitorInterval is how often the janitor (see MemoryStore.Start)
	// removes expired records (completed ones past their retention,
	// in-flight ones past their lease) in the background. If zero, one
	// minute. A negative value disables the janitor: Start then starts
	// nothing, and expired records are removed only when a full shard needs
	// room.
	JanitorInterval time.Duration
}

// MemoryStore is the embedded Store: records live in the memory of one
// process, in a fixed number of shards, each guarded by its own mutex. It
// suits a single instance, tests, and a cache in front of nothing; several
// instances of a service need a shared Store such as redisstore or pgstore.
//
// A record is forgotten when its retention (completed) or lease (in flight)
// has passed: lookups treat it as absent at once, and its memory is freed
// when a full shard needs room or, if Start was called, by the janitor. The store holds at most MaxEntries records; when a shard is full of
// live records, Claim of a new key fails with ErrFull rather than forget a
// record that still protects a request.
//
// A MemoryStore is safe for concurrent use by multiple goroutines. Use
// NewMemoryStore; the zero MemoryStore is not usable. NewMemoryStore starts
// no background work: Start starts the janitor, which only frees memory
// early (a store that is never started behaves the same), and Close stops
// it.
type MemoryStore struct {
	clock    bulwark.Clock
	seed     maphash.Seed
	shards   []memShard
	perShard int // maximum records per shard

	janitorMu sync.Mutex    // serializes sweeps with Close
	janitor   bulwark.Timer // guarded by janitorMu; nil until Start, when disabled or closed
	interval  time.Duration
	started   bool        // guarded by janitorMu
	closed    bool        // guarded by janitorMu
	stopCtx   func() bool // guarded by janitorMu; stops the watch on Start's ctx
}

type memShard struct {
	mu      sync.Mutex
	records map[string]*memRecord // guarded by mu, and so are the records
	next    uint64                // guarded by mu; the last token issued
	// soonest is guarded by mu; no record expires before it, so a full
	// shard is not swept in vain before then.
	soonest time.Time
	closed  bool     // guarded by mu
	_       [15]byte // pads the shard to one 64-byte cache line
}

// memRecord is one key's record. Its fields change under the shard's lock,
// but the contents of fingerprint and value never do once set: a new claim or
// completion sets new ones. So a copy of the struct taken under the lock can
// be read after it.
type memRecord struct {
	fingerprint string // copy of the claim's fingerprint
	value       []byte // copy of the result; nil while in flight
	token       uint64
	completed   bool
	leaseExpiry time.Time
	expiresAt   time.Time
}

// live reports whether r still counts at now: a completed record until its
// retention ends, an in-flight one until its lease ends.
func (r *memRecord) live(now time.Time) bool {
	if r.completed {
		return now.Before(r.expiresAt)
	}
	return now.Before(r.leaseExpiry)
}

// NewMemoryStore returns a MemoryStore configured by cfg. It starts no
// goroutine and no timer (see Start). It returns an error wrapping
// ErrInvalidConfig if a field of cfg is out of range.
func NewMemoryStore(cfg MemoryConfig) (*MemoryStore, error) {
	if cfg.MaxEntries < 0 {
		return nil, fmt.Errorf("%w: MemoryConfig.MaxEntries %d is negative", ErrInvalidConfig, cfg.MaxEntries)
	}
	if cfg.Shards < 0 {
		return nil, fmt.Errorf("%w: MemoryConfig.Shards %d is negative", ErrInvalidConfig, cfg.Shards)
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = 100_000
	}
	if cfg.Shards == 0 {
		cfg.Shards = 64
	}
	if cfg.Shards > cfg.MaxEntries {
		return nil, fmt.Errorf("%w: MemoryConfig.Shards %d exceeds MaxEntries %d", ErrInvalidConfig, cfg.Shards, cfg.MaxEntries)
	}
	if cfg.JanitorInterval == 0 {
		cfg.JanitorInterval = time.Minute
	}
	s := &MemoryStore{
		clock:    base.ClockOrWall(cfg.Clock),
		seed:     maphash.MakeSeed(),
		shards:   make([]memShard, cfg.Shards),
		perShard: (cfg.MaxEntries + cfg.Shards - 1) / cfg.Shards,
		interval: cfg.JanitorInterval,
	}
	for i := range s.shards {
		s.shards[i].records = make(map[string]*memRecord)
	}
	return s, nil
}

// Start starts the janitor, which removes expired records every
// MemoryConfig.JanitorInterval on the store's clock until ctx ends or Close
// is called. It frees memory early and nothing more: a store that is never
// started keeps working, since lookups treat expired records as absent. If
// the janitor is disabled, Start starts nothing. Start returns ErrStarted if
// called twice and ErrClosed after Close.
func (s *MemoryStore) Start(ctx context.Context) error {
	s.janitorMu.Lock()
	defer s.janitorMu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return ErrStarted
	}
	s.started = true
	if s.interval <= 0 {
		return nil
	}
	s.janitor = s.clock.AfterFunc(s.interval, s.sweepTick)
	s.stopCtx = context.AfterFunc(ctx, s.stopJanitor)
	return nil
}

// stopJanitor stops the janitor when Start's ctx ends, waiting for a sweep
// in progress.
func (s *MemoryStore) stopJanitor() {
	s.janitorMu.Lock()
	defer s.janitorMu.Unlock()
	if s.janitor != nil {
		s.janitor.Stop()
		s.janitor = nil
	}
}

func (s *MemoryStore) shard(key string) *memShard {
	h := maphash.String(s.seed, key)
	return &s.shards[(h>>32)*uint64(len(s.shards))>>32]
}

// Claim implements Store. It fails with ErrFull (wrapped) when key is new
// and its shard holds only live records, with ErrClosed after Close, and
// with ctx's error when ctx is done. A lease of zero or less is an error.
func (s *MemoryStore) Claim(ctx context.Context, key string, fingerprint []byte, lease time.Duration) (Claim, error) {
	if err := ctx.Err(); err != nil {
		return Claim{}, err
	}
	if lease <= 0 {
		return Claim{}, fmt.Errorf("idempotency: claim %q: lease %v is not positive", key, lease)
	}
	now := s.clock.Now()
	sh := s.shard(key)
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		return Claim{}, ErrClosed
	}
	r, ok := sh.records[key]
	takeover := false
	if ok {
		if r.live(now) {
			snap := *r
			sh.mu.Unlock()
			return Claim{Record: snap.record(key)}, nil
		}
		takeover = !r.completed
	} else if len(sh.records) >= s.perShard && (now.Before(sh.soonest) || sh.sweepLocked(now) == 0) {
		sh.mu.Unlock()
		return Claim{}, fmt.Errorf("%w: claim %q: %d live records in its shard", ErrFull, key, s.perShard)
	}
	sh.next++
	token := sh.next
	if !ok {
		r = new(memRecord)
		sh.records[key] = r
	}
	*r = memRecord{
		fingerprint: string(fingerprint),
		token:       token,
		leaseExpiry: now.Add(lease),
	}
	sh.expiresAt(r.leaseExpiry)
	sh.mu.Unlock()
	return Claim{Won: true, Token: token, TakenOver: takeover}, nil
}

// Extend implements Store. It returns ErrFenced (wrapped) unless token is
// the live in-flight claim of key, a lease of zero or less is an error, and
// it returns ErrClosed after Close.
func (s *MemoryStore) Extend(ctx context.Context, key string, token uint64, lease time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if lease <= 0 {
		return fmt.Errorf("idempotency: extend %q: lease %v is not positive", key, lease)
	}
	now := s.clock.Now()
	sh := s.shard(key)
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		return ErrClosed
	}
	r, ok := sh.records[key]
	if !ok || r.completed || r.token != token || !r.live(now) {
		sh.mu.Unlock()
		return fmt.Errorf("%w: extend %q with token %d", ErrFenced, key, token)
	}
	r.leaseExpiry = now.Add(lease)
	sh.expiresAt(r.leaseExpiry)
	sh.mu.Unlock()
	return nil
}

// Complete implements Store. It keeps its own copy of value. It returns
// ErrFenced (wrapped) unless token is the live in-flight claim of key, a
// retention of zero or less is an error, and it returns ErrClosed after
// Close.
func (s *MemoryStore) Complete(ctx context.Context, key string, token uint64, value []byte, retention time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if retention <= 0 {
		return fmt.Errorf("idempotency: complete %q: retention %v is not positive", key, retention)
	}
	v := make([]byte, len(value))
	copy(v, value)
	now := s.clock.Now()
	sh := s.shard(key)
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		return ErrClosed
	}
	r, ok := sh.records[key]
	if !ok || r.completed || r.token != token || !r.live(now) {
		sh.mu.Unlock()
		return fmt.Errorf("%w: complete %q with token %d", ErrFenced, key, token)
	}
	r.completed = true
	r.value = v
	r.expiresAt = now.Add(retention)
	sh.expiresAt(r.expiresAt)
	sh.mu.Unlock()
	return nil
}

// Release implements Store. It returns ErrFenced (wrapped) unless token is
// the live in-flight claim of key, and ErrClosed after Close.
func (s *MemoryStore) Release(ctx context.Context, key string, token uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock.Now()
	sh := s.shard(key)
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		return ErrClosed
	}
	r, ok := sh.records[key]
	if !ok || r.completed || r.token != token || !r.live(now) {
		sh.mu.Unlock()
		return fmt.Errorf("%w: release %q with token %d", ErrFenced, key, token)
	}
	delete(sh.records, key)
	sh.mu.Unlock()
	return nil
}

// Get implements Store. The returned Record's slices are the caller's own.
// It returns ErrNotFound (wrapped) for a missing or expired key and
// ErrClosed after Close.
func (s *MemoryStore) Get(ctx context.Context, key string) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	now := s.clock.Now()
	sh := s.shard(key)
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		return Record{}, ErrClosed
	}
	r, ok := sh.records[key]
	if !ok || !r.live(now) {
		sh.mu.Unlock()
		return Record{}, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	snap := *r
	sh.mu.Unlock()
	return snap.record(key), nil
}

// record returns r as a Record with fresh copies of its slices. Called on a
// copy of a record, it may run without the shard's lock.
func (r *memRecord) record(key string) Record {
	rec := Record{
		Key:         key,
		Fingerprint: []byte(r.fingerprint),
		Completed:   r.completed,
		Token:       r.token,
		LeaseExpiry: r.leaseExpiry,
	}
	if r.completed {
		rec.Value = append([]byte(nil), r.value...)
		rec.ExpiresAt = r.expiresAt
	}
	return rec
}

// Len returns the number of records held, counting expired ones that the
// janitor has not yet removed.
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.records)
		sh.mu.Unlock()
	}
	return n
}

// Close stops the janitor, if started, waiting for a sweep in progress, and
// drops every record. Later calls of the Store methods return ErrClosed. Close is
// idempotent and always returns nil.
func (s *MemoryStore) Close() error {
	s.janitorMu.Lock()
	defer s.janitorMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.stopCtx != nil {
		s.stopCtx()
		s.stopCtx = nil
	}
	if s.janitor != nil {
		s.janitor.Stop()
		s.janitor = nil
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sh.closed = true
		sh.records = nil
		sh.mu.Unlock()
	}
	return nil
}

// sweepTick is the janitor: it runs on the clock's timer, removes expired
// records shard by shard and schedules the next sweep.
func (s *MemoryStore) sweepTick() {
	s.janitorMu.Lock()
	defer s.janitorMu.Unlock()
	if s.closed || s.janitor == nil {
		return
	}
	s.sweep(s.clock.Now())
	s.janitor.Reset(s.interval)
}

// sweep removes every record expired at now and returns how many it
// removed.
func (s *MemoryStore) sweep(now time.Time) int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.sweepLocked(now)
		sh.mu.Unlock()
	}
	return n
}

// sweepLocked removes the records expired at now and returns how many.
func (sh *memShard) sweepLocked(now time.Time) int {
	n := 0
	sh.soonest = time.Time{}
	for k, r := range sh.records {
		if !r.live(now) {
			delete(sh.records, k)
			n++
			continue
		}
		if r.completed {
			sh.expiresAt(r.expiresAt)
		} else {
			sh.expiresAt(r.leaseExpiry)
		}
	}
	return n
}

// expiresAt notes that a record of the shard expires at t.
func (sh *memShard) expiresAt(t time.Time) {
	if sh.soonest.IsZero() || t.Before(sh.soonest) {
		sh.soonest = t
	}
}
