package bulwarkgrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	gbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/outlier"
)

// BalancerName is the name of a Builder whose BuilderConfig.Name is empty:
// the name that service configs select it by.
const BalancerName = "bulwark"

// BuilderConfig configures a Builder: what a service config cannot say.
type BuilderConfig struct {
	// Name is the policy's name in service configs. If empty, BalancerName.
	Name string
	// Zone is this client's zone or fault domain: picks stay among the
	// endpoints of that zone (see SetEndpoint) while enough of them are
	// eligible, as balancer.Config.Zone says. If empty, zones are ignored.
	Zone string
	// Outliers, if not nil, configures passive outlier ejection for each
	// connection: every call's outcome is recorded, and endpoints that fail
	// are ejected for a while, as outlier.Detector does, one
	// detector per connection. Its Clock and Observer are the Builder's; its
	// Listener is ignored (the detector reports to the connection's
	// balancer).
	Outliers *outlier.Config
	// Clock is the time source for slow start, Peak-EWMA, outlier ejection
	// and call latencies. If nil, the wall clock.
	Clock bulwark.Clock
	// Observer receives the events of each connection's balancer.Balancer
	// and outlier detector. If nil, no events and no cost.
	Observer bulwark.Observer
}

// Builder is a grpc-go balancer.Builder that picks with bulwark's balancer:
// round robin, least request, Peak-EWMA or bounded consistent hashing on a
// metadata key, with zones, slow start and outlier ejection. Each endpoint of
// the resolver gets a pick_first child (grpc-go's endpointsharding), and the
// resolver's endpoints are the bulwark balancer's members; grpc-go's
// connectivity is a judge of theirs: an endpoint is eligible while its child
// is READY, and pending until it first is, so that the endpoints of a new
// connection start at full weight as they connect, and one that reconnects
// after a failure ramps up under slow start. While no endpoint is READY,
// picks wait or fail as grpc-go's own policies do.
//
// Select it in the service config, after Register:
//
//	{"loadBalancingConfig": [{"bulwark": {"algorithm": "peak_ewma"}}]}
//
// The JSON object takes "algorithm" ("round_robin", the default,
// "least_request", "peak_ewma", "consistent_hash" or "random"),
// "hashHeader" (the outgoing metadata key whose first value is the
// consistent-hash key; a call without it has the key ""), "loadFactor",
// "virtualNodes", "slowStart" and "decayTime" (durations such as "10s"),
// "activeRequestBias", "minLocalShare" and "panicThreshold", with the meaning
// and defaults of the fields of balancer.Config of the same names, except
// that panic mode is off unless "panicThreshold" is set: an endpoint that is
// not READY cannot take a call, so a pick in panic mode that lands on one
// picks again, and after three picks the call goes round robin over the
// READY endpoints.
//
// A call retried by the ClientInterceptor carries its balancer.Tried, so
// that each attempt goes to an endpoint the call has not tried yet where one
// is READY (for consistent hashing, to the key's next owner).
//
// A Builder is safe for concurrent use; the balancers it builds belong to
// their connections. Use NewBuilder; the zero Builder is not usable.
type Builder struct {
	name     string
	zone     string
	outliers *outlier.Config
	clk      bulwark.Clock
	obs      bulwark.Observer
}

var (
	_ gbalancer.Builder      = (*Builder)(nil)
	_ gbalancer.ConfigParser = (*Builder)(nil)
)

// NewBuilder returns a Builder for cfg, or an error wrapping
// ErrInvalidConfig when cfg.Outliers is invalid.
func NewBuilder(cfg BuilderConfig) (*Builder, error) {
	b := &Builder{name: cfg.Name, zone: cfg.Zone, clk: clockOrWall(cfg.Clock), obs: cfg.Observer}
	if b.name == "" {
		b.name = BalancerName
	}
	if cfg.Outliers != nil {
		oc := *cfg.Outliers
		if _, err := outlier.New(oc); err != nil {
			return nil, fmt.Errorf("%w: Outliers: %w", ErrInvalidConfig, err)
		}
		b.outliers = &oc
	}
	return b, nil
}

// Register registers b with grpc-go under b.Name(), so that service configs
// can select it. grpc-go's registry is global and not safe for concurrent
// use: call Register from main (or a test's setup) before creating clients,
// once per name; a later registration under the same name replaces it.
// Nothing in this package registers a builder by itself.
func Register(b *Builder) {
	gbalancer.Register(b)
}

// Name returns the name that service configs select the builder by.
func (b *Builder) Name() string { return b.name }

