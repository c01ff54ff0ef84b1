package consistenthash

import (
	"fmt"
	"math"
)

// Jump returns the bucket in [0, buckets) of key by jump consistent hashing
// (Lamping and Veach, 2014): growing from n to n+1 buckets moves exactly 1/(n+1)
// of the keys, all to the new bucket, and lookups take O(log buckets) time
// with no memory. Buckets are numbered, so only the last one can be removed;
// use Table or Rendezvous for named nodes. Hash string keys with Hash first.
//
// Jump returns ErrEmpty when buckets is zero or negative, and an error
// wrapping ErrInvalidConfig when it exceeds math.MaxInt32.
func Jump(key uint64, buckets int) (int, error) {
	if buckets <= 0 {
		return -1, ErrEmpty
	}
	if buckets > math.MaxInt32 {
		return -1, fmt.Errorf("%w: %d buckets above math.MaxInt32", ErrInvalidConfig, buckets)
	}
	b, j := int64(-1), int64(0)
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b), nil
}
