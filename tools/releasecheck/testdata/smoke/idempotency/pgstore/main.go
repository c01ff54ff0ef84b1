// The smoke program of github.com/bulwark-go/bulwark/idempotency/pgstore,
// built and run by releasecheck from a fresh module. It makes a store and an
// engine on it; neither connects.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/pgstore"
)

func main() {
	pool, err := pgxpool.New(context.Background(), "postgres://smoke@127.0.0.1:1/smoke?sslmode=disable")
	check(err)
	defer pool.Close()
	store, err := pgstore.New(pgstore.Config{Pool: pool})
	check(err)
	_, err = idempotency.New(idempotency.Config{Store: store})
	check(err)
	fmt.Println("pgstore: an engine on a PostgreSQL store")
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
