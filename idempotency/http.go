package idempotency

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
)

var (
	_ http.Handler = (*handler)(nil)
	_ http.Flusher = (*recorder)(nil)
)

// Header names of the middleware.
const (
	headerKey      = "Idempotency-Key"
	headerReplayed = "Idempotent-Replayed"
)

// HTTPConfig configures Middleware.
type HTTPConfig struct {
	// Engine claims keys and stores responses; its Config decides the lease,
	// the retention, whether a duplicate waits for an in-flight request,
	// the Retry-After of a 409, and whether a store outage fails open or
	// closed. It must not be nil.
	Engine *Engine
	// Methods lists the methods that carry an idempotency key; requests of
	// other methods pass through untouched. If nil, POST and PATCH.
	Methods []string
	// AllowMissingKey lets a request without an Idempotency-Key header
	// pass through unprotected. If false, such a request is refused with
	// 400 Bad Request. A malformed key is refused either way.
	AllowMissingKey bool
	// MaxKeyLength bounds the length of a key in bytes. If zero, 255. It
	// must not be negative.
	MaxKeyLength int
	// Tenant returns the tenant (account, API client) of a request, so that
	// two tenants' equal keys do not meet. It runs before the handler, so it
	// must rely on what earlier middleware put in the request. If nil, every
	// request has the same tenant.
	Tenant func(*http.Request) string
	// Route returns the route of a request, which scopes its key together
	// with the method and the tenant. If nil, r.Pattern where a ServeMux
	// has set it (the middleware wraps a handler inside the mux), else
	// r.URL.Path.
	Route func(*http.Request) string
	// MaxRequestBody bounds the request body read for the fingerprint, in
	// bytes; a longer body is refused with 413 Content Too Large. If zero,
	// 1 MiB. It must not be negative.
	MaxRequestBody int64
	// MaxStoredBody bounds the response body kept for replay, in bytes. A
	// longer response still reaches its client in full, and is recorded
	// without its body: a replay sends its status and headers with an empty
	// body. If zero, 1 MiB. It must not be negative.
	MaxStoredBody int
	// ReplayHeaders lists the response headers stored and replayed. If nil,
	// Content-Type, Content-Encoding, Content-Language, Content-Location,
	// Location, ETag and Last-Modified.
	ReplayHeaders []string
	// Cacheable reports whether a response with the given status is final
	// and stored for replay; otherwise its key is released so that a retry
	// runs the handler again. If nil, 2xx and 4xx except 408, 409 and 429:
	// a 5xx, a timeout or a rate limit is worth retrying. Handlers that
	// answer with 3xx (303 See Other after a POST) should include it.
	// ctx is the request's context. It is called on the request's
	// goroutine, concurrently for different requests.
	Cacheable func(ctx context.Context, status int) bool
}

var defaultReplayHeaders = []string{
	"Content-Type", "Content-Encoding", "Content-Language", "Content-Location",
	"Location", "ETag", "Last-Modified",
}

// DefaultCacheable is the default of HTTPConfig.Cacheable: 2xx, and 4xx
// except 408 Request Timeout, 409 Conflict and 429 Too Many Requests. It
// ignores ctx.
func DefaultCacheable(_ context.Context, status int) bool {
	switch {
	case status >= 200 && status < 300:
		return true
	case status == http.StatusRequestTimeout, status == http.StatusConflict, status == http.StatusTooManyRequests:
		return false
	case status >= 400 && status < 500:
		return true
	}
	return false
}

