package consistenthash_test

import (
	"fmt"

	"github.com/bulwark-go/bulwark/consistenthash"
)

// Picking the cache shard of a key, and what happens when a shard joins:
// only the keys the new shard takes move.
func Example() {
	ring, err := consistenthash.NewRing(consistenthash.RingConfig{
		Nodes: []consistenthash.Node{{Name: "cache-a"}, {Name: "cache-b"}, {Name: "cache-c"}},
	})
	if err != nil {
		panic(err)
	}
	keys := []string{"user-1", "user-2", "user-3", "user-4", "user-5", "user-6"}
	before := map[string]string{}
	for _, k := range keys {
		before[k], _ = ring.Get(k)
	}
	if err := ring.Add(consistenthash.Node{Name: "cache-d"}); err != nil {
		panic(err)
	}
	for _, k := range keys {
		shard, _ := ring.Get(k)
		if shard != before[k] {
			fmt.Printf("%s: %s -> %s\n", k, before[k], shard)
		} else {
			fmt.Printf("%s: %s\n", k, shard)
		}
	}
	// Output:
	// user-1: cache-c
	// user-2: cache-c
	// user-3: cache-c -> cache-d
	// user-4: cache-a
	// user-5: cache-a
	// user-6: cache-c
}

// A replica set: the three distinct nodes that hold a key, in preference
// order. A write goes to all three; a read tries them in order.
func ExampleRing_Owners() {
	ring, err := consistenthash.NewRing(consistenthash.RingConfig{
		Nodes: []consistenthash.Node{{Name: "db-1"}, {Name: "db-2"}, {Name: "db-3"}, {Name: "db-4"}, {Name: "db-5"}},
	})
	if err != nil {
		panic(err)
	}
	owners := ring.Owners("order-1001")
	for range 3 {
		name, index, ok := owners.Next()
		if !ok {
			break
		}
		fmt.Println(name, index)
	}
	// Output:
	// db-4 3
	// db-1 0
	// db-5 4
}

// A bounded-load pick: a hot key stays on its node until that node carries
// more than ⌈1.25 × average⌉ of the requests in flight, then spills over to
// the key's next owner.
func ExampleBounded() {
	table, err := consistenthash.NewTable(consistenthash.TableConfig{
		Nodes: []consistenthash.Node{{Name: "backend-1"}, {Name: "backend-2"}, {Name: "backend-3"}, {Name: "backend-4"}},
	})
	if err != nil {
		panic(err)
	}
	picker, err := consistenthash.NewBounded(consistenthash.BoundedConfig{Placement: table, LoadFactor: 1.25})
	if err != nil {
		panic(err)
	}
	var inFlight []consistenthash.Lease
	for i := range 6 {
		lease, err := picker.Acquire("hot-session")
		if err != nil {
			panic(err)
		}
		inFlight = append(inFlight, lease)
		node, total := picker.Load(lease.Node())
		fmt.Printf("request %d -> %s (%d of %d in flight)\n", i+1, lease.Node(), node, total)
	}
	for _, lease := range inFlight {
		lease.Release() // when each request ends
	}
	// Output:
	// request 1 -> backend-4 (1 of 1 in flight)
	// request 2 -> backend-2 (1 of 2 in flight)
	// request 3 -> backend-3 (1 of 3 in flight)
	// request 4 -> backend-4 (2 of 4 in flight)
	// request 5 -> backend-2 (2 of 5 in flight)
	// request 6 -> backend-3 (2 of 6 in flight)
}

// Jump hashing spreads keys over numbered buckets, such as the partitions of
// a topic.
func ExampleJump() {
	for _, key := range []string{"customer-17", "customer-42"} {
		partition, err := consistenthash.Jump(consistenthash.Hash(key), 12)
		if err != nil {
			panic(err)
		}
		fmt.Println(key, partition)
	}
	// Output:
	// customer-17 0
	// customer-42 8
}
