// Command proxybench measures the example proxy as cmd/proxy ships it — its
// Observer and telemetry middleware on — beside a bare httputil.ReverseProxy
// and, where it is installed, HAProxy, on the same three loopback backends,
// with wrk (from Debian's package) as the load generator:
//
//	go run ./examples/proxy/cmd/proxybench -rounds 5 -duration 5s
//
// The backends run in a child process, so that the CPU time of this process
// is the proxies' own. wrk hits the targets in turn, round after round, each
// round starting one target further on. Printed are the load average before
// and after, and the medians of: the requests per second; each round's ratio
// to the bare ReverseProxy's (the load of a shared machine drifts less within
// a round than across the run); the proxy's CPU time per request; the CPU
// time per request of the proxy, the backends and wrk together; and each
// round's ratio of bare's total to the target's, an estimate of the ratio of
// requests per second on a machine that nothing else loads, which the other
// work of a shared machine moves less than it moves the requests per second;
// and the heap allocations per request of the Go proxies. The targets:
//
//   - bare: httputil.ReverseProxy round-robin over the backends, with a
//     BufferPool, and nothing else;
//   - shipped: the proxy as cmd/proxy runs it with its default flags:
//     least-request, health checks, outlier detection, breakers, retries,
//     the telemetry Observer (metrics and logs) and Middleware (the HTTP
//     server metrics, and spans as the OTEL_* environment says: by default
//     not recorded), its /metrics scraped every 10 s;
//   - no-telemetry: the same proxy without its Observer and middleware, to
//     tell the proxy's own cost from the telemetry's;
//   - haproxy: HAProxy round-robin with connection reuse, when the haproxy
//     binary is found (apt-get install haproxy); skipped with a message
//     otherwise.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/examples/internal/telemetry"
	"github.com/bulwark-go/bulwark/examples/proxy"
)

func main() {
	rounds := flag.Int("rounds", 5, "rounds of wrk against each target, in turn")
	duration := flag.Duration("duration", 5*time.Second, "length of each wrk run")
	conns := flag.Int("connections", 64, "wrk connections")
	threads := flag.Int("threads", 1, "wrk threads")
	only := flag.String("targets", "bare,shipped,no-telemetry,haproxy", "targets to measure, comma-separated")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process (the Go proxies) to this file")
	backends := flag.Bool("backends", false, "serve the three backends and print their addresses (the child process)")
	flag.Parse()
	if *rounds < 1 || *duration < time.Second || *conns < 1 || *threads < 1 {
		fmt.Fprintln(os.Stderr, "proxybench: -rounds, -connections and -threads must be at least 1, -duration at least 1s")
		os.Exit(2)
	}
	var err error
	if *backends {
		err = serveBackends()
	} else {
		if *cpuprofile != "" {
			f, ferr := os.Create(*cpuprofile)
			if ferr != nil {
				fmt.Fprintln(os.Stderr, "proxybench:", ferr)
				os.Exit(1)
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				fmt.Fprintln(os.Stderr, "proxybench:", err)
				os.Exit(1)
			}
		}
		err = run(*rounds, *duration, *conns, *threads, strings.Split(*only, ","))
		pprof.StopCPUProfile()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

// serveBackends serves three backends until stdin closes, and prints their
// addresses on one line.
func serveBackends() error {
	var addrs []string
	for range 3 {
		addr, _, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hello from the backend\n")
		}))
		if err != nil {
			return err
		}
		addrs = append(addrs, addr)
	}
	fmt.Println(strings.Join(addrs, ","))
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

func serve(h http.Handler) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return l.Addr().String(), func() { _ = srv.Close() }, nil
}

// target is one proxy under test.
type target struct {
	name string
	addr string
	cpu  func() time.Duration // CPU time used so far by the process serving it
	inGo bool                 // served by this process: its allocations are counted
}

