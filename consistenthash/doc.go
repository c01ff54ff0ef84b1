// Package consistenthash maps keys to nodes so that a change of membership
// moves few keys: a cache shard, an order partition or a sticky backend keeps
// its keys while other nodes come and go.
//
// It offers four placements, with one vocabulary:
//
//   - [Ring]: a consistent-hash ring with virtual nodes (Karger, ketama). Lookups
//     take tens of nanoseconds at any size, placement depends only on the set of
//     nodes, and only the keys of a changed node move.
//   - [Table]: a slot table for O(1) lookups at Maglev speed, balanced to within
//     one slot per node, updated incrementally so that only the keys of a
//     changed node move (no stray moves).
//   - [Rendezvous]: weighted highest-random-weight hashing (Thaler and Ravishankar)
//     for small sets: the best balance and minimal movement, in O(nodes) per
//     lookup.
//   - [Jump]: jump consistent hashing (Lamping and Veach) for numbered
//     buckets; [Hash] turns a string key into its uint64.
//
// Ring, Table and Rendezvous implement [Placement]: Get returns a key's node,
// Owners a cursor ([Owners]) over its distinct nodes in preference order
// (replica sets, retries), Add and Remove change membership. [Bounded] picks,
// among a key's owners, the first one whose in-flight load is under
// ⌈c · average⌉ (consistent hashing with bounded loads, Mirrokni, Thorup and
// Zadimoghaddam).
//
//	ring, err := consistenthash.NewRing(consistenthash.RingConfig{
//		Nodes: []consistenthash.Node{{Name: "cache-a"}, {Name: "cache-b"}, {Name: "cache-c"}},
//	})
//	if err != nil { ... }
//	shard, err := ring.Get("user-42")
//
// Keys and node names are hashed with XXH64. Lookups never lock and do not
// allocate; updates publish a new immutable snapshot. Constructors and
// updates return errors that wrap [ErrInvalidConfig], [ErrInvalidNode],
// [ErrDuplicateNode] or [ErrUnknownNode]; lookups on an empty placement
// return [ErrEmpty]. The package has no clock, no events and no background
// work.
package consistenthash
