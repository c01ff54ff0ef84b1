package idempotencytest

// A test of exactly-once across processes killed at the dangerous points of a
// run, which a shared store's tests run against a real server.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/idempotency"
)

// Crash points that RunCrashes kills workers at. An Op calls its hook with
// each point it reaches, in this order: PointBeforeWrite once the key is
// claimed and before the business write, PointAfterWrite once the business
// write is done (committed, or still in the transaction that completes the
// key) and before the key is completed, and, where the Op completes the key
// in its own transaction, PointAfterComplete before that transaction
// commits.
const (
	PointBeforeWrite   = "before-write"
	PointAfterWrite    = "after-write"
	PointAfterComplete = "after-complete"
)

// Op is the business operation of a crash test, run by the Engine of a
// worker process under the claim of key: it writes the business row of key
// and returns the result its client gets (an order's id, say). It calls
// hook with each crash point it reaches; the worker may die there.
type Op func(ctx context.Context, key string, hook func(point string)) (string, error)

// Kill is one planned death of a worker process: the first time one of its
// runs of a key numbered From or more (keys are numbered from 0, in the order
// the workers send them) reaches Point, after waiting Delay (0 for at once),
// the worker kills itself with SIGKILL (os.Process.Kill). A Delay of more than
// half the lease at PointBeforeWrite kills a run that its Engine has renewed.
type Kill struct {
	Point string
	From  int
	Delay time.Duration
}

// CrashConfig configures RunCrashes.
type CrashConfig struct {
	// Keys is the number of distinct keys. If zero, 1000.
	Keys int
	// Workers is the number of worker processes that run at once, each
	// sending every key, in the same order, from Clients goroutines, so
	// that each key has Workers concurrent duplicates. If zero, 3.
	Workers int
	// Clients is the number of goroutines of each worker. If zero, 16.
	Clients int
	// Lease is the lease of the workers' Engines. If zero, 2 seconds.
	Lease time.Duration
	// Kills are the deaths to cause, in order: the first Workers go to the
	// first workers; each worker that dies is replaced by a new one with
	// the next Kill, or none once they are all used. If nil, each of a
	// kill at PointBeforeWrite (in the middle of a run), at
	// PointAfterWrite (after the business write, before the completion)
	// and at PointBeforeWrite past half the lease, twice over.
	Kills []Kill
	// Start prepares the business table, in the test's process, and
	// returns a string handed to every worker and to Rows: a schema or a
	// key prefix, say.
	Start func(t *testing.T) string
	// Worker runs in each worker process, and in the test's process for its
	// final checks: it returns the Store of the worker's Engine and the
	// business operation. It may register cleanups on t.
	Worker func(t *testing.T, env string) (idempotency.Store, Op)
	// Rows returns the number of rows in the business table, and the
	// result of each key that has one (the same as its Op returns).
	Rows func(t *testing.T, env string) (rows int, results map[string]string)
}

// crashWorkerEnv names the environment variable that makes a test process a
// worker of RunCrashes, with its workerSpec as JSON.
const crashWorkerEnv = "BULWARK_IDEMPOTENCYTEST_CRASH_WORKER"

type workerSpec struct {
	ID      int
	Env     string
	Kill    *Kill
	Results string // the file of its clients' successes, one "key\tresult" a line
}

