// Command stress runs the tests of every package of every module of the
// repository many times, without and with -race, while a CPU hog keeps every
// core busy, and reports, per package, which tests failed and how often, with
// the output of each one's first failure. It finds the tests that pass on an
// idle machine and fail on a loaded one.
//
// Each package runs in a go test command of its own, per mode, and -jobs
// such commands run at once: never two of one package (its tests may share
// tables or keys outside the process), nor two packages whose tests use the
// PostgreSQL server (read BULWARK_POSTGRES_URL), which together would open
// more connections than it takes. A first pass runs each package once
// per mode and measures it; a second runs the other count-1 runs, the
// slowest packages first, so that the slowest does not start last.
//
// The hog is a goroutine per core spinning in this process, so it ends with
// the process, whatever ends it. The tests see the environment of the
// command, BULWARK_REDIS_ADDR and BULWARK_POSTGRES_URL included.
//
// Usage, from the tools directory (`make stress` from the root):
//
//	go run ./stress [-count 20] [-race both|off|on] [-jobs 4] [-run regexp] [-hog=false] [packages]
//
// packages are patterns relative to the repository's root, such as
// ./balancer/... or ./examples/proxy; by default, ./... of every module. It
// exits with status 1 if any test or package failed in any run.
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	count := flag.Int("count", 20, "runs of each test, per mode")
	race := flag.String("race", "both", `"off", "on" or "both": without -race, with it, or each in turn`)
	run := flag.String("run", "", "run only the tests matching this regexp (go test -run)")
	timeout := flag.Duration("timeout", 90*time.Minute, "go test -timeout, for all the runs of one package")
	hog := flag.Bool("hog", true, "keep every core busy while the tests run")
	jobs := flag.Int("jobs", 4, "go test commands at once (each runs one package in one mode)")
	flag.Parse()
	var modes []bool
	switch *race {
	case "off":
		modes = []bool{false}
	case "on":
		modes = []bool{true}
	case "both":
		modes = []bool{false, true}
	default:
		fmt.Fprintf(os.Stderr, "stress: -race %q: want off, on or both\n", *race)
		os.Exit(2)
	}
	if *count < 1 || *jobs < 1 {
		fmt.Fprintf(os.Stderr, "stress: -count %d, -jobs %d: want at least 1\n", *count, *jobs)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ok, err := stress(ctx, os.Stdout, options{count: *count, jobs: *jobs, modes: modes, run: *run, timeout: *timeout, hog: *hog, patterns: flag.Args()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "stress:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

type options struct {
	count    int
	jobs     int    // go test commands at once
	modes    []bool // race off/on
	run      string
	timeout  time.Duration
	hog      bool
	patterns []string
}

// job is one go test command: count runs of one package in one mode.
type job struct {
	module   string // directory, relative to the root
	pkg      string // import path
	postgres bool   // its tests use the PostgreSQL server
	race     bool
	count    int
	took     time.Duration // of the first pass, for the second
}

func stress(ctx context.Context, w io.Writer, o options) (bool, error) {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return false, fmt.Errorf("finding the repository: %w", err)
	}
	root := strings.TrimSpace(string(out))
	mods, err := modules(root)
	if err != nil {
		return false, err
	}
	byModule, err := assign(root, mods, o.patterns)
	if err != nil {
		return false, err
	}
	var pkgs []job // one per package, mode unset
	for _, m := range mods {
		if ps := byModule[m]; len(ps) > 0 {
			list, err := testPackages(ctx, filepath.Join(root, m), ps)
			if err != nil {
				return false, fmt.Errorf("listing the packages of %s: %w", m, err)
			}
			for _, p := range list {
				pkgs = append(pkgs, job{module: m, pkg: p.path, postgres: p.postgres})
			}
		}
	}
	if o.hog {
		stopHog := startHog(runtime.NumCPU())
		defer stopHog()
		fmt.Fprintf(w, "stress: CPU hog on %d cores\n", runtime.NumCPU())
	}
	fmt.Fprintf(w, "stress: %d packages with tests, %d runs each per mode, %d go test commands at once\n", len(pkgs), o.count, o.jobs)
	var pg []string
	for _, p := range pkgs {
		if p.postgres {
			pg = append(pg, p.pkg)
		}
	}
	if len(pg) > 0 {
		fmt.Fprintf(w, "stress: one at a time, as they use PostgreSQL: %s\n", strings.Join(pg, " "))
	}
	r := newReport()
	start := time.Now()
	var mu sync.Mutex // guards w
	done := func(j job, took time.Duration, failed []string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "stress: %-56s %-8s x%-3d %5.0fs, %d failed runs", j.pkg, modeName(j.race), j.count, took.Seconds(), len(failed))
		if len(failed) > 0 {
			fmt.Fprintf(w, ": %s", strings.Join(failed, " "))
		}
		fmt.Fprintln(w)
	}
	// The first pass runs each package once per mode and measures it; the
	// second runs the other count-1 runs, the longest first, so that the
	// slowest package does not start last.
	var first []job
	for _, race := range o.modes {
		for _, p := range pkgs {
			p.race, p.count = race, 1
			first = append(first, p)
		}
	}
	took := schedule(ctx, first, o.jobs, func(j job) { runAndReport(ctx, root, j, o, r, done) })
	if o.count > 1 {
		second := make([]job, len(first))
		for i, j := range first {
			j.count, j.took = o.count-1, took[i]
			second[i] = j
		}
		slices.SortStableFunc(second, func(a, b job) int { return cmp.Compare(b.took, a.took) })
		schedule(ctx, second, o.jobs, func(j job) { runAndReport(ctx, root, j, o, r, done) })
	}
	r.print(w, o.count, time.Since(start))
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	return r.failures() == 0, nil
}

func runAndReport(ctx context.Context, root string, j job, o options, r *report, done func(job, time.Duration, []string)) {
	t0 := time.Now()
	failed, err := runJob(ctx, root, j, o, r)
	if err != nil {
		r.packageFailure(j.pkg, j.race, err.Error())
		failed = append(failed, "(go test)")
	}
	done(j, time.Since(t0), failed)
}

// schedule runs the jobs, at most n at once, never two of one package at
// once (its tests may share state outside the process, such as database
// tables), and never two that use the PostgreSQL server at once (their
// tests, written to have it to themselves as in make test, would together
// open more than its 100 connections), taking each time the first job in
// order that may start. It returns how long each job took.
func schedule(ctx context.Context, jobs []job, n int, run func(job)) []time.Duration {
	took := make([]time.Duration, len(jobs))
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		started = make([]bool, len(jobs))
		busy    = map[string]bool{} // package → running
		pgBusy  bool                // a job that uses PostgreSQL is running
		left    = len(jobs)
		wg      sync.WaitGroup
	)
	next := func() int { // with mu held; -1: nothing to start now
		for i, j := range jobs {
			if !started[i] && !busy[j.pkg] && !(j.postgres && pgBusy) {
				return i
			}
		}
		return -1
	}
	for range min(n, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			for left > 0 && ctx.Err() == nil {
				i := next()
				if i < 0 {
					cond.Wait()
					continue
				}
				started[i], busy[jobs[i].pkg] = true, true
				pgBusy = pgBusy || jobs[i].postgres
				left--
				mu.Unlock()
				t0 := time.Now()
				run(jobs[i])
				mu.Lock()
				took[i] = time.Since(t0)
				busy[jobs[i].pkg] = false
				if jobs[i].postgres {
					pgBusy = false
				}
				cond.Broadcast()
			}
			cond.Broadcast() // wake the workers waiting for a package that will not come
		}()
	}
	wg.Wait()
	return took
}

