package fallback_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/fallback"
)

type Price struct {
	Cents int
	Stale bool
}

// When the pricing service fails, serve the last price seen, marked stale;
// a request for an unknown item is not a failure of the service, and gets
// no fallback.
func ExampleFallback_Call() {
	last := map[string]int{"sku-1": 1299}
	price, err := fallback.New(fallback.Config[Price]{
		Name: "price",
		Func: func(ctx context.Context, err error) (Price, error) {
			return Price{Cents: last["sku-1"], Stale: true}, nil
		},
	})
	if err != nil {
		panic(err)
	}
	down := func(context.Context) (Price, error) { return Price{}, errors.New("connection refused") }
	unknown := func(context.Context) (Price, error) { return Price{}, bulwark.Permanent(errors.New("no such item")) }
	guard := bulwark.Compose() // retries and a breaker in a real service

	fmt.Println(price.Call(context.Background(), guard, down))
	fmt.Println(price.Call(context.Background(), guard, unknown))
	// Output:
	// {1299 true} <nil>
	// {0 false} no such item
}
