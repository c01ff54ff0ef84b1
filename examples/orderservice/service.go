// Package orderservice is an order API built from bulwark alone: idempotent
// creates under the Idempotency-Key header, backed by a unique (tenant, key)
// constraint on the orders themselves (and, where the keys share the orders'
// PostgreSQL database, completed in the order's own transaction), state
// transitions that are compare-and-set on a version (strong consistency for
// writes), listings from a read model that may lag (eventual consistency for
// reads), orders partitioned by consistent hash of the customer, and a
// payment dependency called under bulwark.Compose(timeout, retry, timeout,
// breaker) with the idempotency key forwarded. Every API request
// authenticates with an API key, which names its tenant: a tenant sees only
// its own orders and keys. Under overload the service sheds: a rate limit per
// tenant, then an adaptive concurrency limit that refuses batch reports
// first and keeps one tenant from taking all of it (limits.go).
//
//	POST /orders                         create (Idempotency-Key required)
//	GET  /orders/{id}                    read, with ETag
//	POST /orders/{id}/pay|ship|cancel    transition (If-Match: the ETag)
//	GET  /orders?customer=…              listing from the read model
//	GET  /reports/summary                the tenant's orders by state (batch)
//	GET  /livez /readyz /startupz        the service's own health (no key)
//
// [New] builds a [Service] from a [Config]: a [Repository] for the orders
// ([MemoryRepository] or [PostgresRepository]), an idempotency.Store for the
// keys, the payment provider's URL and the limits. Command orderservice
// (cmd/orderservice) runs one; README.md tells the whole story.
package orderservice

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/consistenthash"
	"github.com/bulwark-go/bulwark/healthz"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/bulwark-go/bulwark/retry"
	"github.com/bulwark-go/bulwark/timeout"
	"github.com/jackc/pgx/v5"
)

// Config configures a Service.
type Config struct {
	// Name names this instance in events and logs. If empty, "orders".
	Name string
	// Repository stores the orders. Required; several instances may share
	// one.
	Repository Repository
	// Partitions is the number of partitions the repository was made with.
	// If zero, 8.
	Partitions int
	// IdempotencyStore keeps idempotency records. If nil, an in-memory
	// store of this instance (which Close closes).
	IdempotencyStore idempotency.Store
	// CompleteInTx, when the idempotency keys live in the orders' own
	// PostgreSQL database, completes a create's key in the transaction that
	// inserts its order: set it to the *pgstore.Store that is also
	// IdempotencyStore, with a *PostgresRepository on the same database.
	// The order and its key's completion then commit together, and that
	// transaction checks the key's fencing token, so that a run whose lease
	// was taken over cannot commit its order (it is answered 409). If nil,
	// the key is completed once the response is written, and a run that
	// finds its key already used by an order answers with that order.
	CompleteInTx TxCompleter
	// APIKeys maps each API key to the tenant it acts for. Every /orders
	// request must carry one, as "Authorization: Bearer <key>", and reads
	// and changes only its tenant's orders; a request without a valid key
	// is refused with 401. Keys are 16 to 256 visible ASCII characters, and
	// tenants 1 to 64 bytes of text; several keys may share a tenant.
	// Required: at least one key.
	APIKeys map[string]string
	// Lease is how long a create holds its idempotency key before a
	// duplicate may take it over. If zero, 10 s.
	Lease time.Duration
	// PaymentURL is the payment provider's base URL. Required.
	PaymentURL string
	// PaymentClient sends payment requests. If nil, a plain client: each
	// attempt is bounded by PaymentAttemptTimeout.
	PaymentClient *http.Client
	// PaymentBudget is the retry budget for payment calls, which several
	// instances of the service in one process may share. If nil, one of the
	// instance's own.
	PaymentBudget *retry.Budget
	// PaymentTimeout bounds a charge, its retries and their backoff
	// included. If zero, 5 s.
	PaymentTimeout time.Duration
	// PaymentAttemptTimeout bounds each attempt of a charge. If zero, 2 s.
	PaymentAttemptTimeout time.Duration

	// Limiter sheds the API's requests when the service has more than it
	// can do (the health endpoints are never shed): a *limit.Limiter or a
	// *limit.Bulkhead, given each request's criticality (Rules) and its API
	// key's tenant. A refused request is answered 503 with Retry-After, or
	// 429 when its tenant holds more than its share of the limit. If nil,
	// an adaptive *limit.Limiter named Name, with limit.Config's defaults
	// (no tuning: the limit follows the latency; half of it at most for one
	// tenant) but a Headroom of DefaultHeadroom: three tenths of the limit
	// kept from normal requests for critical ones, twice that from
	// sheddable ones.
	Limiter limit.Acquirer
	// NoShedding admits every request however loaded the service is: no
	// Limiter at all. It is for tests about something else, and for
	// measuring what the Limiter saves.
	NoShedding bool
	// Rules give each request its criticality for the Limiter: the first
	// that matches wins, and a request that none matches is normal. If
	// nil, the rules of DefaultRules.
	Rules []limit.Rule
	// RateLimit bounds the requests of each tenant to this instance
	// (GCRA: Rate per Period, bursts of Burst): a tenant over it is
	// answered 429 with Retry-After and the RateLimit and RateLimit-Policy
	// headers. It is checked before the Limiter, so that a tenant's excess
	// takes no slot. If Rate is zero, there is no rate limit. Its Name,
	// Clock and Observer, if unset, are the service's.
	RateLimit ratelimit.Config
	// ReportTimeout bounds the repository query of a report; a report that
	// overruns it is answered 503 with Retry-After. If zero, 5 s.
	ReportTimeout time.Duration
	// IdempotencyWait is how long a duplicate request that finds its key in
	// flight waits for the first to finish before it is answered 409. If
	// zero, 2 s; negative means no wait.
	IdempotencyWait time.Duration
	// ReadModelInterval is how often the read model catches up. If zero,
	// 200 ms.
	ReadModelInterval time.Duration
	// Clock is the time source. If nil, the wall clock.
	Clock bulwark.Clock
	// Observer receives every component's events. If nil, none.
	Observer bulwark.Observer
	// Logger logs requests that fail. If nil, slog.Default().
	Logger *slog.Logger
}