// Middleware returns HTTP middleware that makes handlers idempotent under
// the Idempotency-Key header, as draft-ietf-httpapi-idempotency-key-header
// describes and Stripe practises. For a request whose method is in
// cfg.Methods:
//
//   - a missing key is refused with 400 (unless cfg.AllowMissingKey), and so
//     is a malformed one or a repeated header;
//   - a body longer than cfg.MaxRequestBody is refused with 413;
//   - the key, scoped by tenant, method and route, is claimed with a
//     fingerprint of the request (method, path, query and body, in a
//     canonical form); the first request runs the handler, which writes to
//     its client as usual while the response is recorded;
//   - a response whose status cfg.Cacheable selects is stored; any other
//     (5xx by default) releases the key, so a retry runs again;
//   - a duplicate gets the stored status, the cfg.ReplayHeaders and the body,
//     with "Idempotent-Replayed: true";
//   - a duplicate that arrives while the first is in flight gets 409 with
//     Retry-After (or waits first, see Config.Wait);
//   - a duplicate with another fingerprint gets 422;
//   - a store outage answers 503 before the handler runs, or, if the
//     Engine fails open, runs the handler unprotected.
//
// Refusals carry application/problem+json bodies (RFC 9457). The handler
// sees the request body it would have seen, and a request context that
// carries the run's Lease (LeaseFromContext) and ends with the cause
// ErrLeaseLost if the lease cannot be kept. A handler that completes its key
// in its own transaction stores what EncodeResponse returns for the response
// it then writes; the middleware stores nothing more for it. A panic in the handler releases
// the key and propagates. Events go to the Engine's Observer; refusals for a
// missing or bad key or a large body are reported as EventRejected.
//
// Middleware returns an error wrapping ErrInvalidConfig if cfg.Engine is nil
// or a limit is negative.
// A nil handler given to the middleware means http.DefaultServeMux. The
// returned function and its handlers are safe for concurrent use.
func Middleware(cfg HTTPConfig) (func(http.Handler) http.Handler, error) {
	if cfg.Engine == nil {
		return nil, fmt.Errorf("%w: HTTPConfig.Engine is nil", ErrInvalidConfig)
	}
	if cfg.MaxKeyLength < 0 {
		return nil, fmt.Errorf("%w: HTTPConfig.MaxKeyLength %d is negative", ErrInvalidConfig, cfg.MaxKeyLength)
	}
	if cfg.MaxRequestBody < 0 {
		return nil, fmt.Errorf("%w: HTTPConfig.MaxRequestBody %d is negative", ErrInvalidConfig, cfg.MaxRequestBody)
	}
	if cfg.MaxStoredBody < 0 {
		return nil, fmt.Errorf("%w: HTTPConfig.MaxStoredBody %d is negative", ErrInvalidConfig, cfg.MaxStoredBody)
	}
	m := &middleware{
		engine:     cfg.Engine,
		allowMiss:  cfg.AllowMissingKey,
		maxKey:     cfg.MaxKeyLength,
		tenant:     cfg.Tenant,
		route:      cfg.Route,
		maxReq:     cfg.MaxRequestBody,
		maxStored:  cfg.MaxStoredBody,
		cacheable:  cfg.Cacheable,
		methods:    map[string]bool{},
		replayHdrs: nil,
	}
	if m.maxKey == 0 {
		m.maxKey = 255
	}
	if m.maxReq == 0 {
		m.maxReq = 1 << 20
	}
	if m.maxStored == 0 {
		m.maxStored = 1 << 20
	}
	if m.cacheable == nil {
		m.cacheable = DefaultCacheable
	}
	methods := cfg.Methods
	if methods == nil {
		methods = []string{http.MethodPost, http.MethodPatch}
	}
	for _, mt := range methods {
		m.methods[mt] = true
	}
	hdrs := cfg.ReplayHeaders
	if hdrs == nil {
		hdrs = defaultReplayHeaders
	}
	for _, h := range hdrs {
		m.replayHdrs = append(m.replayHdrs, http.CanonicalHeaderKey(h))
	}
	return func(next http.Handler) http.Handler {
		if next == nil {
			next = http.DefaultServeMux
		}
		return &handler{m: m, next: next}
	}, nil
}

type middleware struct {
	engine     *Engine
	methods    map[string]bool
	allowMiss  bool
	maxKey     int
	tenant     func(*http.Request) string
	route      func(*http.Request) string
	maxReq     int64
	maxStored  int
	replayHdrs []string // canonical
	cacheable  func(context.Context, int) bool
}

type handler struct {
	m    *middleware
	next http.Handler
}

// exchange holds the buffers of one request, pooled.
type exchange struct {
	body bytes.Buffer // the request body
	rd   bodyReader   // reads body for the handler
	rec  recorder
}

var exchangePool = sync.Pool{New: func() any { return new(exchange) }}

func (x *exchange) free() {
	if x.body.Cap() > 64<<10 || x.rec.buf.Cap() > 64<<10 {
		return // let the GC have large buffers
	}
	x.body.Reset()
	x.rd.Reset(nil)
	x.rec = recorder{head: x.rec.head[:0], buf: x.rec.buf}
	x.rec.buf.Reset()
	exchangePool.Put(x)
}

// bodyReader is the request body the handler reads.
type bodyReader struct{ bytes.Reader }

func (*bodyReader) Close() error { return nil }

