package consistenthash

import "github.com/cespare/xxhash/v2"

// Two primes of XXH64, used as odd multipliers for slot hashes.
const (
	prime1 uint64 = 0x9E3779B185EBCA87
	prime5 uint64 = 0x27D4EB2F165667C5
)

// Hash returns the 64-bit xxHash (XXH64, seed 0) of key: the hash that every
// placement in this package applies to keys and node names. Use it to turn a
// string key into the uint64 that Jump takes.
func Hash(key string) uint64 { return xxhash.Sum64String(key) }

// sum64 hashes a key or a node name.
func sum64(s string) uint64 { return xxhash.Sum64String(s) }

// mix is the SplitMix64 finalizer: a bijection on uint64 whose output bits
// each depend on every input bit. Rendezvous scores and slot hashes use it.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 27
	x *= 0x94D049BB133111EB
	x ^= x >> 31
	return x
}
