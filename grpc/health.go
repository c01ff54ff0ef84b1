package bulwarkgrpc

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/healthcheck"
	"github.com/bulwark-go/bulwark/healthz"
)

// The service names that a HealthServer answers for, besides "" (the
// server as a whole, which is its readiness): Kubernetes' gRPC probes name
// them in their service field.
const (
	HealthLiveness  = "liveness"  // the Service's Live checks (/livez)
	HealthReadiness = "readiness" // the Service's Ready checks and drain (/readyz)
	HealthStartup   = "startup"   // the Service's start-up (/startupz)
)

// HealthConfig configures a HealthServer.
type HealthConfig struct {
	// Service is the service's own health: its Ready checks, Live checks,
	// start-up and drain. It must not be nil.
	Service *healthz.Service
	// WatchInterval is how often a Watch stream re-evaluates its service
	// and sends the status when it changed. A Drain reaches every Watch
	// at once. If zero, 1 s. It must not be negative.
	WatchInterval time.Duration
	// Clock is the time source of WatchInterval. If nil, the wall clock.
	Clock bulwark.Clock
}

// HealthServer is a grpc.health.v1 Health server fed by a
// healthz.Service: the service "" and HealthReadiness are SERVING while
// the Service's /readyz passes (its required checks pass) and NOT_SERVING
// when it fails or after Drain; HealthLiveness follows /livez and
// HealthStartup /startupz. Other names are NOT_FOUND (SERVICE_UNKNOWN to
// Watch). Checks run through the Service, so they share its caches and
// timeouts. Register it with healthpb.RegisterHealthServer.
//
// A HealthServer is safe for concurrent use by multiple goroutines. Use
// NewHealthServer; the zero HealthServer is not usable.
type HealthServer struct {
	healthpb.UnimplementedHealthServer
	svc      *healthz.Service
	interval time.Duration
	clk      bulwark.Clock

	once    sync.Once
	drained chan struct{} // closed by Drain
}

var _ healthpb.HealthServer = (*HealthServer)(nil)

// NewHealthServer returns a HealthServer for cfg, or an error wrapping
// ErrInvalidConfig for a nil Service or a negative WatchInterval.
func NewHealthServer(cfg HealthConfig) (*HealthServer, error) {
	if cfg.Service == nil {
		return nil, fmt.Errorf("%w: nil Service", ErrInvalidConfig)
	}
	if cfg.WatchInterval < 0 {
		return nil, fmt.Errorf("%w: WatchInterval %v is negative", ErrInvalidConfig, cfg.WatchInterval)
	}
	h := &HealthServer{svc: cfg.Service, interval: cfg.WatchInterval, clk: clockOrWall(cfg.Clock), drained: make(chan struct{})}
	if h.interval == 0 {
		h.interval = time.Second
	}
	return h, nil
}

// Drain drains the Service (healthz.Service.Drain), so that "" and
// HealthReadiness answer NOT_SERVING from now on, and tells every Watch at
// once. Call it when shutdown begins, wait for the clients and load
// balancers to notice, then stop the server (grpc.Server.GracefulStop).
func (h *HealthServer) Drain() {
	h.once.Do(func() {
		h.svc.Drain()
		close(h.drained)
	})
}

// evaluate returns the status of service, and false for an unknown one.
func (h *HealthServer) evaluate(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, bool) {
	var handler http.Handler
	switch service {
	case "", HealthReadiness:
		handler = h.svc.Readyz()
	case HealthLiveness:
		handler = h.svc.Livez()
	case HealthStartup:
		handler = h.svc.Startupz()
	default:
		return healthpb.HealthCheckResponse_SERVICE_UNKNOWN, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, "/", nil)
	if err != nil {
		return healthpb.HealthCheckResponse_NOT_SERVING, true
	}
	w := &statusWriter{header: http.Header{}}
	handler.ServeHTTP(w, req)
	if w.code == 0 || w.code == http.StatusOK {
		return healthpb.HealthCheckResponse_SERVING, true
	}
	return healthpb.HealthCheckResponse_NOT_SERVING, true
}

// statusWriter keeps the status of a response and discards the rest.
type statusWriter struct {
	header http.Header
	code   int
}

func (w *statusWriter) Header() http.Header { return w.header }
func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *statusWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return len(p), nil
}

// Check answers the status of the requested service, or NOT_FOUND.
func (h *HealthServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	st, ok := h.evaluate(ctx, req.GetService())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "bulwarkgrpc: unknown health service %q", req.GetService())
	}
	return &healthpb.HealthCheckResponse{Status: st}, nil
}

// List answers the status of every service: "", HealthLiveness,
// HealthReadiness and HealthStartup.
func (h *HealthServer) List(ctx context.Context, _ *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	out := &healthpb.HealthListResponse{Statuses: map[string]*healthpb.HealthCheckResponse{}}
	for _, name := range []string{"", HealthLiveness, HealthReadiness, HealthStartup} {
		st, _ := h.evaluate(ctx, name)
		out.Statuses[name] = &healthpb.HealthCheckResponse{Status: st}
	}
	return out, nil
}

// Watch sends the status of the requested service at once, then each time it
// changes, as seen every WatchInterval and at Drain, until the client goes
// away.
func (h *HealthServer) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	ctx := stream.Context()
	last := healthpb.HealthCheckResponse_ServingStatus(-1)
	drained := h.drained
	for {
		st, _ := h.evaluate(ctx, req.GetService())
		if st != last {
			if err := stream.Send(&healthpb.HealthCheckResponse{Status: st}); err != nil {
				return err
			}
			last = st
		}
		t := h.clk.NewTimer(h.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return status.FromContextError(ctx.Err()).Err()
		case <-drained:
			t.Stop()
			drained = nil // once
		case <-t.C():
		}
	}
}

// ProbeConfig configures the Probe that HealthProbe returns.
type ProbeConfig struct {
	// Service is the service name to check; "" is the server as a whole.
	Service string
	// DialOptions are the options of the connection to each endpoint. If
	// nil, insecure transport credentials (plaintext).
	DialOptions []grpc.DialOption
}

// HealthProbe returns a healthcheck.Probe that calls grpc.health.v1's Check
// on the endpoint's Addr and passes when the answer is SERVING. Each probe
// opens a connection and closes it, so that a probe sees what a new client
// would, and ends when its context does (the checker's probe timeout). The
// probe's error names the endpoint and the status or the call's error.
func HealthProbe(cfg ProbeConfig) healthcheck.Probe {
	opts := cfg.DialOptions
	if opts == nil {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	service := cfg.Service
	return func(ctx context.Context, ep bulwark.Endpoint) error {
		cc, err := grpc.NewClient("passthrough:///"+ep.Addr, opts...)
		if err != nil {
			return fmt.Errorf("bulwarkgrpc: health probe of %s: %w", ep.Addr, err)
		}
		defer cc.Close()
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			return fmt.Errorf("bulwarkgrpc: health probe of %s: %w", ep.Addr, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("bulwarkgrpc: health probe of %s: %s", ep.Addr, resp.GetStatus())
		}
		return nil
	}
}