// lbConfig is the parsed JSON configuration of one connection's balancer.
type lbConfig struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	Algorithm         string   `json:"algorithm,omitempty"`
	HashHeader        string   `json:"hashHeader,omitempty"`
	LoadFactor        float64  `json:"loadFactor,omitempty"`
	VirtualNodes      int      `json:"virtualNodes,omitempty"`
	SlowStart         duration `json:"slowStart,omitempty"`
	DecayTime         duration `json:"decayTime,omitempty"`
	ActiveRequestBias float64  `json:"activeRequestBias,omitempty"`
	MinLocalShare     float64  `json:"minLocalShare,omitempty"`
	PanicThreshold    float64  `json:"panicThreshold,omitempty"`

	algo balancer.Algorithm
}

// duration reads a JSON string such as "10s".
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

// ParseConfig parses the policy's JSON configuration, and checks it by
// building a bulwark balancer with it. It returns an error wrapping
// ErrInvalidConfig for unknown fields or an unknown algorithm, and the
// balancer's error for values it refuses.
func (b *Builder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg := &lbConfig{}
	if len(js) > 0 && string(js) != "null" {
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(cfg); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalidConfig, b.name, err)
		}
	}
	found := cfg.Algorithm == ""
	for a := balancer.RoundRobin; a <= balancer.Random; a++ {
		if a.String() == cfg.Algorithm {
			cfg.algo, found = a, true
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: %s: unknown algorithm %q", ErrInvalidConfig, b.name, cfg.Algorithm)
	}
	if _, err := balancer.New(b.coreConfig(cfg)); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, b.name, err)
	}
	return cfg, nil
}

// coreConfig is the bulwark balancer's Config for cfg.
func (b *Builder) coreConfig(cfg *lbConfig) balancer.Config {
	return balancer.Config{
		Name:              b.name,
		Algorithm:         cfg.algo,
		Zone:              b.zone,
		MinLocalShare:     cfg.MinLocalShare,
		PanicThreshold:    panicThreshold(cfg.PanicThreshold),
		SlowStart:         time.Duration(cfg.SlowStart),
		ActiveRequestBias: cfg.ActiveRequestBias,
		DecayTime:         time.Duration(cfg.DecayTime),
		LoadFactor:        cfg.LoadFactor,
		VirtualNodes:      cfg.VirtualNodes,
		Clock:             b.clk,
		Observer:          b.obs,
	}
}

// panicThreshold is the balancer's PanicThreshold for the JSON's value:
// off unless set, since an endpoint that is not READY cannot take a call.
func panicThreshold(v float64) float64 {
	if v == 0 {
		return -1
	}
	return v
}

// Build returns the balancer of one connection.
func (b *Builder) Build(cc gbalancer.ClientConn, opts gbalancer.BuildOptions) gbalancer.Balancer {
	l := &lb{ClientConn: cc, b: b, ready: map[string]bool{}}
	l.child = endpointsharding.NewBalancer(l, opts, gbalancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return l
}

// lb is the balancer of one connection. It embeds the ClientConn to see the
// states that its endpointsharding child sends up.
type lb struct {
	gbalancer.ClientConn
	b     *Builder
	child gbalancer.Balancer

	mu       sync.Mutex // guards the fields below
	cfg      *lbConfig
	core     *balancer.Balancer
	judge    *connectivityJudge
	detector *outlier.Detector
	eps      map[string]bulwark.Endpoint // the resolver's endpoints, by Addr
	ready    map[string]bool             // endpoints whose child is READY
	closed   bool
}

// connectivityJudge is the balancer.Judge of grpc-go's connectivity: an
// endpoint is healthy while its pick_first child is READY, and pending until
// it first is, so that the endpoints of a new connection start at full
// weight as they connect.
type connectivityJudge struct {
	mu      sync.Mutex // guards report's calls, so that none comes after SetEndpoints dropped its endpoint
	members map[string]bool
	report  func(bulwark.Endpoint, bool)
}

var _ balancer.Judge = (*connectivityJudge)(nil)

func (j *connectivityJudge) Attach(report func(bulwark.Endpoint, bool)) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.report != nil {
		return false, errors.New("bulwarkgrpc: judge attached twice")
	}
	j.report = report
	return true, nil
}

func (j *connectivityJudge) SetEndpoints(eps []bulwark.Endpoint) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.members = make(map[string]bool, len(eps))
	for _, ep := range eps {
		j.members[ep.Addr] = true
	}
	return nil
}

// set reports ep's connectivity.
func (j *connectivityJudge) set(ep bulwark.Endpoint, ready bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.members[ep.Addr] && j.report != nil {
		j.report(ep, ready)
	}
}