// TxCompleter completes an idempotency key inside a PostgreSQL transaction,
// as *pgstore.Store does: it stores value as the key's result, kept for the
// lease's retention, if and only if tx commits, and returns an error wrapping
// idempotency.ErrFenced if the lease's token no longer holds the key.
type TxCompleter interface {
	CompleteTx(ctx context.Context, tx pgx.Tx, lease *idempotency.Lease, value []byte) error
}

// Service is one instance of the order API. Use New, then Start; Close stops
// it. A Service is safe for concurrent use.
type Service struct {
	cfg        Config
	repo       Repository
	pg         *PostgresRepository // the repository, when CompleteInTx is set
	ring       *consistenthash.Ring
	engine     *idempotency.Engine
	ownStore   *idempotency.MemoryStore
	readModel  *ReadModel
	payments   *paymentClient
	breaker    *breaker.Breaker
	limiter    limit.Acquirer                  // nil with NoShedding
	shed       func(http.Handler) http.Handler // nil with NoShedding
	rate       func(http.Handler) http.Handler // nil without a RateLimit
	reports    *timeout.Policy
	callers    callers
	health     *healthz.Service
	handler    http.Handler
	clk        bulwark.Clock
	log        *slog.Logger
	stop       context.CancelFunc
	wg         sync.WaitGroup
	closeOnce  sync.Once
	closeError error
}

