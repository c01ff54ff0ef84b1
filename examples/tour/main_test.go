package main

import "testing"

func TestTour(t *testing.T) {
	if err := run(false); err != nil {
		t.Fatal(err)
	}
}
