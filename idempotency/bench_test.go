package idempotency_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/idempotency"
)

// The benchmarks run on the wall clock. "first" cycles through a set of keys
// whose results are kept for a nanosecond, so that every request with a key
// finds it free again and runs the handler; "replay" repeats one key.

const benchKeys = 4096

// benchBody is a request body that can be rewound without allocating.
type benchBody struct {
	bytes.Reader
	data []byte
}

func (b *benchBody) Close() error { return nil }
func (b *benchBody) rewind()      { b.Reset(b.data) }

// discard is a ResponseWriter that keeps nothing.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

var orderJSON = []byte(`{"id":"ord_1","status":"created"}`)

// trivial is the handler of the benchmarks: it reads the body and answers
// a small JSON document.
var trivial = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var buf [64]byte
	for {
		if _, err := r.Body.Read(buf[:]); err != nil {
			break
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(orderJSON)
})

// benchRequests returns n POST requests, each with its own key.
func benchRequests(prefix string, n int) []*http.Request {
	rs := make([]*http.Request, n)
	for i := range rs {
		body := &benchBody{data: []byte(`{"item":"tea","qty":2}`)}
		body.rewind()
		r, _ := http.NewRequest("POST", "http://example.com/orders", body)
		r.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%08d", prefix, i))
		r.Header.Set("Content-Type", "application/json")
		rs[i] = r
	}
	return rs
}

// measureCPU starts measuring the process's CPU time and returns a function
// that reports it per op as cpu-ns/op. Unlike ns/op, it does not count time
// spent waiting for a core on a busy machine. For a parallel benchmark that
// scales on 2 cores, ns/op is about half of cpu-ns/op.
func measureCPU(b *testing.B) func() {
	start, ok := cpuTime()
	return func() {
		end, ok2 := cpuTime()
		if ok && ok2 && b.N > 0 {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func serve(h http.Handler, w *discard, r *http.Request) {
	r.Body.(*benchBody).rewind()
	clear(w.h)
	h.ServeHTTP(w, r)
}

func BenchmarkMiddleware(b *testing.B) {
	newHandler := func(b *testing.B) http.Handler {
		st, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{MaxEntries: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		e, err := idempotency.New(idempotency.Config{Store: st, Retention: time.Nanosecond})
		if err != nil {
			b.Fatal(err)
		}
		mw, err := idempotency.Middleware(idempotency.HTTPConfig{Engine: e})
		if err != nil {
			b.Fatal(err)
		}
		return mw(trivial)
	}
	newReplayHandler := func(b *testing.B) http.Handler {
		st, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		e, err := idempotency.New(idempotency.Config{Store: st})
		if err != nil {
			b.Fatal(err)
		}
		mw, err := idempotency.Middleware(idempotency.HTTPConfig{Engine: e})
		if err != nil {
			b.Fatal(err)
		}
		return mw(trivial)
	}

	// none is the handler alone: subtract it from the others to get the
	// middleware's overhead.
	b.Run("none", func(b *testing.B) {
		rs := benchRequests("none", 1)
		w := &discard{h: http.Header{}}
		b.ReportAllocs()
		defer measureCPU(b)()
		for b.Loop() {
			serve(trivial, w, rs[0])
		}
	})
	b.Run("first", func(b *testing.B) {
		h := newHandler(b)
		rs := benchRequests("first", benchKeys)
		w := &discard{h: http.Header{}}
		b.ReportAllocs()
		defer measureCPU(b)()
		i := 0
		for b.Loop() {
			serve(h, w, rs[i%benchKeys])
			i++
		}
	})
	b.Run("first/parallel", func(b *testing.B) {
		h := newHandler(b)
		sets := make([][]*http.Request, runtime.GOMAXPROCS(0))
		for i := range sets {
			sets[i] = benchRequests(fmt.Sprint("first-", i), benchKeys)
		}
		var g atomic.Int64
		b.ReportAllocs()
		defer measureCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			rs := sets[g.Add(1)-1]
			w := &discard{h: http.Header{}}
			i := 0
			for pb.Next() {
				serve(h, w, rs[i%benchKeys])
				i++
			}
		})
	})
	b.Run("replay", func(b *testing.B) {
		h := newReplayHandler(b)
		rs := benchRequests("replay", 1)
		w := &discard{h: http.Header{}}
		serve(h, w, rs[0])
		b.ReportAllocs()
		defer measureCPU(b)()
		for b.Loop() {
			serve(h, w, rs[0])
		}
		if w.h.Get("Idempotent-Replayed") != "true" {
			b.Fatal("not replayed")
		}
	})
	b.Run("replay/parallel", func(b *testing.B) {
		h := newReplayHandler(b)
		// One key per goroutine: concurrent duplicates of one key would be
		// in flight together and get 409s.
		sets := make([][]*http.Request, runtime.GOMAXPROCS(0))
		for i := range sets {
			sets[i] = benchRequests(fmt.Sprint("replay-", i), 1)
			serve(h, &discard{h: http.Header{}}, sets[i][0])
		}
		var g atomic.Int64
		b.ReportAllocs()
		defer measureCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			rs := sets[g.Add(1)-1]
			w := &discard{h: http.Header{}}
			for pb.Next() {
				serve(h, w, rs[0])
			}
		})
	})
}

