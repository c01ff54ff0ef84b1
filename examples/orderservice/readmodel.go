package orderservice

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
)

// ReadModel serves order listings by tenant and customer from a copy that
// follows the Repository's change feed. It is eventually consistent: a listing may lag the
// writes by up to one refresh interval, and says how stale it is. A ReadModel
// is safe for concurrent use.
type ReadModel struct {
	repo Repository
	clk  bulwark.Clock

	mu          sync.RWMutex                        // guards the fields below
	byCustomer  map[tenantCustomer]map[string]Order // (tenant, customer) → id → latest known version
	cursor      int64                               // last change sequence applied
	refreshedAt time.Time                           // when the last refresh finished
}

type tenantCustomer struct{ tenant, customer string }

// Listing is a customer's orders as the read model knows them.
type Listing struct {
	Customer string  `json:"customer"`
	Orders   []Order `json:"orders"`
	// AsOf is the change sequence number the listing reflects.
	AsOf int64 `json:"as_of"`
	// AgeMillis is how long ago the read model last caught up.
	AgeMillis int64 `json:"age_ms"`
}

// NewReadModel returns a read model of repo; call Refresh or Run to fill it.
func NewReadModel(repo Repository, clk bulwark.Clock) *ReadModel {
	return &ReadModel{repo: repo, clk: bulwark.ClockOrWall(clk), byCustomer: make(map[tenantCustomer]map[string]Order)}
}

// Refresh applies every change the repository has after the read model's
// cursor. Applying is idempotent: an older version never replaces a newer one.
func (m *ReadModel) Refresh(ctx context.Context) error {
	m.mu.RLock()
	after := m.cursor
	m.mu.RUnlock()
	for {
		batch, last, more, err := m.repo.Changes(ctx, after, 500)
		if err != nil {
			return err
		}
		m.mu.Lock()
		for _, o := range batch {
			tc := tenantCustomer{o.Tenant, o.Customer}
			orders := m.byCustomer[tc]
			if orders == nil {
				orders = make(map[string]Order)
				m.byCustomer[tc] = orders
			}
			if cur, ok := orders[o.ID]; !ok || cur.Version < o.Version {
				orders[o.ID] = o
			}
		}
		m.cursor = max(m.cursor, last)
		if !more {
			m.refreshedAt = m.clk.Now()
		}
		m.mu.Unlock()
		if !more {
			return nil
		}
		after = last
	}
}

// Run refreshes every interval until ctx ends. Refresh errors are retried at
// the next tick; the listing's age shows the lag they cause.
func (m *ReadModel) Run(ctx context.Context, interval time.Duration) {
	for {
		_ = m.Refresh(ctx)
		if bulwark.Sleep(ctx, m.clk, interval) != nil {
			return
		}
	}
}

// List returns the orders of tenant's customer, newest first.
func (m *ReadModel) List(tenant, customer string) Listing {
	m.mu.RLock()
	defer m.mu.RUnlock()
	l := Listing{Customer: customer, AsOf: m.cursor, Orders: []Order{}}
	if !m.refreshedAt.IsZero() {
		l.AgeMillis = m.clk.Since(m.refreshedAt).Milliseconds()
	}
	for _, o := range m.byCustomer[tenantCustomer{tenant, customer}] {
		l.Orders = append(l.Orders, clone(o))
	}
	sort.Slice(l.Orders, func(i, j int) bool {
		if !l.Orders[i].CreatedAt.Equal(l.Orders[j].CreatedAt) {
			return l.Orders[i].CreatedAt.After(l.Orders[j].CreatedAt)
		}
		return l.Orders[i].ID < l.Orders[j].ID
	})
	return l
}
