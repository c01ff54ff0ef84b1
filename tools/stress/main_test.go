package main

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestAssign(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"balancer", "examples/proxy", "idempotency/redisstore"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mods := []string{"idempotency/redisstore", "examples", "."} // longest first
	for _, tc := range []struct {
		patterns []string
		want     map[string][]string
	}{
		{nil, map[string][]string{".": {"./..."}, "examples": {"./..."}, "idempotency/redisstore": {"./..."}}},
		{[]string{"./..."}, map[string][]string{".": {"./..."}, "examples": {"./..."}, "idempotency/redisstore": {"./..."}}},
		{[]string{"./balancer/..."}, map[string][]string{".": {"./balancer/..."}}},
		{[]string{"./examples/proxy", "./balancer"}, map[string][]string{"examples": {"./proxy"}, ".": {"./balancer"}}},
		{[]string{"./examples/..."}, map[string][]string{"examples": {"./..."}}},
		{[]string{"idempotency/redisstore"}, map[string][]string{"idempotency/redisstore": {"."}}},
	} {
		got, err := assign(root, mods, tc.patterns)
		if err != nil {
			t.Errorf("assign(%q) error = %v", tc.patterns, err)
			continue
		}
		if !maps.EqualFunc(got, tc.want, slices.Equal) {
			t.Errorf("assign(%q) = %v, want %v", tc.patterns, got, tc.want)
		}
	}
	if _, err := assign(root, mods, []string{"./nowhere"}); err == nil {
		t.Errorf("assign(./nowhere) error = nil, want one")
	}
}
