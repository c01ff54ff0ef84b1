//go:build !race

package orderservice

// raceEnabled reports whether the tests run under the race detector, which
// makes every request cost several times the CPU.
const raceEnabled = false