func BenchmarkMemoryStore(b *testing.B) {
	newStore := func(b *testing.B) *idempotency.MemoryStore {
		st, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{MaxEntries: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	keys := func(prefix string) []string {
		ks := make([]string, benchKeys)
		for i := range ks {
			ks[i] = fmt.Sprintf("%s-%08d", prefix, i)
		}
		return ks
	}
	fp := []byte("0123456789abcdef0123456789abcdef")
	value := []byte(`h{"id":"ord_1","status":"created"}`)
	ctx := context.Background()
	claimComplete := func(b *testing.B, st *idempotency.MemoryStore, key string) {
		c, err := st.Claim(ctx, key, fp, time.Minute)
		if err != nil || !c.Won {
			b.Fatalf("Claim(%q) = %+v, %v; want Won", key, c, err)
		}
		if err := st.Complete(ctx, key, c.Token, value, time.Nanosecond); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("claimComplete", func(b *testing.B) {
		st := newStore(b)
		ks := keys("k")
		b.ReportAllocs()
		defer measureCPU(b)()
		i := 0
		for b.Loop() {
			claimComplete(b, st, ks[i%benchKeys])
			i++
		}
	})
	b.Run("claimComplete/parallel", func(b *testing.B) {
		st := newStore(b)
		sets := make([][]string, runtime.GOMAXPROCS(0))
		for i := range sets {
			sets[i] = keys(fmt.Sprint("k", i))
		}
		var g atomic.Int64
		b.ReportAllocs()
		defer measureCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			ks := sets[g.Add(1)-1]
			i := 0
			for pb.Next() {
				claimComplete(b, st, ks[i%benchKeys])
				i++
			}
		})
	})
	b.Run("get", func(b *testing.B) {
		st := newStore(b)
		c, _ := st.Claim(ctx, "k", fp, time.Minute)
		if err := st.Complete(ctx, "k", c.Token, value, time.Hour); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		defer measureCPU(b)()
		for b.Loop() {
			if _, err := st.Get(ctx, "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDo(b *testing.B) {
	st, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{MaxEntries: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	op := func(context.Context) (payment, error) { return payment{ID: "pay_1", Amount: 250}, nil }
	fp := []byte("amount=250")
	b.Run("first", func(b *testing.B) {
		e, err := idempotency.New(idempotency.Config{Store: st, Retention: time.Nanosecond})
		if err != nil {
			b.Fatal(err)
		}
		ks := make([]string, benchKeys)
		for i := range ks {
			ks[i] = fmt.Sprintf("first-%08d", i)
		}
		b.ReportAllocs()
		defer measureCPU(b)()
		i := 0
		for b.Loop() {
			if _, err := idempotency.Do(ctx, e, ks[i%benchKeys], fp, op); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("replay", func(b *testing.B) {
		e, err := idempotency.New(idempotency.Config{Store: st})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := idempotency.Do(ctx, e, "replay", fp, op); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		defer measureCPU(b)()
		for b.Loop() {
			if _, err := idempotency.Do(ctx, e, "replay", fp, op); err != nil {
				b.Fatal(err)
			}
		}
	})
}
