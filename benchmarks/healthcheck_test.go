package benchmarks

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/alexliesenfeld/health"
	"github.com/bulwark-go/bulwark/healthz"
)

// The service's own readiness endpoint, two dependency checks whose results
// are cached for 1 s (both libraries' default), served to a recorder: the
// cost a Kubernetes or load-balancer probe puts on the service between check
// runs. The checks pass, so both libraries answer 200 with a JSON body.

func pingOK(context.Context) error { return nil }

func bulwarkReadyz(b *testing.B) http.Handler {
	svc, err := healthz.New(healthz.Config{Ready: []healthz.Check{
		{Name: "postgres", Run: pingOK, TTL: time.Second},
		{Name: "redis", Run: pingOK, TTL: time.Second, Optional: true},
	}})
	if err != nil {
		b.Fatal(err)
	}
	return svc.Readyz()
}

func alexliesenfeldReadyz(b *testing.B) http.Handler {
	checker := health.NewChecker(
		health.WithCacheDuration(time.Second),
		health.WithTimeout(2*time.Second),
		health.WithCheck(health.Check{Name: "postgres", Check: pingOK}),
		health.WithCheck(health.Check{Name: "redis", Check: pingOK}),
	)
	b.Cleanup(func() { checker.Stop() })
	return health.NewHandler(checker)
}

func benchReadyz(b *testing.B, h http.Handler) {
	req := httptest.NewRequest(http.MethodGet, "/readyz", nil)
	b.ReportAllocs()
	for b.Loop() {
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, req)
		if rr.Code != http.StatusOK {
			b.Fatalf("GET /readyz = %d, want 200", rr.Code)
		}
	}
}

func benchReadyzParallel(b *testing.B, h http.Handler) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, "/readyz", nil)
		for pb.Next() {
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, req)
			if rr.Code != http.StatusOK {
				b.Errorf("GET /readyz = %d, want 200", rr.Code)
				return
			}
		}
	})
}

func BenchmarkReadyz(b *testing.B) {
	b.Run("bulwark", func(b *testing.B) { benchReadyz(b, bulwarkReadyz(b)) })
	b.Run("alexliesenfeld-health", func(b *testing.B) { benchReadyz(b, alexliesenfeldReadyz(b)) })
}

func BenchmarkReadyzParallel(b *testing.B) {
	b.Run("bulwark", func(b *testing.B) { benchReadyzParallel(b, bulwarkReadyz(b)) })
	b.Run("alexliesenfeld-health", func(b *testing.B) { benchReadyzParallel(b, alexliesenfeldReadyz(b)) })
}