// testPackage is a package with tests.
type testPackage struct {
	path     string
	postgres bool // a test file reads BULWARK_POSTGRES_URL
}

// testPackages lists the packages that match patterns in the module at dir
// and have test files.
func testPackages(ctx context.Context, dir string, patterns []string) ([]testPackage, error) {
	args := append([]string{"list", "-f", "{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}\t{{.Dir}}\t{{join .TestGoFiles \",\"}},{{join .XTestGoFiles \",\"}}{{end}}"}, patterns...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []testPackage
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			continue
		}
		p := testPackage{path: f[0]}
		for _, name := range strings.Split(f[2], ",") {
			if name == "" {
				continue
			}
			b, err := os.ReadFile(filepath.Join(f[1], name))
			if err != nil {
				return nil, err
			}
			p.postgres = p.postgres || strings.Contains(string(b), "BULWARK_POSTGRES_URL")
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

func modeName(race bool) string {
	if race {
		return "race"
	}
	return "no-race"
}

// modules returns the module directories under root, relative to it,
// longest first.
func modules(root string) ([]string, error) {
	var mods []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor") {
			return filepath.SkipDir
		}
		if !d.IsDir() && d.Name() == "go.mod" {
			rel, _ := filepath.Rel(root, filepath.Dir(p))
			mods = append(mods, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Slice(mods, func(i, j int) bool {
		return len(mods[i]) > len(mods[j]) || len(mods[i]) == len(mods[j]) && mods[i] < mods[j]
	})
	return mods, err
}

// assign maps each pattern to the module that holds it, as a pattern
// relative to that module. No patterns, or ./..., means ./... in every
// module.
func assign(root string, mods, patterns []string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, p := range patterns {
		clean := filepath.ToSlash(filepath.Clean(p))
		if clean == "..." {
			patterns = nil
			break
		}
		dir, all := strings.CutSuffix(clean, "/...")
		if _, err := os.Stat(filepath.Join(root, dir)); err != nil {
			return nil, fmt.Errorf("pattern %q: %w", p, err)
		}
		for _, m := range mods { // longest first: the innermost module
			if m != "." && dir != m && !strings.HasPrefix(dir, m+"/") {
				continue
			}
			rel := dir
			if m != "." {
				rel = strings.TrimPrefix(strings.TrimPrefix(dir, m), "/")
			}
			pat := "./" + rel
			switch {
			case rel == "" || rel == ".":
				pat = "."
				if all {
					pat = "./..."
				}
			case all:
				pat += "/..."
			}
			out[m] = append(out[m], pat)
			break
		}
	}
	if len(patterns) == 0 {
		for _, m := range mods {
			out[m] = []string{"./..."}
		}
	}
	return out, nil
}

// runJob runs one go test -json command, feeds its events to r and returns
// the failed runs they reported: the test's name each time one failed, or
// "(package)".
func runJob(ctx context.Context, root string, j job, o options, r *report) ([]string, error) {
	args := []string{"test", "-json", fmt.Sprintf("-count=%d", j.count), "-timeout", o.timeout.String()}
	if j.race {
		args = append(args, "-race")
	}
	if o.run != "" {
		args = append(args, "-run", o.run)
	}
	args = append(args, j.pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Join(root, j.module)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	failed := r.consume(stdout, j.race)
	err = cmd.Wait()
	if err != nil && len(failed) == 0 {
		// go test failed without a failing test or package in its
		// output: a setup or build error outside the JSON stream.
		return nil, fmt.Errorf("go %s in %s: %v\n%s", strings.Join(args, " "), j.module, err, stderr.String())
	}
	return failed, nil
}

// event is a line of go test -json (test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // build events
	Test       string
	Output     string
}

// key names a test in one mode; Test is "" for the package itself.
type key struct {
	pkg, test string
	race      bool
}

type result struct {
	runs, fails int
	first       []string // the last output lines of the first failure
}

type report struct {
	mu       sync.Mutex
	packages map[string]bool // every package seen
	results  map[key]*result
	running  map[key][]string // the last output lines of the run in progress
}

func newReport() *report {
	return &report{packages: map[string]bool{}, results: map[key]*result{}, running: map[key][]string{}}
}

// maxLines is how many of the last output lines of a failure are kept.
const maxLines = 60

// consume records the events of one go test -json stream and returns its
// fail events: the test's name, or "(package)".
func (r *report) consume(rd io.Reader, race bool) []string {
	var failed []string
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue
		}
		pkg := e.Package
		if pkg == "" {
			pkg = e.ImportPath
		}
		k := key{pkg: pkg, test: e.Test, race: race}
		r.mu.Lock()
		if pkg != "" {
			r.packages[pkg] = true
		}
		switch e.Action {
		case "run":
			r.running[k] = nil
		case "output", "build-output":
			lines := r.running[k]
			if len(lines) == maxLines {
				lines = append(lines[:0], lines[1:]...)
			}
			r.running[k] = append(lines, strings.TrimRight(e.Output, "\n"))
		case "pass", "skip":
			if e.Test != "" {
				r.get(k).runs++
			}
			delete(r.running, k)
		case "fail", "build-fail":
			if e.Test != "" {
				failed = append(failed, e.Test)
			} else {
				failed = append(failed, "(package)")
			}
			res := r.get(k)
			res.runs++
			res.fails++
			if res.first == nil {
				res.first = r.running[k]
				if e.Test == "" {
					// A test binary that crashed or was killed ends
					// its package with no failing test: what it
					// said (a panic in another goroutine, "signal:
					// killed") is in the output of the tests it was
					// running, which never ended.
					res.first = append(r.unfinished(pkg, race), res.first...)
				}
				if len(res.first) == 0 {
					res.first = []string{"(no output)"}
				}
			}
			delete(r.running, k)
		}
		r.mu.Unlock()
	}
	return failed
}

// unfinished returns, and forgets, the output of pkg's tests that started
// in this mode and neither passed nor failed, each line after its test's
// name. Callers hold mu.
func (r *report) unfinished(pkg string, race bool) []string {
	var out []string
	for k, lines := range r.running {
		if k.pkg != pkg || k.race != race || k.test == "" {
			continue
		}
		out = append(out, "(unfinished "+k.test+")")
		out = append(out, lines...)
		delete(r.running, k)
	}
	return out
}

func (r *report) get(k key) *result {
	res := r.results[k]
	if res == nil {
		res = &result{}
		r.results[k] = res
	}
	return res
}

// packageFailure records a go test command that failed outside its tests.
func (r *report) packageFailure(pkg string, race bool, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.get(key{pkg: pkg + " (go test)", race: race})
	res.runs++
	res.fails++
	res.first = strings.Split(strings.TrimRight(msg, "\n"), "\n")
}

// failures counts the failed runs worth reporting.
func (r *report) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, k := range r.failedLocked() {
		n += r.results[k].fails
	}
	return n
}