func run(rounds int, d time.Duration, conns, threads int, only []string) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return fmt.Errorf("wrk not found (apt-get install wrk): %w", err)
	}
	addrs, backendsCPU, stopBackends, err := startBackends()
	if err != nil {
		return err
	}
	defer stopBackends()
	var eps []bulwark.Endpoint
	var urls []*url.URL
	for _, a := range addrs {
		eps = append(eps, bulwark.Endpoint{Addr: a})
		urls = append(urls, &url.URL{Scheme: "http", Host: a})
	}

	var targets []target
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	add := func(name string, h http.Handler) error {
		if !slices.Contains(only, name) {
			return nil
		}
		addr, stop, err := serve(h)
		if err != nil {
			return err
		}
		stops = append(stops, stop)
		targets = append(targets, target{name: name, addr: addr, cpu: selfCPU, inGo: true})
		return nil
	}

	// bare: the ReverseProxy alone, with the same upstream transport
	// settings as the proxy's default one.
	var rr atomic.Uint64
	bare := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(urls[rr.Add(1)%uint64(len(urls))])
			r.SetXForwarded()
		},
		Transport: &http.Transport{
			MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
		},
		BufferPool: bufferPool{},
		ErrorLog:   log.New(io.Discard, "", 0), // wrk's closing connections cancel requests
	}
	if err := add("bare", bare); err != nil {
		return err
	}

	// shipped: as cmd/proxy builds it, with its default flags; logs go
	// nowhere, but are formatted as they would be.
	tel, err := telemetry.New("proxy", io.Discard, slog.LevelInfo)
	if err != nil {
		return err
	}
	defer tel.Close(context.Background())
	shipped, err := proxy.New(proxy.Config{
		Backends: eps, Algorithm: balancer.LeastRequest, CheckPath: "/readyz", CheckInterval: time.Second, MaxAttempts: 3,
		Observer: tel.Observer, Logger: tel.Logger,
	})
	if err != nil {
		return err
	}
	// As cmd/proxy's withMetrics wires it: /metrics, and the rest through
	// Middleware to the proxy.
	metrics, proxied := tel.MetricsHandler(), tel.Middleware(shipped.Handler())
	if err := add("shipped", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			metrics.ServeHTTP(w, r)
			return
		}
		proxied.ServeHTTP(w, r)
	})); err != nil {
		return err
	}
	if i := slices.IndexFunc(targets, func(t target) bool { return t.name == "shipped" }); i >= 0 {
		// Scraped as Prometheus would scrape it: the collections are part
		// of what the telemetry costs, and after the first one otelbulwark
		// holds counts between them.
		stop := scrapeEvery(10*time.Second, "http://"+targets[i].addr+"/metrics")
		defer stop()
	}

	// no-telemetry: the same proxy, bare of telemetry.
	plain, err := proxy.New(proxy.Config{
		Backends: eps, Algorithm: balancer.LeastRequest, CheckPath: "/readyz", CheckInterval: time.Second, MaxAttempts: 3,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	if err := add("no-telemetry", plain.Handler()); err != nil {
		return err
	}
	for _, p := range []*proxy.Proxy{shipped, plain} {
		if err := p.Start(context.Background()); err != nil {
			return err
		}
		defer p.Close()
	}

	if slices.Contains(only, "haproxy") {
		if hp, stop, err := startHAProxy(addrs); err != nil {
			fmt.Println("haproxy: skipped:", err)
		} else {
			defer stop()
			targets = append(targets, hp)
		}
	}
	if len(targets) == 0 {
		return fmt.Errorf("no target among %q", only)
	}

	type result struct{ rps, ofBare, cpuPerReq, allPerReq, ofBareCPU, allocsPerReq []float64 }
	results := map[string]*result{}
	for _, t := range targets {
		results[t.name] = &result{}
	}
	fmt.Printf("load average %s\n", loadAverage())
	for r := 0; r < rounds; r++ {
		// Each round starts one target further on, so that no target
		// always follows the same one or runs at the same point of a
		// round while the load of the machine drifts.
		rps, all := map[string]float64{}, map[string]float64{}
		for i := range targets {
			t := targets[(r+i)%len(targets)]
			before, beforeBackends, beforeAllocs := t.cpu(), backendsCPU(), mallocs()
			x, n, wrkCPU, err := wrk(t.addr, d, conns, threads)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			proxyCPU, allocs := t.cpu()-before, mallocs()-beforeAllocs
			perReq := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
			res := results[t.name]
			res.rps = append(res.rps, x)
			res.cpuPerReq = append(res.cpuPerReq, perReq(proxyCPU))
			res.allPerReq = append(res.allPerReq, perReq(proxyCPU+backendsCPU()-beforeBackends+wrkCPU))
			if t.inGo {
				res.allocsPerReq = append(res.allocsPerReq, float64(allocs)/float64(n))
			}
			rps[t.name], all[t.name] = x, perReq(proxyCPU+backendsCPU()-beforeBackends+wrkCPU)
			fmt.Printf("round %d  %-13s %8.0f req/s  %5.1f µs CPU/req, %5.1f with backends and wrk\n",
				r+1, t.name, x, perReq(proxyCPU), all[t.name])
		}
		for name := range rps {
			if rps["bare"] > 0 {
				results[name].ofBare = append(results[name].ofBare, rps[name]/rps["bare"])
			}
			if all["bare"] > 0 && all[name] > 0 {
				results[name].ofBareCPU = append(results[name].ofBareCPU, all["bare"]/all[name])
			}
		}
	}
	fmt.Printf("load average %s\n", loadAverage())
	fmt.Printf("\nmedians of %d rounds of %v, %d connections, %d wrk thread(s):\n", rounds, d, conns, threads)
	fmt.Printf("  %-13s %8s  %7s  %7s  %7s  %7s  %7s\n", "target", "req/s", "of bare", "µs CPU", "µs all", "by CPU", "allocs")
	for _, t := range targets {
		res := results[t.name]
		fmt.Printf("  %-13s %8.0f  %7s  %7.1f  %7.1f  %7s  %7s\n", t.name, median(res.rps), percent(res.ofBare),
			median(res.cpuPerReq), median(res.allPerReq), percent(res.ofBareCPU), number(res.allocsPerReq))
	}
	fmt.Println(`
of bare: the median of each round's ratio to bare's req/s (measured in the
same round); µs CPU: the proxy's CPU time per request; µs all: with the
backends' and wrk's; by CPU: the median of each round's ratio of bare's
"µs all" to the target's, an estimate of the ratio of req/s on a machine
that nothing else loads; allocs: heap allocations per request in this
process (the Go proxies).`)
	return nil
}

// loadAverage returns the 1, 5 and 15 minute load averages, from
// /proc/loadavg, or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// scrapeEvery gets url now and then every interval until stop is called.
func scrapeEvery(interval time.Duration, url string) (stop func()) {
	get := func() {
		resp, err := http.Get(url)
		if err != nil {
			fmt.Fprintln(os.Stderr, "proxybench: scrape:", err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				get()
			case <-done:
				return
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// mallocs returns the number of heap objects this process has allocated.
func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

// bufferPool is an httputil.BufferPool of 32 KiB buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// startBackends runs this program again with -backends and reads the
// addresses it serves. cpu returns the CPU time the backends have used.
func startBackends() (addrs []string, cpu func() time.Duration, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := exec.Command(self, "-backends")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	stop = func() {
		stdin.Close()
		_ = cmd.Wait()
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return nil, nil, nil, fmt.Errorf("backends: %w", err)
	}
	pid := cmd.Process.Pid
	return strings.Split(strings.TrimSpace(line), ","), func() time.Duration { return procCPU(pid) }, stop, nil
}

// startHAProxy runs haproxy in the foreground, round-robin over addrs with
// idle connections to them reused.
func startHAProxy(addrs []string) (target, func(), error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return target{}, nil, errors.New("haproxy not found (apt-get install haproxy)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return target{}, nil, err
	}
	addr := l.Addr().String()
	l.Close()
	dir, err := os.MkdirTemp("", "proxybench")
	if err != nil {
		return target{}, nil, err
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `global
	maxconn 4096
defaults
	mode http
	option http-keep-alive
	http-reuse always
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend proxybench
	bind %s
	default_backend backends
backend backends
	balance roundrobin
`, addr)
	for i, a := range addrs {
		fmt.Fprintf(&cfg, "\tserver b%d %s\n", i, a)
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		return target{}, nil, err
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return target{}, nil, err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		os.RemoveAll(dir)
	}
	// Wait for it to listen.
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			return target{}, nil, fmt.Errorf("haproxy did not listen on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pid := cmd.Process.Pid
	return target{name: "haproxy", addr: addr, cpu: func() time.Duration { return procCPU(pid) }}, stop, nil
}

// procCPU returns the CPU time process pid has used, from /proc.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses: utime
	// and stime are the 14th and 15th fields, in clock ticks (100 a second).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

var (
	reqPerSec = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	requests  = regexp.MustCompile(`(\d+) requests in`)
	errorsRe  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)|Socket errors: .*`)
)

// wrk runs wrk against addr and returns its requests per second, the
// number of requests and the CPU time wrk used.
func wrk(addr string, d time.Duration, conns, threads int) (float64, int64, time.Duration, error) {
	cmd := exec.Command("wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(int(d.Seconds()))+"s", "http://"+addr+"/item")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("wrk: %v: %s", err, out)
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if m := errorsRe.Find(out); m != nil {
		return 0, 0, 0, fmt.Errorf("wrk saw errors: %s", m)
	}
	m, n := reqPerSec.FindSubmatch(out), requests.FindSubmatch(out)
	if m == nil || n == nil {
		return 0, 0, 0, fmt.Errorf("wrk printed no Requests/sec: %s", out)
	}
	rps, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return 0, 0, 0, err
	}
	total, err := strconv.ParseInt(string(n[1]), 10, 64)
	if err == nil && total == 0 {
		err = errors.New("wrk made no request")
	}
	return rps, total, cpu, err
}

// percent formats the median of the ratios xs as a percentage, "-" if there
// are none.
func percent(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*median(xs))
}

// number formats the median of xs, "-" if it is empty.
func number(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", median(xs))
}

// median returns the median of xs, NaN if it is empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