// readLimited appends r's content to buf, reading at most limit+1 bytes, and
// reports whether there were more than limit.
func readLimited(buf *bytes.Buffer, r io.Reader, limit int64) (tooLarge bool, err error) {
	for {
		left := limit + 1 - int64(buf.Len())
		if left <= 0 {
			return true, nil
		}
		buf.Grow(int(min(left, 4096)))
		p := buf.AvailableBuffer()
		p = p[:min(int64(cap(p)), left)]
		n, err := r.Read(p)
		buf.Write(p[:n])
		if err == io.EOF {
			return int64(buf.Len()) > limit, nil
		}
		if err != nil {
			return false, err
		}
	}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := h.m
	if !m.methods[r.Method] {
		h.next.ServeHTTP(w, r)
		return
	}
	values := r.Header.Values(headerKey)
	switch {
	case len(values) == 0:
		if m.allowMiss {
			h.next.ServeHTTP(w, r)
			return
		}
		m.reject(w, "", "missing_key", http.StatusBadRequest, "This request requires an Idempotency-Key header.")
		return
	case len(values) > 1:
		m.reject(w, "", "invalid_key", http.StatusBadRequest, "The Idempotency-Key header must appear once.")
		return
	}
	key, err := parseKey(values[0], m.maxKey)
	if err != nil {
		m.reject(w, "", "invalid_key", http.StatusBadRequest,
			fmt.Sprintf("The Idempotency-Key header is invalid: 1 to %d printable ASCII characters, bare or as a quoted string.", m.maxKey))
		return
	}

	if r.ContentLength > m.maxReq {
		m.reject(w, key, "body_too_large", http.StatusRequestEntityTooLarge,
			fmt.Sprintf("The request body exceeds %d bytes.", m.maxReq))
		return
	}
	x := exchangePool.Get().(*exchange)
	defer x.free()
	if r.Body != nil && r.Body != http.NoBody {
		tooLarge, err := readLimited(&x.body, r.Body, m.maxReq)
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) { // an outer http.MaxBytesReader's limit
			tooLarge, err = true, nil
		}
		if err != nil {
			m.reject(w, key, "body_unreadable", http.StatusBadRequest, "The request body could not be read.")
			return
		}
		if tooLarge {
			m.reject(w, key, "body_too_large", http.StatusRequestEntityTooLarge,
				fmt.Sprintf("The request body exceeds %d bytes.", m.maxReq))
			return
		}
	}
	fp := requestFingerprint(r.Method, r.URL, x.body.Bytes())
	scoped := m.scope(r, key)

	run := func(ctx context.Context) ([]byte, error) {
		return m.serve(ctx, w, r, h.next, x)
	}
	stored, ran, err := m.engine.do(r.Context(), scoped, fp[:], run)
	if ran {
		return
	}
	if err != nil {
		m.refuse(w, r, err)
		return
	}
	m.replay(w, scoped, stored)
}

// scope returns the store key of an idempotency key: the tenant, method and
// route, each length-prefixed, then the key.
func (m *middleware) scope(r *http.Request, key string) string {
	tenant := ""
	if m.tenant != nil {
		tenant = m.tenant(r)
	}
	var route string
	switch {
	case m.route != nil:
		route = m.route(r)
	case r.Pattern != "":
		route = r.Pattern
	default:
		route = r.URL.Path
	}
	var b strings.Builder
	b.Grow(24 + len(tenant) + len(r.Method) + len(route) + len(key))
	b.WriteString("http:")
	writeInt(&b, len(tenant))
	b.WriteByte(':')
	b.WriteString(tenant)
	b.WriteByte(' ')
	b.WriteString(r.Method)
	b.WriteByte(' ')
	writeInt(&b, len(route))
	b.WriteByte(':')
	b.WriteString(route)
	b.WriteByte(' ')
	b.WriteString(key)
	return b.String()
}

func writeInt(b *strings.Builder, n int) {
	var buf [20]byte
	b.Write(strconv.AppendInt(buf[:0], int64(n), 10))
}

// serve runs the handler with the body restored and ctx, the run's context,
// as the request's, recording its response, and returns the encoded response
// when it is to be stored.
func (m *middleware) serve(ctx context.Context, w http.ResponseWriter, r *http.Request, next http.Handler, x *exchange) ([]byte, error) {
	r2 := r.WithContext(ctx)
	if r.Body != nil && r.Body != http.NoBody {
		x.rd.Reset(x.body.Bytes())
		r2.Body = &x.rd
	}
	rec := &x.rec
	rec.w, rec.m = w, m
	next.ServeHTTP(rec, r2)
	if !rec.wroteHeader {
		rec.WriteHeader(http.StatusOK)
	}
	if !m.cacheable(r.Context(), rec.status) {
		return nil, nil
	}
	return rec.encoded(), nil
}

// recorder passes a response through to its client and keeps a copy of the
// status, the replayed headers and up to max bytes of the body.
type recorder struct {
	w           http.ResponseWriter
	m           *middleware
	status      int
	wroteHeader bool
	head        []byte       // the encoded status and replayed headers, as sent
	buf         bytes.Buffer // the body, up to maxStored bytes
	overflow    bool
}

func (rw *recorder) Header() http.Header { return rw.w.Header() }

