package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/examples/orderservice"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"
)

// asProcess is the environment variable that makes the test binary run the
// command instead of the tests: the tests start instances of the order
// service as real OS processes by running their own binary again.
const asProcess = "ORDERSERVICE_TEST_AS_PROCESS"

func TestMain(m *testing.M) {
	if os.Getenv(asProcess) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		err := run(ctx, os.Args[1:], os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "orderservice:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

const testKey = "process-test-key-0123456789"

// instance is an order service running in its own process.
type instance struct {
	name   string
	addr   string
	cmd    *exec.Cmd
	logs   bytes.Buffer  // guarded by mu
	mu     sync.Mutex    // guards logs
	served chan struct{} // closed when the instance logs that it serves
	exited chan struct{} // closed when the process has exited and its output is read
	err    error         // Wait's error; read after exited
}

// freeAddr returns a loopback address that nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs an instance with the flags args and -listen on a free address.
func start(t *testing.T, name string, args ...string) *instance {
	t.Helper()
	in := &instance{name: name, addr: freeAddr(t), served: make(chan struct{}), exited: make(chan struct{})}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in.cmd = exec.Command(exe, append([]string{"-listen", in.addr, "-name", name}, args...)...)
	// A binary built with -race sleeps a second at exit by default.
	in.cmd.Env = append(os.Environ(), asProcess+"=1", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	stderr, err := in.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		served := false
		for sc.Scan() {
			line := sc.Text()
			in.mu.Lock()
			in.logs.WriteString(line + "\n")
			in.mu.Unlock()
			if !served && strings.Contains(line, `"msg":"order service serving"`) {
				served = true
				close(in.served)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		in.err = in.cmd.Wait()
		close(in.exited)
	}()
	t.Cleanup(func() {
		_ = in.cmd.Process.Kill()
		<-in.exited
	})
	return in
}

func (in *instance) output() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.logs.String()
}

// waitServing waits until the instance serves, and fails the test if it
// exits first.
func (in *instance) waitServing(t *testing.T) {
	t.Helper()
	select {
	case <-in.served:
	case <-in.exited:
		t.Fatalf("%s exited before serving (%v):\n%s", in.name, in.err, in.output())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not serve within a minute:\n%s", in.name, in.output())
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	if err := in.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-in.exited
	if in.err != nil {
		t.Errorf("%s exited with %v:\n%s", in.name, in.err, in.output())
	}
}

func (in *instance) url() string { return "http://" + in.addr }

// create posts an order under key and returns the status, 0 for a
// transport error.
func create(client *http.Client, base, key string) int {
	req, _ := http.NewRequest(http.MethodPost, base+"/orders",
		strings.NewReader(`{"customer":"cus-`+key+`","currency":"EUR","items":[{"sku":"a","quantity":1,"price_cents":100}]}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func pgURL(t *testing.T) string {
	t.Helper()
	url := os.Getenv("BULWARK_POSTGRES_URL")
	if url == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("BULWARK_POSTGRES_URL is not set, and CI needs the PostgreSQL tests")
		}
		t.Skip("BULWARK_POSTGRES_URL is not set: skipping the multi-process tests")
	}
	return url
}

func redisAddr(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("BULWARK_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("BULWARK_REDIS_ADDR is not set, and CI needs the Redis tests")
		}
		t.Skip("BULWARK_REDIS_ADDR is not set: skipping the Redis variant")
	}
	return addr
}

// TestRestartsUnderLoadCauseNo5xx is issue 14's check that migrations never
// fight live traffic: two instances, started together on an empty database
// (so that they migrate at the same time), serve a stream of creates while a
// third instance is started and stopped 20 times, each time migrating the
// orders in PostgreSQL, and the idempotency keys too when they are there. No
// request may fail with a 5xx or a broken connection, every start must serve
// and every stop exit cleanly, and each key must make exactly one order.
func TestRestartsUnderLoadCauseNo5xx(t *testing.T) {
	t.Run("keys in redis", func(t *testing.T) {
		restartsUnderLoad(t, func(suffix string) []string {
			return []string{"-idempotency", "redis", "-redis", redisAddr(t), "-redis-prefix", "orders-proc-" + suffix + ":"}
		})
	})
	t.Run("keys in postgres", func(t *testing.T) {
		restartsUnderLoad(t, func(suffix string) []string {
			return []string{"-idempotency", "postgres", "-idempotency-table", "idem_proc_" + suffix}
		})
	})
}

func restartsUnderLoad(t *testing.T, keyStore func(suffix string) []string) {
	url := pgURL(t)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close) // after the cleanup below, which needs it
	suffix := fmt.Sprint(time.Now().UnixNano())
	orders, keys := "orders_proc_"+suffix, "idem_proc_"+suffix // keys is used by the PostgreSQL key store only
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), fmt.Sprintf(
			"DROP TABLE IF EXISTS %[1]s, %[1]s_migrations, %[2]s, %[2]s_version CASCADE; DROP SEQUENCE IF EXISTS %[1]s_seq, %[2]s_token_seq", orders, keys))
	})
	args := append([]string{"-postgres", url, "-table", orders, "-api-key", "acme=" + testKey, "-drain-delay", "0s"}, keyStore(suffix)...)

	a, b := start(t, "orders-a", args...), start(t, "orders-b", args...)
	a.waitServing(t)
	b.waitServing(t)

	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	ctx, stopLoad := context.WithCancel(context.Background())
	var sent, bad atomic.Int64
	var mu sync.Mutex // guards failures and created
	var failures []string
	created := map[string]bool{}
	record := func(key, where string, code int) {
		sent.Add(1)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case code == http.StatusCreated:
			created[key] = true
		case code == 0 || code >= 500:
			bad.Add(1)
			if len(failures) < 5 {
				failures = append(failures, fmt.Sprintf("create %s on %s: %d", key, where, code))
			}
		}
	}
	// Four clients, each sending a create every 10 ms at most: a steady
	// stream that leaves the machine the cores to start instances.
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ctx.Err() == nil; n++ {
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
				in := []*instance{a, b}[n%2]
				key := fmt.Sprintf("w%d-%d", w, n/2) // each key twice, once on each instance
				record(key, in.name, create(client, in.url(), key))
			}
		}()
	}

	for i := 0; i < 20; i++ {
		c := start(t, fmt.Sprintf("orders-c%d", i), args...)
		c.waitServing(t)
		key := fmt.Sprintf("c-%d", i)
		record(key, c.name, create(client, c.url(), key))
		c.stop(t)
	}
	stopLoad()
	wg.Wait()
	a.stop(t)
	b.stop(t)

	if n := bad.Load(); n > 0 {
		t.Errorf("%d of %d creates failed with a 5xx or a broken connection during 20 restarts: %s", n, sent.Load(), strings.Join(failures, "; "))
	}
	var count int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM "+orders).Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != len(created) {
		t.Errorf("%d orders for %d keys that got 201, want one each", count, len(created))
	}
	t.Logf("%d creates, %d keys, during 20 restarts", sent.Load(), len(created))
	for _, in := range []*instance{a, b} {
		if strings.Contains(in.output(), "40P01") {
			t.Errorf("%s logged a deadlock", in.name)
		}
	}
}

func TestAPIKeyFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	if err := os.WriteFile(file, []byte("# keys\n\nacme=acme-key-0123456789abc\nglobex=globex-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k := apiKeys{}
	if err := k.Set("acme=acme-key-2-0123456789"); err != nil {
		t.Fatal(err)
	}
	if err := k.readFile(file); err != nil {
		t.Fatal(err)
	}
	if len(k) != 3 || k["acme-key-0123456789abc"] != "acme" || k["globex-key-0123456789"] != "globex" {
		t.Errorf("keys = %v", k)
	}
	for _, bad := range []string{"acme", "=key-0123456789abcdef", "acme=short", "acme=has space 0123456789", "globex=acme-key-2-0123456789"} {
		if err := k.Set(bad); err == nil {
			t.Errorf("-api-key %q accepted, want an error", bad)
		}
	}
	if err := os.WriteFile(file, []byte("acme=tiny-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := apiKeys{}.readFile(file)
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("reading a bad key file = %v, want an error that does not repeat the line", err)
	}
}

func TestLimitFlag(t *testing.T) {
	for _, tc := range []struct {
		flag    string
		want    string // the type of the Acquirer, "" for none
		off     bool
		wantErr bool
	}{
		{flag: "adaptive", want: "*limit.Limiter"},
		{flag: "64", want: "*limit.Bulkhead"},
		{flag: "off", off: true},
		{flag: "0", wantErr: true},
		{flag: "many", wantErr: true},
	} {
		lim, off, err := limiter(tc.flag, "orders", orderservice.DefaultHeadroom, 0.5, nil)
		if (err != nil) != tc.wantErr {
			t.Errorf("-limit %q: error %v, want an error: %v", tc.flag, err, tc.wantErr)
			continue
		}
		got := ""
		if lim != nil {
			got = fmt.Sprintf("%T", lim)
		}
		if got != tc.want || off != tc.off {
			t.Errorf("-limit %q = %s, off %v; want %q, off %v", tc.flag, got, off, tc.want, tc.off)
		}
	}
	if _, _, err := limiter("adaptive", "orders", 0.7, 0.5, nil); err == nil {
		t.Errorf("-limit-headroom 0.7 accepted, want an error")
	}
}