// RunCrashes checks exactly-once when processes die at the dangerous points
// of their runs. It starts worker processes, each a new run of the calling
// test's binary with only the calling test selected (so the test must call
// RunCrashes before anything a worker should not do), that send every key of
// cfg.Keys through an Engine over the Store that cfg.Worker returns, retrying
// each key until it succeeds; each worker kills itself once, at the crash
// point its Kill names, and a new worker replaces it. Once the workers are
// done, RunCrashes checks that:
//
//   - every kind of planned kill happened at least once: each crash point,
//     and a kill past half the lease (a later worker may find the keys of
//     its range all done by the others, and finish without its kill);
//   - the business table has exactly one row per key (cfg.Rows);
//   - every client that got a result for a key got that key's row's
//     result, so all of a key's clients saw the same;
//   - no key is left unusable: a duplicate of each key, sent once the
//     workers are gone, gets the stored result replayed, within a lease,
//     without running the Op again.
//
// Workers record their clients' successes in files as they go, so that a
// killed worker's results count too.
func RunCrashes(t *testing.T, cfg CrashConfig) {
	t.Helper()
	if cfg.Keys == 0 {
		cfg.Keys = 1000
	}
	if cfg.Workers == 0 {
		cfg.Workers = 3
	}
	if cfg.Clients == 0 {
		cfg.Clients = 16
	}
	if cfg.Lease == 0 {
		cfg.Lease = 2 * time.Second
	}
	if cfg.Kills == nil {
		past := cfg.Lease * 3 / 5
		cfg.Kills = []Kill{
			{PointBeforeWrite, 50, 0}, {PointAfterWrite, 100, 0}, {PointBeforeWrite, 150, past},
			{PointBeforeWrite, 300, 0}, {PointAfterWrite, 400, 0}, {PointBeforeWrite, 500, past},
		}
	}
	if spec := os.Getenv(crashWorkerEnv); spec != "" {
		var w workerSpec
		if err := json.Unmarshal([]byte(spec), &w); err != nil {
			t.Fatalf("crash worker: bad %s: %v", crashWorkerEnv, err)
		}
		runCrashWorker(t, cfg, w)
		return
	}
	if cfg.Start == nil || cfg.Worker == nil || cfg.Rows == nil {
		t.Fatal("RunCrashes: CrashConfig.Start, Worker and Rows must be set")
	}
	env := cfg.Start(t)
	dir := t.TempDir()

	type exit struct {
		spec workerSpec
		err  error
		out  []byte
	}
	exits := make(chan exit)
	pattern := runPattern(t.Name())
	start := func(spec workerSpec) {
		js, _ := json.Marshal(spec)
		go func() {
			cmd := exec.Command(os.Args[0], "-test.run="+pattern, "-test.count=1", "-test.timeout=5m")
			cmd.Env = append(os.Environ(), crashWorkerEnv+"="+string(js))
			out, err := cmd.CombinedOutput()
			exits <- exit{spec, err, out}
		}()
	}
	kills := cfg.Kills
	next := 0
	spawn := func() {
		spec := workerSpec{ID: next, Env: env, Results: filepath.Join(dir, fmt.Sprintf("worker-%d", next))}
		if next < len(kills) {
			spec.Kill = &kills[next]
		}
		next++
		start(spec)
	}
	began := time.Now()
	for range cfg.Workers {
		spawn()
	}
	// A kill's kind is its point, and whether it waits past half the lease.
	// Every kind planned must happen at least once; a later worker that
	// finds every key of its range already done by the others (a loaded
	// machine orders them differently) may finish without its kill.
	type kind struct {
		point string
		past  bool
	}
	kindOf := func(k Kill) kind { return kind{k.Point, k.Delay > cfg.Lease/2} }
	happened := map[kind]int{}
	var missed []string
	running, finished, died := cfg.Workers, 0, 0
	var failed []string
	for running > 0 {
		x := <-exits
		running--
		killed := hasKillMark(x.spec.Results)
		switch {
		case killed && x.err != nil:
			died++
			happened[kindOf(*x.spec.Kill)]++
			if len(failed) == 0 {
				spawn()
				running++
			}
		case x.err != nil:
			failed = append(failed, fmt.Sprintf("worker %d: %v\n%s", x.spec.ID, x.err, x.out))
		case x.spec.Kill != nil:
			missed = append(missed, fmt.Sprintf("worker %d finished without reaching its kill %+v", x.spec.ID, *x.spec.Kill))
			finished++
		default:
			finished++
		}
	}
	for _, k := range kills {
		if happened[kindOf(k)] == 0 {
			failed = append(failed, fmt.Sprintf("no worker was killed %s (past half the lease: %v): %s",
				k.Point, kindOf(k).past, strings.Join(missed, "; ")))
			happened[kindOf(k)] = -1 // reported once
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d workers failed:\n%s", len(failed), strings.Join(failed, "\n"))
	}
	t.Logf("%d keys, %d workers at once, %d killed, %d finished, in %v; %s",
		cfg.Keys, cfg.Workers, died, finished, time.Since(began).Round(time.Millisecond), strings.Join(missed, "; "))

	rows, results := cfg.Rows(t, env)
	if rows != cfg.Keys || len(results) != cfg.Keys {
		t.Errorf("business table: %d rows over %d keys, want exactly %d, one per key", rows, len(results), cfg.Keys)
	}
	seen := map[string]int{}
	for i := range next {
		f, err := os.Open(filepath.Join(dir, fmt.Sprintf("worker-%d", i)))
		if err != nil {
			t.Fatalf("results of worker %d: %v", i, err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			key, got, ok := strings.Cut(sc.Text(), "\t")
			if !ok || key == killMark {
				continue
			}
			seen[key]++
			if want, ok := results[key]; !ok || got != want {
				t.Errorf("a client of worker %d got %q for %s, want %q, the result of its business row", i, got, key, want)
			}
		}
		f.Close()
	}
	for i := range cfg.Keys {
		if key := crashKey(i); seen[key] == 0 {
			t.Errorf("no client got a result for %s", key)
		}
	}

	// No key is left unusable: every one replays its result.
	store, _ := cfg.Worker(t, env)
	e, err := idempotency.New(idempotency.Config{Store: store, Lease: cfg.Lease, Wait: 2 * cfg.Lease})
	if err != nil {
		t.Fatalf("idempotency.New: %v", err)
	}
	for i := range cfg.Keys {
		key := crashKey(i)
		got, err := idempotency.Do(context.Background(), e, key, []byte(key), func(context.Context) (string, error) {
			return "", errors.New("the operation ran again")
		})
		if err != nil || got != results[key] {
			t.Errorf("duplicate of %s after the workers = %q, %v; want %q replayed", key, got, err, results[key])
		}
	}
}

func crashKey(i int) string { return fmt.Sprintf("key-%05d", i) }

// killMark starts the line a worker writes to its results file just before it
// kills itself.
const killMark = "KILLED"

func hasKillMark(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), killMark+"\t")
}