// New builds a Service from cfg. It returns an error if Repository,
// PaymentURL or APIKeys is missing, an API key or a tenant is malformed, a
// duration is negative, a rule or the RateLimit is invalid, or CompleteInTx
// is set without a *PostgresRepository or is not the IdempotencyStore.
func New(cfg Config) (*Service, error) {
	if cfg.Repository == nil {
		return nil, errors.New("orderservice: Repository is required")
	}
	if cfg.PaymentURL == "" {
		return nil, errors.New("orderservice: PaymentURL is required")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Lease", cfg.Lease}, {"PaymentTimeout", cfg.PaymentTimeout}, {"PaymentAttemptTimeout", cfg.PaymentAttemptTimeout}, {"ReportTimeout", cfg.ReportTimeout}} {
		if d.v < 0 {
			return nil, fmt.Errorf("orderservice: %s %v is negative", d.name, d.v)
		}
	}
	if cfg.Name == "" {
		cfg.Name = "orders"
	}
	if cfg.Lease == 0 {
		cfg.Lease = 10 * time.Second
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 8
	}
	if cfg.ReadModelInterval == 0 {
		cfg.ReadModelInterval = 200 * time.Millisecond
	}
	if cfg.PaymentTimeout == 0 {
		cfg.PaymentTimeout = 5 * time.Second
	}
	if cfg.PaymentAttemptTimeout == 0 {
		cfg.PaymentAttemptTimeout = 2 * time.Second
	}
	if cfg.ReportTimeout == 0 {
		cfg.ReportTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.IdempotencyWait == 0:
		cfg.IdempotencyWait = 2 * time.Second
	case cfg.IdempotencyWait < 0:
		cfg.IdempotencyWait = 0
	}
	s := &Service{cfg: cfg, repo: cfg.Repository, clk: clockOrWall(cfg.Clock), log: cfg.Logger}
	if cfg.CompleteInTx != nil {
		pg, ok := cfg.Repository.(*PostgresRepository)
		if !ok {
			return nil, errors.New("orderservice: CompleteInTx needs a *PostgresRepository Repository")
		}
		if st, ok := cfg.CompleteInTx.(idempotency.Store); !ok || st != cfg.IdempotencyStore {
			return nil, errors.New("orderservice: CompleteInTx must be the IdempotencyStore")
		}
		s.pg = pg
	}
	var err error
	if s.callers, err = newCallers(cfg.APIKeys); err != nil {
		return nil, err
	}

	nodes := make([]consistenthash.Node, cfg.Partitions)
	for i := range nodes {
		nodes[i] = consistenthash.Node{Name: "p" + strconv.Itoa(i)}
	}
	ring, err := consistenthash.NewRing(consistenthash.RingConfig{Nodes: nodes})
	if err != nil {
		return nil, fmt.Errorf("orderservice: partitions: %w", err)
	}
	s.ring = ring

	store := cfg.IdempotencyStore
	if store == nil {
		ms, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{Clock: cfg.Clock})
		if err != nil {
			return nil, err
		}
		store, s.ownStore = ms, ms
	}
	s.engine, err = idempotency.New(idempotency.Config{
		Store: store, Name: cfg.Name, Lease: cfg.Lease, RetryAfter: time.Second, Wait: cfg.IdempotencyWait,
		Clock: cfg.Clock, Observer: cfg.Observer,
	})
	if err != nil {
		return nil, err
	}

	budget := cfg.PaymentBudget
	if budget == nil {
		if budget, err = retry.NewBudget(retry.BudgetConfig{Clock: cfg.Clock}); err != nil {
			return nil, err
		}
	}
	rp, err := retry.New(retry.Config{
		// An open breaker fails the call at once (its wait is longer than
		// MaxRetryAfter), so that requests do not pile up behind it.
		Name: "payments", MaxAttempts: 4, MaxRetryAfter: 250 * time.Millisecond,
		Backoff: retry.Backoff{Base: 20 * time.Millisecond, Cap: 500 * time.Millisecond},
		Budget:  budget, Clock: cfg.Clock, Observer: cfg.Observer,
	})
	if err != nil {
		return nil, err
	}
	s.breaker, err = breaker.New(breaker.Config{
		Name: "payments", FailureRate: 0.5, WindowCalls: 20, MinCalls: 10,
		OpenDuration: time.Second, MaxOpenDuration: 8 * time.Second, OpenJitter: 0.2,
		Clock: cfg.Clock, Observer: cfg.Observer,
	})
	if err != nil {
		return nil, err
	}
	guard, err := s.paymentGuard(rp)
	if err != nil {
		return nil, err
	}
	client := cfg.PaymentClient
	if client == nil {
		client = &http.Client{}
	}
	s.payments = &paymentClient{
		base: strings.TrimRight(cfg.PaymentURL, "/"), http: client, clk: s.clk, guard: guard,
	}
	if err := s.limits(); err != nil {
		return nil, err
	}

	s.readModel = NewReadModel(s.repo, cfg.Clock)
	s.health, err = healthz.New(healthz.Config{
		Name: cfg.Name, Clock: cfg.Clock, Observer: cfg.Observer,
		Ready: []healthz.Check{{
			Name: "repository", Type: "datastore", Timeout: time.Second,
			Run: func(ctx context.Context) error { _, err := s.repo.Count(ctx); return err },
		}, {
			// The payment provider is optional: orders can still be created
			// and read while it is away, so readiness only degrades.
			Name: "payments", Optional: true,
			Run: func(context.Context) error {
				if st := s.breaker.State(); st != breaker.Closed {
					return fmt.Errorf("payments circuit is %s", st)
				}
				return nil
			},
		}},
	})
	if err != nil {
		return nil, err
	}
	s.handler, err = s.routes()
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Handler returns the service's HTTP handler.
func (s *Service) Handler() http.Handler { return s.handler }

