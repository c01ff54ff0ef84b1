package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/bulwark-go/bulwark/retry"
)

// Request bodies. A replayable request (retry.Replayable: an idempotent
// method, or an Idempotency-Key) may be sent again after its attempt got an
// answer, so its body is kept, in a pooled buffer, up to MaxBufferedBody. Any
// other request, and one whose Content-Length is above MaxBufferedBody, is
// sent again only when its attempt failed to connect, when nothing of its body
// was read: the body streams through untouched, and GetBody hands the same
// body out again while none of it has been read. A body of unknown length
// found larger than MaxBufferedBody is sent once.
//
// Every attempt, the first included, takes its body from GetBody (see
// bodyFromGetBody), and the transport closes it when it is done with it; a
// kept body's buffer goes back to the pool once the request is over and every
// body handed out is closed.

// replayableMethod reports whether r may be sent again whatever happened to
// its first attempt: retry.Replayable's rule, its body left aside.
func replayableMethod(r *http.Request) bool {
	bodiless := *r
	bodiless.Body, bodiless.GetBody = nil, nil
	return retry.Replayable(&bodiless)
}

// prepareBody sets r's body up to be sent again where it may be, and returns
// a function to call once the request is over, or nil.
func (p *Proxy) prepareBody(r *http.Request) (done func(), err error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	if !replayableMethod(r) || r.ContentLength > p.cfg.MaxBufferedBody {
		u := &unsentBody{rc: r.Body}
		r.Body = u
		r.GetBody = u.again
		return u.finish, nil
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, p.cfg.MaxBufferedBody+1)); err != nil {
		putBodyBuffer(buf)
		return nil, fmt.Errorf("proxy: reading the request body: %w", err)
	}
	if int64(buf.Len()) > p.cfg.MaxBufferedBody {
		// A body of unknown length turned out too large to keep: send it
		// once, what was read followed by the rest. The buffer is left to
		// the garbage collector, as the body may be read after the
		// request is over.
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf.Bytes()), r.Body), r.Body}
		return nil, nil
	}
	if buf.Len() == 0 {
		putBodyBuffer(buf)
		r.Body, r.ContentLength = http.NoBody, 0
		return nil, nil
	}
	b := &bufferedBody{buf: buf}
	b.refs.Store(1) // the request's own, released when it is over (finish)
	first := &bodyReader{}
	first.Reset(buf.Bytes()) // holds no reference: bodyFromGetBody sends another
	r.Body = first
	r.GetBody = b.again
	r.ContentLength = int64(buf.Len())
	return b.finish, nil
}

// bodyFromGetBody is the proxy's outermost RoundTripper: it sends a request
// that has a GetBody with a body from it, rather than with the wrapper of the
// inbound body that ReverseProxy makes, which never closes what it wraps. So
// the transport closes every body it is given, and a kept body's buffer can
// go back to the pool.
type bodyFromGetBody struct{ next http.RoundTripper }

func (t bodyFromGetBody) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.GetBody == nil || r.Body == nil || r.Body == http.NoBody {
		return t.next.RoundTrip(r)
	}
	body, err := r.GetBody()
	_ = r.Body.Close()
	if err != nil {
		return nil, err
	}
	out := *r
	out.Body = body
	return t.next.RoundTrip(&out)
}

// bodyBuffers holds the buffers of request bodies; those that grew past
// maxPooledBody are not kept.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledBody = 64 << 10

func putBodyBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledBody {
		bodyBuffers.Put(buf)
	}
}

// bufferedBody is a request body kept in a pooled buffer. The buffer goes
// back to the pool when the request is over and every reader that GetBody
// handed out is closed: an attempt still being written, such as a hedge
// called off, keeps it.
type bufferedBody struct {
	buf  *bytes.Buffer
	refs atomic.Int32 // readers not closed, plus one until the request is over
	over atomic.Bool  // the request is over
}

var errBodyReleased = errors.New("proxy: request body read after the request")

// again is GetBody: a new reader, unless the request is over.
func (b *bufferedBody) again() (io.ReadCloser, error) {
	for {
		n := b.refs.Load()
		if n == 0 || b.over.Load() {
			return nil, errBodyReleased
		}
		if b.refs.CompareAndSwap(n, n+1) {
			r := &bodyReader{b: b}
			r.Reset(b.buf.Bytes())
			return r, nil
		}
	}
}

// finish marks the request over, and releases its reference.
func (b *bufferedBody) finish() {
	b.over.Store(true)
	b.release()
}

func (b *bufferedBody) release() {
	if b.refs.Add(-1) == 0 {
		putBodyBuffer(b.buf)
		b.buf = nil
	}
}

// bodyReader reads a bufferedBody and, if it holds a reference to it,
// releases it on Close.
type bodyReader struct {
	bytes.Reader
	b      *bufferedBody // nil for the first body, which holds none
	closed atomic.Bool
}

func (r *bodyReader) Close() error {
	if r.closed.CompareAndSwap(false, true) && r.b != nil {
		r.b.release()
	}
	return nil
}

// unsentBody is the body of a request that is sent again only if none of it
// was read. Close does not close the inbound body, which the server does
// once the handler returns (closing it early drains it, and can hang while
// the client waits for 100 Continue), and the body cannot be read once the
// request is over.
type unsentBody struct {
	rc   io.ReadCloser
	read atomic.Bool
	over atomic.Bool
}

var (
	errBodySent = errors.New("proxy: request body already sent")
	errBodyOver = errors.New("proxy: request body read after the request")
)

func (u *unsentBody) Read(p []byte) (int, error) {
	if u.over.Load() {
		return 0, errBodyOver
	}
	u.read.Store(true)
	return u.rc.Read(p)
}

func (u *unsentBody) Close() error { return nil }

// again is GetBody: the same body, while none of it was read.
func (u *unsentBody) again() (io.ReadCloser, error) {
	if u.read.Load() {
		return nil, errBodySent
	}
	return u, nil
}

// finish marks the request over.
func (u *unsentBody) finish() { u.over.Store(true) }
