package orderservice

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Repository stores orders. Writes are strongly consistent: Update is a
// compare-and-set on the version. Changes feeds the read model, which may lag.
// Implementations are safe for concurrent use, and several service instances
// may share one.
type Repository interface {
	// Create stores a new order. It returns ErrDuplicate if the ID exists.
	// If o.IdempotencyKey is not empty and an order of o.Tenant already has
	// that key, Create stores nothing and returns a *KeyUsedError holding
	// the stored order: the (tenant, key) pair is unique, whatever the
	// idempotency store says.
	Create(ctx context.Context, o Order) error
	// Get returns the order, or ErrNotFound.
	Get(ctx context.Context, id string) (Order, error)
	// Update stores o if the stored order's version is o.Version-1, and
	// returns ErrVersionConflict otherwise (ErrNotFound if there is none).
	Update(ctx context.Context, o Order) error
	// Changes returns up to limit orders whose last change has a sequence
	// number after the given one (and possibly some before it, which the
	// read model ignores by version), in sequence order, with the highest
	// sequence number returned (after, when there is nothing new) and whether
	// more changes are waiting.
	Changes(ctx context.Context, after int64, limit int) (orders []Order, last int64, more bool, err error)
	// Count returns the number of orders.
	Count(ctx context.Context) (int, error)
	// Summary returns tenant's orders counted and summed by state and
	// currency, ordered by state then currency: the batch report. It reads
	// every order of the tenant, as they are now, which makes it the
	// heaviest call of the API.
	Summary(ctx context.Context, tenant string) ([]SummaryRow, error)
}

// SummaryRow is one line of a tenant's report: its orders in one state and
// currency.
type SummaryRow struct {
	State       State  `json:"state"`
	Currency    string `json:"currency"`
	Orders      int    `json:"orders"`
	AmountCents int64  `json:"amount_cents"`
}

// sortSummary orders rows by state, then currency.
func sortSummary(rows []SummaryRow) {
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].State != rows[j].State {
			return rows[i].State < rows[j].State
		}
		return rows[i].Currency < rows[j].Currency
	})
}

// ErrDuplicate is returned by Create for an ID that exists.
var ErrDuplicate = errors.New("order id exists")

// KeyUsedError is returned by Create when the order's tenant already has an
// order under the same idempotency key: a run of the same request got there
// first (it may have died before its key was completed, or lost its lease).
// Order is that order, the recovery point to answer with.
type KeyUsedError struct {
	Order Order
}

// Error names the key and the order that holds it.
func (e *KeyUsedError) Error() string {
	return fmt.Sprintf("idempotency key %q of tenant %q already created order %s", e.Order.IdempotencyKey, e.Order.Tenant, e.Order.ID)
}

// partitionOf reads the partition number that an order ID starts with
// ("<partition>-<random>").
func partitionOf(id string, n int) (int, error) {
	head, _, ok := strings.Cut(id, "-")
	if !ok {
		return 0, fmt.Errorf("%w: malformed id %q", ErrNotFound, id)
	}
	p, err := strconv.Atoi(head)
	if err != nil || p < 0 || p >= n {
		return 0, fmt.Errorf("%w: malformed id %q", ErrNotFound, id)
	}
	return p, nil
}

// MemoryRepository keeps orders in memory, in partitions that each have their
// own lock, as separate database shards would, with one index of (tenant,
// idempotency key) across them. Use NewMemoryRepository.
type MemoryRepository struct {
	parts []*memPartition

	keysMu sync.Mutex           // guards keys; taken before a partition's lock
	keys   map[tenantKey]string // (tenant, idempotency key) → order id

	logMu sync.Mutex // guards seq and log
	seq   int64
	log   []change
}

type memPartition struct {
	mu     sync.Mutex // guards orders
	orders map[string]Order
}

type tenantKey struct{ tenant, key string }

type change struct {
	seq   int64
	order Order
}

// NewMemoryRepository returns an empty repository of n partitions.
func NewMemoryRepository(n int) (*MemoryRepository, error) {
	if n < 1 || n > 1024 {
		return nil, fmt.Errorf("orderservice: %d partitions, want 1..1024", n)
	}
	r := &MemoryRepository{parts: make([]*memPartition, n), keys: make(map[tenantKey]string)}
	for i := range r.parts {
		r.parts[i] = &memPartition{orders: make(map[string]Order)}
	}
	return r, nil
}