func (rw *recorder) WriteHeader(code int) {
	if rw.wroteHeader {
		rw.w.WriteHeader(code) // net/http reports the superfluous call
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		rw.w.WriteHeader(code) // informational: the final status is to come
		return
	}
	rw.wroteHeader = true
	rw.status = code
	rw.head = rw.m.appendHead(rw.head[:0], code, rw.w.Header())
	rw.w.WriteHeader(code)
}

func (rw *recorder) Write(p []byte) (int, error) {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	if !rw.overflow {
		if rw.buf.Len()+len(p) > rw.m.maxStored {
			rw.overflow = true
			rw.buf.Reset()
		} else {
			rw.buf.Write(p)
		}
	}
	return rw.w.Write(p)
}

// Flush flushes the underlying writer if it can.
func (rw *recorder) Flush() {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(rw.w).Flush()
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.w }

// flagBodyOmitted marks a stored response whose body was too long to keep
// (see the encoding in encode.go).
const flagBodyOmitted = 1

// appendHead appends to b the encoding of everything but the flags' final
// value and the body.
func (m *middleware) appendHead(b []byte, status int, h http.Header) []byte {
	return appendResponseHead(b, status, h, m.replayHdrs)
}

// encoded returns the stored form of the recorded response.
func (rw *recorder) encoded() []byte {
	b := make([]byte, 0, len(rw.head)+rw.buf.Len())
	b = append(b, rw.head...)
	if rw.overflow {
		b[1] |= flagBodyOmitted
	}
	return append(b, rw.buf.Bytes()...)
}

var errCorrupt = errors.New("idempotency: stored response is corrupt")

// replay writes a stored response.
func (m *middleware) replay(w http.ResponseWriter, key string, b []byte) {
	if len(b) < 5 || b[0] != kindResponse {
		m.corrupt(w, key)
		return
	}
	flags := b[1]
	status := int(binary.BigEndian.Uint16(b[2:4]))
	if status < 200 || status > 999 {
		m.corrupt(w, key) // net/http would panic on it; we never store it
		return
	}
	b = b[4:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		m.corrupt(w, key)
		return
	}
	b = b[k:]
	// Check every field before setting any header.
	rest := b
	for range n {
		var ok1, ok2 bool
		_, rest, ok1 = skipField(rest)
		_, rest, ok2 = skipField(rest)
		if !ok1 || !ok2 {
			m.corrupt(w, key)
			return
		}
	}
	h := w.Header()
	for range n {
		name, rest, _ := m.headerName(b)
		value, rest, _ := skipField(rest)
		b = rest
		h[name] = append(h[name], string(value))
	}
	h.Set(headerReplayed, "true")
	if flags&flagBodyOmitted != 0 {
		b = nil
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// headerName reads a field holding a header name, returning the string of
// the configured name it equals, so that replays do not allocate names.
func (m *middleware) headerName(b []byte) (string, []byte, bool) {
	raw, rest, ok := skipField(b)
	if !ok {
		return "", nil, false
	}
	for _, name := range m.replayHdrs {
		if string(raw) == name {
			return name, rest, true
		}
	}
	return string(raw), rest, true
}

// skipField returns the content of the length-prefixed field at the start of
// b and what follows it.
func skipField(b []byte) (field, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}

func (m *middleware) corrupt(w http.ResponseWriter, key string) {
	e := m.engine
	if e.obs != nil {
		ev := e.event(bulwark.EventStoreError, key)
		ev.Err, ev.Reason = errCorrupt, "corrupt"
		e.obs.Observe(ev)
	}
	writeProblem(w, http.StatusInternalServerError, "The stored response for this Idempotency-Key cannot be read.")
}

// refuse answers a request that did not run and has nothing to replay.
func (m *middleware) refuse(w http.ResponseWriter, r *http.Request, err error) {
	var inflight *InFlightError
	switch {
	case errors.As(err, &inflight):
		secs := (inflight.Retry + time.Second - 1) / time.Second // rounded up
		w.Header().Set("Retry-After", strconv.FormatInt(int64(max(secs, 1)), 10))
		writeProblem(w, http.StatusConflict, "A request with this Idempotency-Key is still being processed.")
	case errors.Is(err, ErrMismatch):
		writeProblem(w, http.StatusUnprocessableEntity, "This Idempotency-Key was used with a different request.")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client has gone; nobody reads an answer.
	default:
		writeProblem(w, http.StatusServiceUnavailable, "Idempotency protection is unavailable; the request was not processed.")
	}
}

// reject refuses a request before it reaches the store.
func (m *middleware) reject(w http.ResponseWriter, key, reason string, status int, detail string) {
	if e := m.engine; e.obs != nil {
		ev := e.event(bulwark.EventRejected, key)
		ev.Reason = reason
		e.obs.Observe(ev)
	}
	writeProblem(w, status, detail)
}

// problem is an RFC 9457 problem details object.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	b, _ := json.Marshal(problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
