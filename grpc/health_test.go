package bulwarkgrpc_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	bulwarkgrpc "github.com/bulwark-go/bulwark/grpc"
	"github.com/bulwark-go/bulwark/healthcheck"
	"github.com/bulwark-go/bulwark/healthz"
)

func newHealthServer(t *testing.T, clk *bulwarktest.Clock, db *atomic.Bool) (*bulwarkgrpc.HealthServer, *testServer) {
	t.Helper()
	svc, err := healthz.New(healthz.Config{
		Ready: []healthz.Check{{Name: "db", TTL: time.Nanosecond, Run: func(context.Context) error {
			if !db.Load() {
				return errors.New("db down")
			}
			return nil
		}}},
		Clock: clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := bulwarkgrpc.NewHealthServer(bulwarkgrpc.HealthConfig{Service: svc, WatchInterval: time.Second, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	srv := startServerWith(t, nil, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	return hs, srv
}

// The health server follows the Service's readiness, liveness and start-up,
// and drains.
func TestHealthServerCheck(t *testing.T) {
	clk := bulwarktest.NewClock(time.Unix(0, 0))
	var db atomic.Bool
	db.Store(true)
	hs, srv := newHealthServer(t, clk, &db)
	client := healthpb.NewHealthClient(dial(t, srv.addr))
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q): %v", service, err)
		}
		return resp.GetStatus()
	}
	serving, notServing := healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING
	for _, svc := range []string{"", bulwarkgrpc.HealthReadiness, bulwarkgrpc.HealthLiveness} {
		if got := check(svc); got != serving {
			t.Errorf("Check(%q) = %v, want SERVING", svc, got)
		}
	}
	db.Store(false)
	clk.Advance(time.Second)
	if got := check(""); got != notServing {
		t.Errorf("db down: Check(\"\") = %v, want NOT_SERVING", got)
	}
	if got := check(bulwarkgrpc.HealthLiveness); got != serving {
		t.Errorf("db down: liveness = %v, want SERVING", got)
	}
	db.Store(true)
	clk.Advance(time.Second)
	if got := check(""); got != serving {
		t.Errorf("db back: Check(\"\") = %v, want SERVING", got)
	}
	hs.Drain()
	if got := check(bulwarkgrpc.HealthReadiness); got != notServing {
		t.Errorf("drained: readiness = %v, want NOT_SERVING", got)
	}
	if got := check(bulwarkgrpc.HealthLiveness); got != serving {
		t.Errorf("drained: liveness = %v, want SERVING", got)
	}
	_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "nope"})
	if got := status.Code(err); got != codes.NotFound {
		t.Errorf("unknown service: code %v, want NotFound", got)
	}
}

// Watch sends the status at once, then its changes: a failing check on the
// next interval, a drain at once.
func TestHealthServerWatch(t *testing.T) {
	clk := bulwarktest.NewClock(time.Unix(0, 0))
	var db atomic.Bool
	db.Store(true)
	hs, srv := newHealthServer(t, clk, &db)
	client := healthpb.NewHealthClient(dial(t, srv.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	next := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first status %v, want SERVING", got)
	}
	db.Store(false)
	if err := clk.BlockUntil(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("after the check failed: %v, want NOT_SERVING", got)
	}
	db.Store(true)
	if err := clk.BlockUntil(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after the check passed: %v, want SERVING", got)
	}
	hs.Drain() // no clock advance: the drain reaches the watch at once
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("after Drain: %v, want NOT_SERVING", got)
	}
}

// HealthProbe passes against a serving server and fails against a drained
// one or one that is down.
func TestHealthProbe(t *testing.T) {
	clk := bulwarktest.NewClock(time.Unix(0, 0))
	var db atomic.Bool
	db.Store(true)
	hs, srv := newHealthServer(t, clk, &db)
	probe := bulwarkgrpc.HealthProbe(bulwarkgrpc.ProbeConfig{})
	ep := bulwark.Endpoint{Addr: srv.addr}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := probe(ctx, ep); err != nil {
		t.Errorf("probe of a serving server: %v", err)
	}
	hs.Drain()
	if err := probe(ctx, ep); err == nil {
		t.Error("probe of a drained server passed")
	}
	srv.kill()
	if err := probe(ctx, ep); err == nil {
		t.Error("probe of a stopped server passed")
	}
	// A Checker runs it.
	var _ healthcheck.Probe = probe
}