// Start starts the read model's refresh loop and the own store's janitor;
// Close stops them.
func (s *Service) Start(ctx context.Context) {
	ctx, s.stop = context.WithCancel(ctx)
	if s.ownStore != nil {
		_ = s.ownStore.Start(ctx) // only frees expired records early
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.readModel.Run(ctx, s.cfg.ReadModelInterval)
	}()
	s.health.MarkStarted()
}

// Drain makes readiness answer 503 at once, so that load balancers stop
// sending new requests before the server shuts down.
func (s *Service) Drain() { s.health.Drain() }

// Close stops the background work and the service's own store, and waits.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		if s.stop != nil {
			s.stop()
		}
		s.wg.Wait()
		if s.ownStore != nil {
			s.closeError = s.ownStore.Close()
		}
	})
	return s.closeError
}

// ReadModel returns the service's read model (for tests and the tour).
func (s *Service) ReadModel() *ReadModel { return s.readModel }

// BreakerState returns the state of the payments circuit breaker.
func (s *Service) BreakerState() breaker.State { return s.breaker.State() }

func (s *Service) routes() (http.Handler, error) {
	create, err := idempotency.Middleware(idempotency.HTTPConfig{
		Engine: s.engine, Tenant: requestTenant, MaxRequestBody: maxBody,
		// Only a created order is kept for replay: a refused request (bad
		// JSON, an invalid order) leaves its key free, so the corrected
		// request may use it.
		Cacheable: func(_ context.Context, status int) bool { return status >= 200 && status < 300 },
	})
	if err != nil {
		return nil, err
	}
	// Transitions are guarded by If-Match; a key is welcome (a retried pay
	// then gets its first answer replayed) but not required.
	transition, err := idempotency.Middleware(idempotency.HTTPConfig{
		Engine: s.engine, Tenant: requestTenant, AllowMissingKey: true, MaxRequestBody: maxBody,
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("POST /orders", s.api(create(http.HandlerFunc(s.createOrder))))
	mux.Handle("GET /orders/{id}", s.api(http.HandlerFunc(s.getOrder)))
	mux.Handle("POST /orders/{id}/{action}", s.api(transition(http.HandlerFunc(s.transition))))
	mux.Handle("GET /orders", s.api(http.HandlerFunc(s.listOrders)))
	mux.Handle("GET /reports/summary", s.api(http.HandlerFunc(s.summary)))
	mux.Handle("/livez", s.health.Livez())
	mux.Handle("/readyz", s.health.Readyz())
	mux.Handle("/startupz", s.health.Startupz())
	return withRequestID(mux), nil
}

// maxBody bounds a request body, in bytes: an order of 100 items is well
// under it.
const maxBody = 64 << 10

func (s *Service) createOrder(w http.ResponseWriter, r *http.Request) {
	if !isJSON(r.Header.Get("Content-Type")) {
		w.Header().Set("Accept-Post", "application/json")
		problem(w, r, http.StatusUnsupportedMediaType, "unsupported media type", "An order is sent as application/json.")
		return
	}
	var req NewOrderRequest
	if err := decodeJSON(w, r, &req); err != nil {
		problem(w, r, http.StatusBadRequest, "malformed order", err.Error())
		return
	}
	amount, err := req.validate()
	if err != nil {
		problem(w, r, http.StatusUnprocessableEntity, "invalid order", err.Error())
		return
	}
	part, err := s.partition(req.Customer)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.clk.Now().UTC()
	o := Order{
		ID: strconv.Itoa(part) + "-" + randomID(), Tenant: requestTenant(r), IdempotencyKey: idempotencyKey(r),
		Customer: req.Customer, Items: req.Items, AmountCents: amount, Currency: req.Currency,
		State: Created, Version: 1, Partition: part, CreatedAt: now, UpdatedAt: now,
	}
	var used *KeyUsedError
	switch err := s.create(r, o); {
	case errors.As(err, &used):
		// The second line of defence: an earlier run with this key made
		// the order (and died, or lost its lease, before the key was
		// completed). Answer with that order instead of making another.
		if !req.sameRequest(used.Order) {
			problem(w, r, http.StatusUnprocessableEntity, "idempotency key reused",
				"This Idempotency-Key was used with a different order.")
			return
		}
		s.log.InfoContext(r.Context(), "order recovered from its idempotency key",
			"order", used.Order.ID, "request_id", requestID(r.Context()))
		o = used.Order
	case err != nil:
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/orders/"+o.ID)
	writeOrder(w, http.StatusCreated, o)
}

// create stores a new order: within the transaction that completes its
// idempotency key when CompleteInTx is set and the request holds a lease,
// else on its own.
func (s *Service) create(r *http.Request, o Order) error {
	ctx := r.Context()
	lease := idempotency.LeaseFromContext(ctx)
	if s.pg == nil || lease == nil {
		return s.repo.Create(ctx, o)
	}
	// The response is known before the order is stored: it is stored with
	// the key, as the middleware would have recorded it.
	body := orderJSON(o)
	resp, err := idempotency.EncodeResponse(http.StatusCreated, http.Header{
		"Content-Type": {"application/json"}, "Etag": {etag(o)}, "Location": {"/orders/" + o.ID},
	}, body)
	if err != nil {
		return err
	}
	return s.pg.createTx(ctx, o, func(tx pgx.Tx) error {
		return s.cfg.CompleteInTx.CompleteTx(ctx, tx, lease, resp)
	})
}

// load returns the order id of the request's tenant, or ErrNotFound: another
// tenant's order is not found, so that its existence does not leak.
func (s *Service) load(r *http.Request, id string) (Order, error) {
	o, err := s.repo.Get(r.Context(), id)
	if err != nil {
		return Order{}, err
	}
	if o.Tenant != requestTenant(r) {
		return Order{}, ErrNotFound
	}
	return o, nil
}

func (s *Service) getOrder(w http.ResponseWriter, r *http.Request) {
	o, err := s.load(r, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if inm := r.Header.Values("If-None-Match"); len(inm) > 0 {
		match, err := matchETag(inm, etag(o), false)
		if err != nil {
			problem(w, r, http.StatusBadRequest, "malformed If-None-Match", err.Error())
			return
		}
		if match {
			w.Header().Set("ETag", etag(o))
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	writeOrder(w, http.StatusOK, o)
}

// transition moves an order to its next state as one compare-and-set on its
// version. With If-Match, a stale version is refused with 412 before anything
// happens; a race lost between read and write is refused with 409.
func (s *Service) transition(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if _, ok := transitions[action]; !ok {
		problem(w, r, http.StatusNotFound, "unknown action", "The actions are pay, ship and cancel.")
		return
	}
	ctx := r.Context()
	o, err := s.load(r, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if im := r.Header.Values("If-Match"); len(im) > 0 {
		match, err := matchETag(im, etag(o), true)
		if err != nil {
			problem(w, r, http.StatusBadRequest, "malformed If-Match", err.Error())
			return
		}
		if !match {
			w.Header().Set("ETag", etag(o))
			problem(w, r, http.StatusPreconditionFailed, "order changed", "If-Match does not match the order's ETag "+etag(o)+".")
			return
		}
	}
	// An order is paid in two steps: the state moves to paid with no
	// payment id (payment pending), then the charge is recorded. While a
	// payment is pending, neither ship nor cancel may move the order, and pay
	// resumes it: the charge is idempotent under a key derived from the
	// order, so resuming never charges twice, and an instance that died
	// between the two steps leaves nothing stuck.
	pending := o.State == Paid && o.PaymentID == ""
	updated := o
	if !(action == "pay" && pending) {
		to, err := next(o.State, action)
		if err == nil && pending {
			err = fmt.Errorf("%w: the payment of the order is pending", ErrBadTransition)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		updated.State, updated.Version, updated.UpdatedAt = to, o.Version+1, s.clk.Now().UTC()
		if err := s.repo.Update(ctx, updated); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if action == "pay" {
		// Once the state has moved, the outcome is recorded whatever the
		// client does: the charge runs to its end even if the client
		// leaves, so that a disconnect never loses a charge.
		// The payment guard bounds the charge (PaymentTimeout).
		rec := context.WithoutCancel(ctx)
		charge, err := s.payments.charge(rec, "order-"+o.ID+"-pay", updated)
		if err != nil {
			// Only a decline says for sure that nothing was charged: the
			// order goes back to created. After any other failure (the
			// provider down, a timeout) the charge may or may not have
			// happened, so the payment stays pending, and pay resumes it
			// under the same key.
			if errors.Is(err, errPaymentDeclined) {
				back := updated
				back.State, back.Version, back.UpdatedAt = Created, updated.Version+1, s.clk.Now().UTC()
				if cerr := s.repo.Update(rec, back); cerr != nil && !errors.Is(cerr, ErrVersionConflict) {
					s.log.ErrorContext(ctx, "compensating a declined payment", "order", o.ID,
						"request_id", requestID(ctx), "error", cerr)
				}
			} else if !errors.Is(err, breaker.ErrOpen) {
				err = fmt.Errorf("%w: %w", errPaymentUnconfirmed, err)
			}
			s.fail(w, r, err)
			return
		}
		paid := updated
		paid.PaymentID, paid.Version, paid.UpdatedAt = charge.ID, updated.Version+1, s.clk.Now().UTC()
		if err := s.repo.Update(rec, paid); err != nil {
			// Only a concurrent resume of the same payment can get here.
			s.fail(w, r, err)
			return
		}
		updated = paid
	}
	writeOrder(w, http.StatusOK, updated)
}

func (s *Service) listOrders(w http.ResponseWriter, r *http.Request) {
	customer := r.URL.Query().Get("customer")
	if !validText(customer, maxCustomer) {
		problem(w, r, http.StatusBadRequest, "customer required", "List with GET /orders?customer=<customer>.")
		return
	}
	l := s.readModel.List(requestTenant(r), customer)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Read-Model-As-Of", strconv.FormatInt(l.AsOf, 10))
	w.Header().Set("X-Read-Model-Age-Ms", strconv.FormatInt(l.AgeMillis, 10))
	_ = json.NewEncoder(w).Encode(l)
}

// partition returns the partition that owns customer's orders.
func (s *Service) partition(customer string) (int, error) {
	name, err := s.ring.Get(customer)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimPrefix(name, "p"))
}

// errPaymentUnconfirmed wraps a failed charge whose outcome is unknown.
var errPaymentUnconfirmed = errors.New("payment not confirmed")

// fail maps an error to its HTTP answer. Clients get a problem with a fixed
// text and the request id; an unexpected error's own text, which may come
// from the database, goes to the log only.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		problem(w, r, http.StatusNotFound, "order not found", "There is no order with this id.")
	case errors.Is(err, ErrVersionConflict):
		problem(w, r, http.StatusConflict, "order changed concurrently", "Another request changed the order first; read it again.")
	case errors.Is(err, ErrBadTransition):
		problem(w, r, http.StatusConflict, "transition not allowed", err.Error()) // names the action and the state
	case errors.Is(err, breaker.ErrOpen):
		w.Header().Set("Retry-After", "1")
		problem(w, r, http.StatusServiceUnavailable, "payments unavailable",
			"The payment provider is failing; the payment is pending: pay again later to resume it.")
	case errors.Is(err, errPaymentDeclined):
		problem(w, r, http.StatusPaymentRequired, "payment declined", "The payment provider declined the charge.")
	case errors.Is(err, idempotency.ErrFenced), errors.Is(context.Cause(r.Context()), idempotency.ErrLeaseLost):
		// The run lost its key to a retry of the same request, which
		// answers in its stead; nothing of this run was kept.
		w.Header().Set("Retry-After", "1")
		problem(w, r, http.StatusConflict, "request superseded",
			"A retry of this request took over its Idempotency-Key; retry to get its answer.")
	case r.Context().Err() != nil:
		problem(w, r, http.StatusServiceUnavailable, "request canceled", "The request was canceled before it finished.")
	case errors.Is(err, errPaymentUnconfirmed):
		s.log.WarnContext(r.Context(), "payment not confirmed", "path", r.URL.Path, "request_id", requestID(r.Context()), "error", err)
		problem(w, r, http.StatusBadGateway, "payment not confirmed",
			"The payment provider did not confirm the charge; the payment is pending: pay again to resume it.")
	default:
		s.log.ErrorContext(r.Context(), "request failed", "path", r.URL.Path, "request_id", requestID(r.Context()), "error", err)
		problem(w, r, http.StatusInternalServerError, "internal error",
			"The request failed on our side. Quote the request id when you report it.")
	}
}

func etag(o Order) string { return `"v` + strconv.FormatInt(o.Version, 10) + `"` }

// orderJSON is the body of an answer with o.
func orderJSON(o Order) []byte {
	b, _ := json.Marshal(o) // an Order always encodes
	return append(b, '\n')
}

func writeOrder(w http.ResponseWriter, status int, o Order) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ETag", etag(o))
	w.WriteHeader(status)
	_, _ = w.Write(orderJSON(o))
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
