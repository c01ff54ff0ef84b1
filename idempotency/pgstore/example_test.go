package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/pgstore"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// This example needs a PostgreSQL server, so it is compiled but not run; the
// package's tests run the same steps against BULWARK_POSTGRES_URL.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app:secret@127.0.0.1:5432/orders?sslmode=disable")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	store, err := pgstore.New(pgstore.Config{Pool: pool})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := store.Migrate(ctx); err != nil {
		fmt.Println(err)
		return
	}
	c, err := store.Claim(ctx, "order-7f3a", []byte("sha256 of the request"), 30*time.Second)
	switch {
	case err != nil:
		fmt.Println("store unavailable:", err)
	case c.Won:
		err := store.Complete(ctx, "order-7f3a", c.Token, []byte(`{"order":42}`), 24*time.Hour)
		fmt.Println("ran the request:", err)
	case c.Record.Completed:
		fmt.Printf("replayed %s\n", c.Record.Value)
	default:
		fmt.Println("in flight elsewhere; retry later")
	}
}

// CompleteTx stores the result in the business transaction, through the
// Engine: the order row and the idempotency record commit or roll back
// together, and a run whose lease was taken over cannot commit its order.
func ExampleStore_CompleteTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app:secret@127.0.0.1:5432/orders?sslmode=disable")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	store, err := pgstore.New(pgstore.Config{Pool: pool})
	if err != nil {
		fmt.Println(err)
		return
	}
	engine, err := idempotency.New(idempotency.Config{Store: store})
	if err != nil {
		fmt.Println(err)
		return
	}
	type order struct {
		ID int64 `json:"id"`
	}
	o, err := idempotency.Do(ctx, engine, "order-7f3a", []byte("sha256 of the request"), func(ctx context.Context) (order, error) {
		var o order
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, "INSERT INTO orders (item) VALUES ($1) RETURNING id", "book").Scan(&o.ID); err != nil {
				return err
			}
			value, err := idempotency.EncodeResult(o)
			if err != nil {
				return err
			}
			// The key's record is completed in this transaction, after
			// a check of the lease's fencing token.
			return store.CompleteTx(ctx, tx, idempotency.LeaseFromContext(ctx), value)
		})
		return o, err
	})
	switch {
	case errors.Is(err, idempotency.ErrFenced):
		fmt.Println("lease lost: another run owns the key; nothing was written")
	case err != nil:
		fmt.Println("failed, nothing written:", err)
	default:
		fmt.Println("order", o.ID) // the same id for every duplicate
	}
}