// SetEndpoint returns ep with the zone and weight that the bulwark balancer
// gives it (see bulwark.Endpoint), for resolvers that know them.
func SetEndpoint(ep resolver.Endpoint, zone string, weight int) resolver.Endpoint {
	ep.Attributes = ep.Attributes.WithValue(endpointInfoKey{}, endpointInfo{zone: zone, weight: weight})
	return ep
}

type endpointInfoKey struct{}

type endpointInfo struct {
	zone   string
	weight int
}

// endpointOf returns the bulwark endpoint of a resolver endpoint: its first
// address is its identity.
func endpointOf(ep resolver.Endpoint) (bulwark.Endpoint, bool) {
	if len(ep.Addresses) == 0 {
		return bulwark.Endpoint{}, false
	}
	out := bulwark.Endpoint{Addr: ep.Addresses[0].Addr}
	if info, ok := ep.Attributes.Value(endpointInfoKey{}).(endpointInfo); ok {
		out.Zone, out.Weight = info.zone, max(info.weight, 0)
	}
	return out, true
}

func (l *lb) UpdateClientConnState(ccs gbalancer.ClientConnState) error {
	cfg, ok := ccs.BalancerConfig.(*lbConfig)
	if !ok || cfg == nil {
		cfg = &lbConfig{}
	}
	eps := make([]bulwark.Endpoint, 0, len(ccs.ResolverState.Endpoints))
	byAddr := make(map[string]bulwark.Endpoint, len(ccs.ResolverState.Endpoints))
	for _, rep := range ccs.ResolverState.Endpoints {
		ep, ok := endpointOf(rep)
		if _, dup := byAddr[ep.Addr]; !ok || dup {
			continue
		}
		eps = append(eps, ep)
		byAddr[ep.Addr] = ep
	}

	l.mu.Lock()
	if l.core == nil || *l.cfg != *cfg {
		if err := l.rebuildLocked(cfg); err != nil {
			l.mu.Unlock()
			return err
		}
	}
	err := l.core.Update(eps)
	if err == nil {
		l.eps = byAddr
		for addr := range l.ready {
			if _, ok := byAddr[addr]; !ok {
				delete(l.ready, addr)
			}
		}
		for addr := range l.ready {
			l.judge.set(byAddr[addr], true) // an endpoint that stays keeps its verdict; a new one is pending
		}
	}
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("bulwarkgrpc: %w", err)
	}
	return l.child.UpdateClientConnState(gbalancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(ccs.ResolverState),
	})
}

// rebuildLocked makes a new bulwark balancer for cfg; the endpoints' states
// start afresh, the READY ones healthy.
func (l *lb) rebuildLocked(cfg *lbConfig) error {
	cc := l.b.coreConfig(cfg)
	judge := &connectivityJudge{}
	cc.Followers = []balancer.Follower{judge}
	var det *outlier.Detector
	if l.b.outliers != nil {
		oc := *l.b.outliers
		oc.Listener, oc.Clock, oc.Observer = nil, l.b.clk, l.b.obs
		d, err := outlier.New(oc)
		if err != nil {
			return fmt.Errorf("bulwarkgrpc: %w", err)
		}
		det = d
		cc.Followers = append(cc.Followers, det)
	}
	core, err := balancer.New(cc)
	if err != nil {
		return fmt.Errorf("bulwarkgrpc: %w", err)
	}
	l.closeCoreLocked()
	l.cfg, l.core, l.judge, l.detector = cfg, core, judge, det
	if det != nil {
		_ = det.Start(context.Background())
	}
	return nil
}

// closeCoreLocked stops the background work of the current bulwark balancer
// and outlier detector.
func (l *lb) closeCoreLocked() {
	if l.detector != nil {
		_ = l.detector.Close()
	}
	if l.core != nil {
		_ = l.core.Close()
	}
}

func (l *lb) ResolverError(err error) { l.child.ResolverError(err) }

func (l *lb) UpdateSubConnState(gbalancer.SubConn, gbalancer.SubConnState) {}

func (l *lb) ExitIdle() { l.child.ExitIdle() }

func (l *lb) Close() {
	l.child.Close()
	l.mu.Lock()
	l.closed = true
	l.closeCoreLocked()
	l.mu.Unlock()
}

