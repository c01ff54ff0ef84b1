package idempotencytest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
)

// A store's conformance test hands RunStore a constructor that builds each
// subtest a fresh store on the suite's clock. RunStore needs the *testing.T
// of a test function, so this example is compiled but not run: the body of
// conformance is what a store's TestConformance(t *testing.T) holds, and this
// package's TestRunStoreChild runs it against the MemoryStore.
func ExampleRunStore() {
	conformance := func(t *testing.T) {
		idempotencytest.RunStore(t, func(t *testing.T, clk bulwark.Clock) idempotency.Store {
			// JanitorInterval -1: no background goroutine; expired
			// records are removed as the suite's clock passes them.
			s, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{Clock: clk, JanitorInterval: -1})
			if err != nil {
				t.Fatalf("NewMemoryStore: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	}
	_ = conformance
}

// RunClients measures any operation with the metrics of the suite's
// benchmarks, here a Get of a completed key from four goroutines. In a store's
// tests its body is a BenchmarkGet(b *testing.B); testing.Benchmark runs it
// here as `go test -bench` would.
func ExampleRunClients() {
	ctx := context.Background()
	store, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{JanitorInterval: -1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	c, err := store.Claim(ctx, "order-1", nil, time.Minute)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := store.Complete(ctx, "order-1", c.Token, []byte(`{"id":1}`), time.Hour); err != nil {
		fmt.Println(err)
		return
	}

	r := testing.Benchmark(func(b *testing.B) {
		idempotencytest.RunClients(b, 4, func(int64) error {
			_, err := store.Get(ctx, "order-1")
			return err
		})
	})
	for _, metric := range []string{"p50-µs", "p99-µs", "req/s"} {
		_, ok := r.Extra[metric]
		fmt.Println(metric, "reported:", ok)
	}
	fmt.Println("ran:", r.N > 0)
	// Output:
	// p50-µs reported: true
	// p99-µs reported: true
	// req/s reported: true
	// ran: true
}
