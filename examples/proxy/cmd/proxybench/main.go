// Command proxybench compares the example proxy's throughput with a bare
// httputil.ReverseProxy on the same three loopback backends, using wrk (from
// Debian's package) as the load generator in a separate process:
//
//	go run ./examples/proxy/cmd/proxybench -rounds 5 -duration 5s
//
// Both proxies run in this process; wrk hits them in alternation, round
// after round, and the medians and their ratio are printed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/examples/proxy"
)

func main() {
	rounds := flag.Int("rounds", 5, "alternating rounds of wrk against each proxy")
	duration := flag.Duration("duration", 5*time.Second, "length of each wrk run")
	conns := flag.Int("connections", 64, "wrk connections")
	threads := flag.Int("threads", 1, "wrk threads")
	flag.Parse()
	if err := run(*rounds, *duration, *conns, *threads); err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
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

func run(rounds int, d time.Duration, conns, threads int) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return fmt.Errorf("wrk not found (apt-get install wrk): %w", err)
	}
	var eps []bulwark.Endpoint
	var urls []*url.URL
	for range 3 {
		addr, stop, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "hello from the backend\n")
		}))
		if err != nil {
			return err
		}
		defer stop()
		eps = append(eps, bulwark.Endpoint{Addr: addr})
		urls = append(urls, &url.URL{Scheme: "http", Host: addr})
	}
	upstream := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute}
	var rr atomic.Uint64
	bare := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(urls[rr.Add(1)%uint64(len(urls))])
			r.SetXForwarded()
		},
		Transport: upstream,
		ErrorLog:  log.New(io.Discard, "", 0), // wrk's closing connections cancel requests
	}
	p, err := proxy.New(proxy.Config{
		Backends: eps, Algorithm: balancer.RoundRobin, Transport: upstream,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	if err := p.Start(context.Background()); err != nil {
		return err
	}
	defer p.Close()
	bareAddr, stopBare, err := serve(bare)
	if err != nil {
		return err
	}
	defer stopBare()
	bwAddr, stopBw, err := serve(p.Handler())
	if err != nil {
		return err
	}
	defer stopBw()

	results := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for _, target := range []struct{ name, addr string }{{"bare", bareAddr}, {"bulwark", bwAddr}} {
			rps, err := wrk(target.addr, d, conns, threads)
			if err != nil {
				return err
			}
			results[target.name] = append(results[target.name], rps)
			fmt.Printf("round %d  %-8s %9.0f req/s\n", r+1, target.name, rps)
		}
	}
	b, w := median(results["bare"]), median(results["bulwark"])
	fmt.Printf("\nmedian req/s: bare httputil.ReverseProxy %.0f, bulwark proxy %.0f: %.1f %% of bare\n", b, w, 100*w/b)
	return nil
}

var reqPerSec = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

func wrk(addr string, d time.Duration, conns, threads int) (float64, error) {
	out, err := exec.Command("wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(int(d.Seconds()))+"s", "http://"+addr+"/item").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %v: %s", err, out)
	}
	m := reqPerSec.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("wrk printed no Requests/sec: %s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
