//go:build !unix

package main

import "os"

// lockFile does nothing where flock does not exist: do not run two checks at
// once there.
func lockFile(*os.File) error { return nil }
