// Package benchmarks holds side-by-side benchmarks of bulwark against the peer
// libraries people use today, in one module so that the core's go.mod stays
// light. Run them with `make bench-peers`; BENCHMARKS.md records the medians.
package benchmarks