// runPattern returns a -test.run pattern that selects exactly the test
// named name ("TestX/sub").
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// runCrashWorker is a worker process: it sends every key through its
// Engine until each succeeds, recording each success, and dies at its Kill.
func runCrashWorker(t *testing.T, cfg CrashConfig, w workerSpec) {
	store, op := cfg.Worker(t, w.Env)
	e, err := idempotency.New(idempotency.Config{Store: store, Lease: cfg.Lease, RetryAfter: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("idempotency.New: %v", err)
	}
	out, err := os.OpenFile(w.Results, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("results file: %v", err)
	}
	defer out.Close()
	record := func(key, result string) {
		// One write of a short line to a file opened for appending: whole
		// lines survive the process's death.
		if _, err := out.Write([]byte(key + "\t" + result + "\n")); err != nil {
			panic(err)
		}
	}
	var dying atomic.Bool
	hook := func(key int, point string) {
		k := w.Kill
		if k == nil || point != k.Point || key < k.From || !dying.CompareAndSwap(false, true) {
			return
		}
		if k.Delay > 0 {
			time.Sleep(k.Delay)
		}
		record(killMark, point)
		p, _ := os.FindProcess(os.Getpid())
		_ = p.Kill()
		select {} // dies here
	}
	keys := make(chan int)
	go func() {
		for i := range cfg.Keys {
			keys <- i
		}
		close(keys)
	}()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	for range cfg.Clients {
		wg.Go(func() {
			for i := range keys {
				key := crashKey(i)
				deadline := time.Now().Add(time.Minute)
				for {
					got, err := idempotency.Do(context.Background(), e, key, []byte(key), func(ctx context.Context) (string, error) {
						return op(ctx, key, func(point string) { hook(i, point) })
					})
					if err == nil {
						record(key, got)
						break
					}
					if time.Now().After(deadline) {
						mu.Lock()
						errs = append(errs, fmt.Sprintf("%s: %v", key, err))
						mu.Unlock()
						break
					}
					time.Sleep(20 * time.Millisecond) // in flight elsewhere, or a transient failure: retry
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d keys failed for a minute; first: %s", len(errs), errs[0])
	}
}
