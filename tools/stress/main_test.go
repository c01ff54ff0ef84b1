package main

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
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

func TestSchedule(t *testing.T) {
	var jobs []job
	for _, p := range []string{"a", "b", "c"} {
		for _, race := range []bool{false, true} {
			jobs = append(jobs, job{pkg: p, race: race, postgres: p != "c"})
		}
	}
	var (
		mu       sync.Mutex
		pg       int // jobs using PostgreSQL running
		running  = map[string]int{}
		now      int
		ran      []job
		release  = make(chan struct{})
		started  = make(chan job, len(jobs))
		finished = make(chan []time.Duration)
	)
	go func() {
		finished <- schedule(context.Background(), jobs, 2, func(j job) {
			mu.Lock()
			running[j.pkg]++
			if running[j.pkg] > 1 {
				t.Errorf("two jobs of package %s at once", j.pkg)
			}
			now++
			if now > 2 {
				t.Errorf("%d jobs at once, want at most 2", now)
			}
			if j.postgres {
				if pg++; pg > 1 {
					t.Errorf("%d jobs using PostgreSQL at once, want 1", pg)
				}
			}
			ran = append(ran, j)
			mu.Unlock()
			started <- j
			<-release
			mu.Lock()
			running[j.pkg]--
			now--
			if j.postgres {
				pg--
			}
			mu.Unlock()
		})
	}()
	// The first two jobs in order are a's, but a's second must wait for
	// the first, and b's, which use PostgreSQL as a's do, for a's: c's
	// first starts instead.
	first, second := <-started, <-started
	if first.pkg == second.pkg || first.postgres && second.postgres {
		t.Errorf("schedule started %+v and %+v at once", first, second)
	}
	close(release)
	took := <-finished
	if len(took) != len(jobs) || len(ran) != len(jobs) {
		t.Fatalf("schedule ran %d jobs and timed %d, want %d", len(ran), len(took), len(jobs))
	}
	for _, j := range jobs {
		if !slices.Contains(ran, j) {
			t.Errorf("schedule did not run %+v", j)
		}
	}
}

// A test binary that dies mid-test (killed, or a panic in another
// goroutine) fails its package with no failing test: the report shows what
// it said, from the output of the test it was running.
func TestConsumeKeepsACrashedTestsOutput(t *testing.T) {
	stream := `{"Action":"start","Package":"p"}
{"Action":"run","Package":"p","Test":"TestOK"}
{"Action":"output","Package":"p","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"pass","Package":"p","Test":"TestOK"}
{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Package":"p","Test":"TestA","Output":"signal: killed\n"}
{"Action":"output","Package":"p","Output":"FAIL\tp\t0.002s\n"}
{"Action":"fail","Package":"p","Elapsed":0.003}
`
	r := newReport()
	failed := r.consume(strings.NewReader(stream), true)
	if !slices.Equal(failed, []string{"(package)"}) {
		t.Fatalf("failed = %q, want the package alone", failed)
	}
	res := r.results[key{pkg: "p", race: true}]
	if res == nil || res.fails != 1 {
		t.Fatalf("the package's result = %+v, want one failure", res)
	}
	if got := strings.Join(res.first, "\n"); !strings.Contains(got, "(unfinished TestA)\n=== RUN   TestA\nsignal: killed") || !strings.Contains(got, "FAIL\tp") {
		t.Fatalf("first failure:\n%s\nwant TestA's last words, then the package's", got)
	}
	if len(r.running) != 0 {
		t.Fatalf("still running after the package ended: %v", r.running)
	}
}
