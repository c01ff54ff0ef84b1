package main

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/examples/orderservice"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
)

// serveState serves repo and store as the tour does, and returns clients of
// them.
func serveState(t *testing.T, repo orderservice.Repository, store idempotency.Store) (remoteRepo, remoteStore) {
	srv := httptest.NewServer(stateHandler{repo: repo, store: store})
	t.Cleanup(srv.Close)
	c := &stateClient{base: srv.URL, http: srv.Client()}
	return remoteRepo{c}, remoteStore{c}
}

// TestRemoteStoreConforms runs the idempotency store conformance suite on
// the store the tour's instances share over HTTP.
func TestRemoteStoreConforms(t *testing.T) {
	idempotencytest.RunStore(t, func(t *testing.T, clk bulwark.Clock) idempotency.Store {
		mem, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mem.Close() })
		_, store := serveState(t, nil, mem)
		return store
	})
}

func TestRemoteRepositoryKeepsErrors(t *testing.T) {
	mem, err := orderservice.NewMemoryRepository(2)
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := serveState(t, mem, nil)
	ctx := context.Background()
	o := orderservice.Order{ID: "1-a", Tenant: "t", IdempotencyKey: "k", Customer: "c", Version: 1, State: orderservice.Created}
	if err := repo.Create(ctx, o); err != nil {
		t.Fatal(err)
	}
	var used *orderservice.KeyUsedError
	if err := repo.Create(ctx, orderservice.Order{ID: "0-b", Tenant: "t", IdempotencyKey: "k", Version: 1}); !errors.As(err, &used) || used.Order.ID != o.ID {
		t.Errorf("Create(a used key) = %v, want a KeyUsedError holding %s", err, o.ID)
	}
	if err := repo.Create(ctx, o); !errors.Is(err, orderservice.ErrDuplicate) && !errors.As(err, &used) {
		t.Errorf("Create(an existing id) = %v, want ErrDuplicate or KeyUsedError", err)
	}
	if _, err := repo.Get(ctx, "1-missing"); !errors.Is(err, orderservice.ErrNotFound) {
		t.Errorf("Get(missing) = %v, want ErrNotFound", err)
	}
	stale := o
	stale.Version = 3
	if err := repo.Update(ctx, stale); !errors.Is(err, orderservice.ErrVersionConflict) {
		t.Errorf("Update(stale) = %v, want ErrVersionConflict", err)
	}
	changes, last, more, err := repo.Changes(ctx, 0, 10)
	if err != nil || len(changes) != 1 || changes[0].ID != o.ID || last == 0 || more {
		t.Errorf("Changes = %v, %d, %v, %v; want the one order", changes, last, more, err)
	}
	if n, err := repo.Count(ctx); n != 1 || err != nil {
		t.Errorf("Count = %d, %v; want 1", n, err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := repo.Get(canceled, o.ID); !errors.Is(err, context.Canceled) {
		t.Errorf("Get(canceled ctx) = %v, want context.Canceled", err)
	}
}
