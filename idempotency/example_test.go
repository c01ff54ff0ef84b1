package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
)

// The middleware on an order handler: a retried POST gets the first
// response replayed, and a reused key with another payload is refused.
func Example_middleware() {
	store, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	engine, err := idempotency.New(idempotency.Config{Store: store})
	if err != nil {
		panic(err)
	}
	idem, err := idempotency.Middleware(idempotency.HTTPConfig{Engine: engine})
	if err != nil {
		panic(err)
	}

	created := 0
	createOrder := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		created++
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", fmt.Sprintf("/orders/%d", created))
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%d}`, created)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /orders", idem(createOrder))

	send := func(key, body string) {
		r := httptest.NewRequest("POST", "/orders", strings.NewReader(body))
		if key != "" {
			r.Header.Set("Idempotency-Key", key)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		replayed := w.Header().Get("Idempotent-Replayed") == "true"
		fmt.Printf("%d replayed=%v %s\n", w.Code, replayed, firstLine(w.Body.String()))
	}
	send("order-7f3a", `{"item":"tea","qty":2}`) // the first attempt
	send("order-7f3a", `{"item":"tea","qty":2}`) // the client's retry
	send("order-7f3a", `{"item":"tea","qty":9}`) // the key reused for another order
	send("", `{"item":"tea","qty":2}`)           // no key
	fmt.Println("orders created:", created)
	// Output:
	// 201 replayed=false {"id":1}
	// 201 replayed=true {"id":1}
	// 422 replayed=false {"type":"about:blank","title":"Unprocessable Entity","status":422,"detail":"This Idempotency-Key was used with a different request."}
	// 400 replayed=false {"type":"about:blank","title":"Bad Request","status":400,"detail":"This request requires an Idempotency-Key header."}
	// orders created: 1
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

type charge struct {
	ID     string `json:"id"`
	Amount int    `json:"amount"`
}

// Do around a payment call: the key that makes the order idempotent is
// forwarded to the payment provider, so that neither side charges twice; a
// decline (a permanent error) is stored and replayed like a result.
func ExampleDo() {
	store, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	engine, err := idempotency.New(idempotency.Config{Store: store})
	if err != nil {
		panic(err)
	}

	// provider stands for the payment provider's API, which honours an
	// Idempotency-Key of its own.
	calls := 0
	provider := func(ctx context.Context, idemKey string, amount int) (charge, error) {
		calls++
		if amount > 1000 {
			return charge{}, bulwark.Permanent(errors.New("card declined: over limit"))
		}
		return charge{ID: "ch_" + idemKey, Amount: amount}, nil
	}
	pay := func(ctx context.Context, orderKey string, amount int) (charge, error) {
		fingerprint := fmt.Appendf(nil, "amount=%d", amount)
		return idempotency.Do(ctx, engine, "payments:"+orderKey, fingerprint, func(ctx context.Context) (charge, error) {
			return provider(ctx, orderKey, amount)
		})
	}

	ctx := context.Background()
	for range 2 { // a retry after a timeout, say
		c, err := pay(ctx, "order-7f3a", 250)
		fmt.Println(c.ID, c.Amount, err)
	}
	for range 2 {
		_, err := pay(ctx, "order-9b21", 5000)
		var replayed *idempotency.ReplayedError
		fmt.Println(err, "replayed:", errors.As(err, &replayed), "permanent:", bulwark.IsPermanent(err))
	}
	_, err = pay(ctx, "order-7f3a", 999)
	fmt.Println(errors.Is(err, idempotency.ErrMismatch))
	fmt.Println("provider calls:", calls)
	// Output:
	// ch_order-7f3a 250 <nil>
	// ch_order-7f3a 250 <nil>
	// card declined: over limit replayed: false permanent: true
	// card declined: over limit replayed: true permanent: true
	// true
	// provider calls: 2
}

// The operation completes its key itself, in the transaction of its business
// write, with the Lease from its context: with pgstore that is
// store.CompleteTx(ctx, tx, lease, value). Here a MemoryStore stands in for the
// database, and the "transaction" is one Complete. Duplicates replay what the
// operation stored, and the Engine stores nothing more.
func ExampleLeaseFromContext() {
	store, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	engine, err := idempotency.New(idempotency.Config{Store: store})
	if err != nil {
		panic(err)
	}
	type order struct {
		ID int `json:"id"`
	}
	orders := 0
	create := func(ctx context.Context) (order, error) {
		orders++
		o := order{ID: orders} // the business write…
		lease := idempotency.LeaseFromContext(ctx)
		value, err := idempotency.EncodeResult(o)
		if err != nil {
			return order{}, err
		}
		// …and the key's completion, checked by the fencing token, in the
		// same transaction.
		if err := store.Complete(ctx, lease.Key(), lease.Token(), value, lease.Retention()); err != nil {
			return order{}, err
		}
		lease.MarkCompleted()
		return o, nil
	}
	for range 2 {
		o, err := idempotency.Do(context.Background(), engine, "order-7f3a", nil, create)
		fmt.Println(o.ID, err)
	}
	fmt.Println("orders created:", orders)
	// Output:
	// 1 <nil>
	// 1 <nil>
	// orders created: 1
}