// failedLocked returns the failures worth reporting, sorted: every failing
// test, and a failing package only when none of its tests failed in that
// mode (a build error, a panic outside a test, a timeout).
func (r *report) failedLocked() []key {
	testFailed := map[key]bool{}
	for k, res := range r.results {
		if k.test != "" && res.fails > 0 {
			testFailed[key{pkg: k.pkg, race: k.race}] = true
		}
	}
	var failed []key
	for k, res := range r.results {
		if res.fails > 0 && (k.test != "" || !testFailed[k]) {
			failed = append(failed, k)
		}
	}
	slices.SortFunc(failed, func(a, b key) int {
		if c := strings.Compare(a.pkg, b.pkg); c != 0 {
			return c
		}
		if a.race != b.race {
			if a.race {
				return 1
			}
			return -1
		}
		return strings.Compare(a.test, b.test)
	})
	return failed
}

func (r *report) print(w io.Writer, count int, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	failed := r.failedLocked()
	fmt.Fprintf(w, "\nstress: %d packages, -count=%d per mode, in %v\n", len(r.packages), count, took.Round(time.Second))
	if len(failed) == 0 {
		fmt.Fprintln(w, "stress: no failure")
		return
	}
	fmt.Fprintln(w, "stress: FAILURES (package, mode, test: failed runs / runs)")
	for _, k := range failed {
		res := r.results[k]
		test := k.test
		if test == "" {
			test = "(package: build, panic or timeout)"
		}
		fmt.Fprintf(w, "  %s  %s  %s: %d/%d\n", k.pkg, modeName(k.race), test, res.fails, res.runs)
	}
	fmt.Fprintln(w, "\nstress: first failure of each:")
	for _, k := range failed {
		fmt.Fprintf(w, "--- %s %s %s\n", k.pkg, modeName(k.race), k.test)
		for _, l := range r.results[k].first {
			fmt.Fprintln(w, "    "+l)
		}
	}
}

// startHog keeps n cores busy until the returned function is called.
func startHog(n int) func() {
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := uint64(1)
			for !stop.Load() {
				for range 1 << 16 {
					x = x*6364136223846793005 + 1442695040888963407
				}
			}
			sink.Add(x)
		}()
	}
	return func() {
		stop.Store(true)
		wg.Wait()
	}
}

var sink atomic.Uint64
