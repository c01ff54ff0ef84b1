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

// CompleteTx stores the response in the business transaction: the order row
// and the idempotency record commit or roll back together.
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
	key := "order-7f3a"
	c, err := store.Claim(ctx, key, []byte("sha256 of the request"), 30*time.Second)
	if err != nil || !c.Won {
		fmt.Println("not ours to run:", err)
		return
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orders (idempotency_key, item) VALUES ($1, $2)", key, "book"); err != nil {
			return err
		}
		return store.CompleteTx(ctx, tx, key, c.Token, []byte(`{"order":42}`), 24*time.Hour)
	})
	switch {
	case errors.Is(err, idempotency.ErrFenced):
		fmt.Println("lease lost: another run owns the key; nothing was written")
	case err != nil:
		// Nothing was written; free the key for a retry.
		_ = store.Release(ctx, key, c.Token)
		fmt.Println("failed:", err)
	default:
		fmt.Println("order stored with its response")
	}
}