// UpdateState receives the state of the endpointsharding child: the
// connectivity of each endpoint's pick_first child. It tells the bulwark
// balancer which endpoints are READY and publishes a picker over them.
func (l *lb) UpdateState(state gbalancer.State) {
	children := endpointsharding.ChildStatesFromPicker(state.Picker)
	l.mu.Lock()
	if l.closed || l.core == nil {
		l.mu.Unlock()
		l.ClientConn.UpdateState(state)
		return
	}
	pickers := make(map[string]gbalancer.Picker, len(children))
	var ready []gbalancer.Picker
	for _, ch := range children {
		ep, ok := endpointOf(ch.Endpoint)
		if !ok {
			continue
		}
		if known, ok := l.eps[ep.Addr]; ok {
			ep = known
		}
		isReady := ch.State.ConnectivityState == connectivity.Ready
		if isReady != l.ready[ep.Addr] {
			if isReady {
				l.ready[ep.Addr] = true
			} else {
				delete(l.ready, ep.Addr)
			}
			l.judge.set(ep, isReady)
		}
		if isReady {
			pickers[ep.Addr] = ch.State.Picker
			ready = append(ready, ch.State.Picker)
		}
	}
	core, hashHeader := l.core, l.cfg.HashHeader
	l.mu.Unlock()
	if len(ready) == 0 {
		l.ClientConn.UpdateState(state)
		return
	}
	l.ClientConn.UpdateState(gbalancer.State{
		ConnectivityState: connectivity.Ready,
		Picker:            &picker{core: core, pickers: pickers, ready: ready, hashHeader: hashHeader, clk: l.b.clk},
	})
}

// picker picks with the bulwark balancer among the READY endpoints.
type picker struct {
	core       *balancer.Balancer
	pickers    map[string]gbalancer.Picker // the READY children, by Addr
	ready      []gbalancer.Picker
	hashHeader string
	clk        bulwark.Clock
	next       atomic.Uint32
}

// maxPicks is how many picks of the bulwark balancer a gRPC pick tries
// before it falls back to round robin over the READY endpoints.
const maxPicks = 3

func (p *picker) Pick(info gbalancer.PickInfo) (gbalancer.PickResult, error) {
	key := ""
	if p.hashHeader != "" {
		if vs := metadata.ValueFromOutgoingContext(info.Ctx, p.hashHeader); len(vs) > 0 {
			key = vs[0]
		}
	}
	tr, _ := info.Ctx.Value(triedKey{}).(*tried)
	if tr == nil {
		// A Tried of this pick's own skips the endpoints that are not READY.
		tr = triedPool.Get().(*tried)
		defer func() {
			tr.t = balancer.Tried{}
			triedPool.Put(tr)
		}()
	}
	for range maxPicks {
		tr.mu.Lock()
		pk, err := p.core.Pick(key, &tr.t)
		tr.mu.Unlock()
		if err != nil {
			break
		}
		child := p.pickers[pk.Endpoint().Addr]
		if child == nil {
			// Not READY, as in panic mode, which picks among all.
			pk.Done(balancer.Result{Err: context.Canceled})
			continue
		}
		res, err := child.Pick(info)
		if err != nil {
			pk.Done(balancer.Result{Err: context.Canceled})
			return res, err
		}
		d := donePool.Get().(*done)
		d.pick, d.start, d.clk, d.ctx, d.inner, d.pool = pk, p.clk.Now(), p.clk, info.Ctx, res.Done, &donePool
		res.Done = d.fn
		return res, nil
	}
	// Fall back to round robin over the READY endpoints.
	child := p.ready[p.next.Add(1)%uint32(len(p.ready))]
	return child.Pick(info)
}

// done reports a call's outcome to the bulwark balancer. It is pooled, with
// its method value bound once, so that a pick allocates no closure.
type done struct {
	pick  balancer.Pick
	start time.Time
	clk   bulwark.Clock
	ctx   context.Context
	inner func(gbalancer.DoneInfo)
	fn    func(gbalancer.DoneInfo) // d.finish, bound once
	pool  *sync.Pool
}

var donePool = sync.Pool{New: func() any {
	d := &done{}
	d.fn = d.finish
	return d
}}

func (d *done) finish(info gbalancer.DoneInfo) {
	o := balancer.Result{Latency: d.clk.Since(d.start)}
	switch Classify(d.ctx, info.Err) {
	case bulwark.Neutral:
		o.Err = context.Canceled
	case bulwark.Failure:
		o.Err = info.Err
		o.Gateway = status.Code(info.Err) == codes.Unavailable
	}
	d.pick.Done(o)
	inner, pool := d.inner, d.pool
	*d = done{fn: d.fn}
	pool.Put(d)
	if inner != nil {
		inner(info)
	}
}

// tried is the balancer.Tried of a call, kept by the client interceptor in
// the call's context, so that a retry goes to an endpoint not tried yet where
// one is READY. Hedged attempts pick concurrently: they take turns.
type tried struct {
	mu sync.Mutex // guards t
	t  balancer.Tried
}

type triedKey struct{}

var triedPool = sync.Pool{New: func() any { return new(tried) }}