var _ Repository = (*MemoryRepository)(nil)

func (r *MemoryRepository) part(id string) (*memPartition, error) {
	p, err := partitionOf(id, len(r.parts))
	if err != nil {
		return nil, err
	}
	return r.parts[p], nil
}

// Create implements Repository.
func (r *MemoryRepository) Create(ctx context.Context, o Order) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := r.part(o.ID)
	if err != nil {
		return err
	}
	tk := tenantKey{o.Tenant, o.IdempotencyKey}
	if tk.key != "" {
		r.keysMu.Lock()
		defer r.keysMu.Unlock()
		if id, ok := r.keys[tk]; ok {
			used, err := r.Get(ctx, id)
			if err != nil {
				return err
			}
			return &KeyUsedError{Order: used}
		}
	}
	p.mu.Lock()
	if _, ok := p.orders[o.ID]; ok {
		p.mu.Unlock()
		return ErrDuplicate
	}
	p.orders[o.ID] = clone(o)
	r.record(o) // under the partition lock, so the log keeps this order's versions in order
	p.mu.Unlock()
	if tk.key != "" {
		r.keys[tk] = o.ID
	}
	return nil
}

// Get implements Repository.
func (r *MemoryRepository) Get(ctx context.Context, id string) (Order, error) {
	if err := ctx.Err(); err != nil {
		return Order{}, err
	}
	p, err := r.part(id)
	if err != nil {
		return Order{}, err
	}
	p.mu.Lock()
	o, ok := p.orders[id]
	p.mu.Unlock()
	if !ok {
		return Order{}, ErrNotFound
	}
	return clone(o), nil
}

// Update implements Repository.
func (r *MemoryRepository) Update(ctx context.Context, o Order) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := r.part(o.ID)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, ok := p.orders[o.ID]
	if !ok {
		return ErrNotFound
	}
	if cur.Version != o.Version-1 {
		return ErrVersionConflict
	}
	p.orders[o.ID] = clone(o)
	r.record(o)
	return nil
}

func (r *MemoryRepository) record(o Order) {
	r.logMu.Lock()
	r.seq++
	r.log = append(r.log, change{seq: r.seq, order: clone(o)})
	r.logMu.Unlock()
}

// Changes implements Repository.
func (r *MemoryRepository) Changes(ctx context.Context, after int64, limit int) ([]Order, int64, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, after, false, err
	}
	r.logMu.Lock()
	defer r.logMu.Unlock()
	i := sort.Search(len(r.log), func(i int) bool { return r.log[i].seq > after })
	var out []Order
	last := after
	for ; i < len(r.log) && len(out) < limit; i++ {
		out = append(out, clone(r.log[i].order))
		last = r.log[i].seq
	}
	return out, last, i < len(r.log), nil
}

// Count implements Repository.
func (r *MemoryRepository) Count(ctx context.Context) (int, error) {
	n := 0
	for _, p := range r.parts {
		p.mu.Lock()
		n += len(p.orders)
		p.mu.Unlock()
	}
	return n, ctx.Err()
}

// Summary implements Repository: it scans every partition.
func (r *MemoryRepository) Summary(ctx context.Context, tenant string) ([]SummaryRow, error) {
	type group struct {
		state    State
		currency string
	}
	sums := map[group]*SummaryRow{}
	for _, p := range r.parts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p.mu.Lock()
		for _, o := range p.orders {
			if o.Tenant != tenant {
				continue
			}
			g := group{o.State, o.Currency}
			row := sums[g]
			if row == nil {
				row = &SummaryRow{State: o.State, Currency: o.Currency}
				sums[g] = row
			}
			row.Orders++
			row.AmountCents += o.AmountCents
		}
		p.mu.Unlock()
	}
	rows := make([]SummaryRow, 0, len(sums))
	for _, row := range sums {
		rows = append(rows, *row)
	}
	sortSummary(rows)
	return rows, nil
}

func clone(o Order) Order {
	o.Items = append([]Item(nil), o.Items...)
	return o
}
