package healthcheck

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"

	"github.com/bulwark-go/bulwark"
)

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct {
	Min, Max int
}

// HTTPConfig configures an HTTP probe.
type HTTPConfig struct {
	// Path is requested on each endpoint. If empty, "/". It must start with
	// "/" and may carry a query.
	Path string
	// Method is the request method. If empty, GET.
	Method string
	// Scheme is "http" or "https". If empty, "http".
	Scheme string
	// Host is the Host header. If empty, the endpoint's Addr.
	Host string
	// Header is added to each request. It must not be modified after HTTP
	// returns.
	Header http.Header
	// Expected lists the status codes that pass. If empty, 200–299.
	// Redirects are not followed: a 3xx is judged as it is.
	Expected []StatusRange
	// Body, if not nil, must match the start of the response body (up to
	// MaxBodyBytes) for the probe to pass.
	Body *regexp.Regexp
	// MaxBodyBytes bounds how much of the body is read. If zero, 64 KiB.
	// Negative is an error.
	MaxBodyBytes int64
	// Transport sends the requests. If nil, http.DefaultTransport.
	Transport http.RoundTripper
}

// HTTP returns a Probe that sends one request to <Scheme>://<Addr><Path> and
// passes if the status is one of Expected and, if Body is set, the body
// matches. The probe's error names the endpoint and the reason. HTTP returns
// an error wrapping ErrInvalidConfig for a Path without a leading "/", a
// Method that is not a token, a Scheme other than http or https, a
// StatusRange outside 100–599 or with Min > Max, or a negative MaxBodyBytes.
func HTTP(cfg HTTPConfig) (Probe, error) {
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if !strings.HasPrefix(cfg.Path, "/") {
		return nil, invalid("HTTP probe path %q does not start with /", cfg.Path)
	}
	if cfg.Method == "" {
		cfg.Method = http.MethodGet
	}
	if strings.IndexFunc(cfg.Method, func(r rune) bool { return r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) }) >= 0 {
		return nil, invalid("HTTP probe method %q is not a token", cfg.Method)
	}
	switch cfg.Scheme {
	case "":
		cfg.Scheme = "http"
	case "http", "https":
	default:
		return nil, invalid("HTTP probe scheme %q is not http or https", cfg.Scheme)
	}
	if len(cfg.Expected) == 0 {
		cfg.Expected = []StatusRange{{200, 299}}
	} else {
		cfg.Expected = append([]StatusRange(nil), cfg.Expected...)
	}
	for _, r := range cfg.Expected {
		if r.Min < 100 || r.Max > 599 || r.Min > r.Max {
			return nil, invalid("HTTP probe status range %d–%d is not within 100–599", r.Min, r.Max)
		}
	}
	switch {
	case cfg.MaxBodyBytes < 0:
		return nil, invalid("HTTP probe MaxBodyBytes %d is negative", cfg.MaxBodyBytes)
	case cfg.MaxBodyBytes == 0:
		cfg.MaxBodyBytes = 64 << 10
	}
	rt := cfg.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	client := &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context, ep bulwark.Endpoint) error {
		url := cfg.Scheme + "://" + ep.Addr + cfg.Path
		req, err := http.NewRequestWithContext(ctx, cfg.Method, url, nil)
		if err != nil {
			return fmt.Errorf("healthcheck: %s %s: %w", cfg.Method, url, err)
		}
		for k, vs := range cfg.Header {
			req.Header[k] = vs
		}
		if cfg.Host != "" {
			req.Host = cfg.Host
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("healthcheck: %s %s: %w", cfg.Method, url, err)
		}
		defer resp.Body.Close()
		if !statusIn(resp.StatusCode, cfg.Expected) {
			io.Copy(io.Discard, io.LimitReader(resp.Body, cfg.MaxBodyBytes)) // keep the connection reusable
			return fmt.Errorf("healthcheck: %s %s: status %d, want %s", cfg.Method, url, resp.StatusCode, rangesString(cfg.Expected))
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, cfg.MaxBodyBytes))
		if err != nil {
			return fmt.Errorf("healthcheck: %s %s: reading body: %w", cfg.Method, url, err)
		}
		if cfg.Body != nil && !cfg.Body.Match(body) {
			return fmt.Errorf("healthcheck: %s %s: body does not match %q", cfg.Method, url, cfg.Body.String())
		}
		return nil
	}, nil
}

func statusIn(code int, rs []StatusRange) bool {
	for _, r := range rs {
		if code >= r.Min && code <= r.Max {
			return true
		}
	}
	return false
}

func rangesString(rs []StatusRange) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteString(", ")
		}
		if r.Min == r.Max {
			fmt.Fprintf(&b, "%d", r.Min)
		} else {
			fmt.Fprintf(&b, "%d–%d", r.Min, r.Max)
		}
	}
	return b.String()
}

// TCPConfig configures a TCP probe.
type TCPConfig struct {
	// Send, if not empty, is written once connected.
	Send []byte
	// Expect, if not empty, must appear in what the endpoint sends back
	// (within its first 64 KiB) before the probe's ctx ends.
	Expect []byte
	// Dial opens the connection. If nil, a net.Dialer's DialContext.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// TCP returns a Probe that connects to the endpoint's Addr over TCP, writes
// Send, waits for Expect, and closes the connection. Without Send and Expect
// a successful connect passes. It returns an error wrapping ErrInvalidConfig
// for an Expect longer than the 64 KiB it reads, which could never match.
func TCP(cfg TCPConfig) (Probe, error) {
	if len(cfg.Expect) > tcpReadLimit {
		return nil, invalid("TCPConfig.Expect of %d bytes, longer than the %d it reads", len(cfg.Expect), tcpReadLimit)
	}
	cfg.Send = bytes.Clone(cfg.Send)
	cfg.Expect = bytes.Clone(cfg.Expect)
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return func(ctx context.Context, ep bulwark.Endpoint) error {
		conn, err := dial(ctx, "tcp", ep.Addr)
		if err != nil {
			return fmt.Errorf("healthcheck: tcp %s: %w", ep.Addr, ctxErr(ctx, err))
		}
		defer conn.Close()
		if len(cfg.Send) == 0 && len(cfg.Expect) == 0 {
			return nil
		}
		// Unblock reads and writes when ctx ends, whatever clock ended it.
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
		if len(cfg.Send) > 0 {
			if _, err := conn.Write(cfg.Send); err != nil {
				return fmt.Errorf("healthcheck: tcp %s: write: %w", ep.Addr, ctxErr(ctx, err))
			}
		}
		if len(cfg.Expect) == 0 {
			return nil
		}
		const limit = tcpReadLimit
		buf := make([]byte, 0, 512)
		for len(buf) < limit {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := conn.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if bytes.Contains(buf, cfg.Expect) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("healthcheck: tcp %s: %q not received: %w", ep.Addr, cfg.Expect, ctxErr(ctx, err))
			}
		}
		return fmt.Errorf("healthcheck: tcp %s: %q not in the first %d bytes", ep.Addr, cfg.Expect, limit)
	}, nil
}

// tcpReadLimit is how much of the answer a TCP probe reads for Expect.
const tcpReadLimit = 64 << 10

// ctxErr returns ctx's cause if ctx ended (the connection was closed for
// it), and err otherwise.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}
