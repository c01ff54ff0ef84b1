package consistenthash

import "math/bits"

// The primes of XXH64 (xxHash specification, version 0.8).
const (
	prime1 uint64 = 0x9E3779B185EBCA87
	prime2 uint64 = 0xC2B2AE3D27D4EB4F
	prime3 uint64 = 0x165667B19E3779F9
	prime4 uint64 = 0x85EBCA77C2B2AE63
	prime5 uint64 = 0x27D4EB2F165667C5
)

// Hash returns the 64-bit xxHash (XXH64, seed 0) of key: the hash that every
// placement in this package applies to keys and node names. Use it to turn a
// string key into the uint64 that Jump takes.
func Hash(key string) uint64 { return sum64(key) }

// sum64 is XXH64 with seed 0, written from the xxHash specification. It is
// generic so that strings hash without a conversion to []byte.
func sum64[T string | []byte](b T) uint64 {
	n := len(b)
	var h uint64
	i := 0
	if n >= 32 {
		p1, p2 := prime1, prime2 // variables: the sums below wrap, as XXH64 specifies
		v1 := p1 + p2
		v2 := p2
		v3 := uint64(0)
		v4 := -p1
		for ; i+32 <= n; i += 32 {
			v1 = round(v1, le64(b, i))
			v2 = round(v2, le64(b, i+8))
			v3 = round(v3, le64(b, i+16))
			v4 = round(v4, le64(b, i+24))
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		h = mergeRound(h, v1)
		h = mergeRound(h, v2)
		h = mergeRound(h, v3)
		h = mergeRound(h, v4)
	} else {
		h = prime5
	}
	h += uint64(n)
	for ; i+8 <= n; i += 8 {
		h ^= round(0, le64(b, i))
		h = bits.RotateLeft64(h, 27)*prime1 + prime4
	}
	if i+4 <= n {
		h ^= uint64(le32(b, i)) * prime1
		h = bits.RotateLeft64(h, 23)*prime2 + prime3
		i += 4
	}
	for ; i < n; i++ {
		h ^= uint64(b[i]) * prime5
		h = bits.RotateLeft64(h, 11) * prime1
	}
	h ^= h >> 33
	h *= prime2
	h ^= h >> 29
	h *= prime3
	h ^= h >> 32
	return h
}

func round(acc, in uint64) uint64 {
	acc += in * prime2
	acc = bits.RotateLeft64(acc, 31)
	return acc * prime1
}

func mergeRound(acc, v uint64) uint64 {
	acc ^= round(0, v)
	return acc*prime1 + prime4
}

func le64[T string | []byte](b T, i int) uint64 {
	b = b[i : i+8]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func le32[T string | []byte](b T, i int) uint32 {
	b = b[i : i+4]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

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
