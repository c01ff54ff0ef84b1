package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/bulwark-go/bulwark/examples/orderservice"
	"github.com/bulwark-go/bulwark/idempotency"
)

// The tour's order-service instances are separate processes, so that one can
// be killed with SIGKILL. They share their orders and idempotency keys as a
// fleet shares PostgreSQL and Redis; so that the tour needs nothing
// installed, the tour process keeps both in memory and serves them to the
// instances over loopback HTTP (stateHandler), and each instance reaches them
// through remoteRepo and remoteStore.

// stateHandler serves a repository and an idempotency store: POST
// /<repo|store>/<method> with the arguments as a JSON object, answered with
// the results as a JSON object, or with an error code.
type stateHandler struct {
	repo  orderservice.Repository
	store idempotency.Store
}

// stateError is the answer of a call that failed.
type stateError struct {
	Code    string              `json:"code"` // one of the codes below
	Message string              `json:"message"`
	Order   *orderservice.Order `json:"order,omitempty"` // the order of a key_used
}

// Error codes, each standing for a sentinel or an error type of the
// repository or the store.
const (
	codeNotFound        = "not_found"
	codeDuplicate       = "duplicate"
	codeVersionConflict = "version_conflict"
	codeKeyUsed         = "key_used"
	codeRecordNotFound  = "record_not_found"
	codeFenced          = "fenced"
	codeCanceled        = "canceled"
	codeOther           = "other"
)

func encodeError(err error) stateError {
	var used *orderservice.KeyUsedError
	e := stateError{Code: codeOther, Message: err.Error()}
	switch {
	case errors.As(err, &used):
		e.Code, e.Order = codeKeyUsed, &used.Order
	case errors.Is(err, orderservice.ErrNotFound):
		e.Code = codeNotFound
	case errors.Is(err, orderservice.ErrDuplicate):
		e.Code = codeDuplicate
	case errors.Is(err, orderservice.ErrVersionConflict):
		e.Code = codeVersionConflict
	case errors.Is(err, idempotency.ErrNotFound):
		e.Code = codeRecordNotFound
	case errors.Is(err, idempotency.ErrFenced):
		e.Code = codeFenced
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		e.Code = codeCanceled
	}
	return e
}

func (e stateError) err() error {
	switch e.Code {
	case codeKeyUsed:
		if e.Order != nil {
			return &orderservice.KeyUsedError{Order: *e.Order}
		}
	case codeNotFound:
		return fmt.Errorf("%w: %s", orderservice.ErrNotFound, e.Message)
	case codeDuplicate:
		return orderservice.ErrDuplicate
	case codeVersionConflict:
		return orderservice.ErrVersionConflict
	case codeRecordNotFound:
		return idempotency.ErrNotFound
	case codeFenced:
		return fmt.Errorf("%w: %s", idempotency.ErrFenced, e.Message)
	}
	return fmt.Errorf("tour state: %s", e.Message)
}

// The arguments and results of the calls; one struct serves them all.
type stateMsg struct {
	Order    *orderservice.Order       `json:"order,omitempty"`
	Orders   []orderservice.Order      `json:"orders,omitempty"`
	ID       string                    `json:"id,omitempty"`
	After    int64                     `json:"after,omitempty"`
	Limit    int                       `json:"limit,omitempty"`
	Last     int64                     `json:"last,omitempty"`
	More     bool                      `json:"more,omitempty"`
	Count    int                       `json:"count,omitempty"`
	Tenant   string                    `json:"tenant,omitempty"`
	Summary  []orderservice.SummaryRow `json:"summary,omitempty"`
	Key      string                    `json:"key,omitempty"`
	Token    uint64                    `json:"token,omitempty"`
	Value    []byte                    `json:"value,omitempty"`
	FP       []byte                    `json:"fp,omitempty"`
	Duration time.Duration             `json:"duration,omitempty"`
	Claim    *idempotency.Claim        `json:"claim,omitempty"`
	Record   *idempotency.Record       `json:"record,omitempty"`
	Error    *stateError               `json:"error,omitempty"`
}

func (h stateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var in stateMsg
	if err := json.NewDecoder(io.LimitReader(r.Body, 8<<20)).Decode(&in); err != nil {
		http.Error(w, "bad call: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	var out stateMsg
	var err error
	switch r.URL.Path {
	case "/repo/create":
		err = h.repo.Create(ctx, *in.Order)
	case "/repo/get":
		var o orderservice.Order
		o, err = h.repo.Get(ctx, in.ID)
		out.Order = &o
	case "/repo/update":
		err = h.repo.Update(ctx, *in.Order)
	case "/repo/changes":
		out.Orders, out.Last, out.More, err = h.repo.Changes(ctx, in.After, in.Limit)
	case "/repo/count":
		out.Count, err = h.repo.Count(ctx)
	case "/repo/summary":
		out.Summary, err = h.repo.Summary(ctx, in.Tenant)
	case "/store/claim":
		var c idempotency.Claim
		c, err = h.store.Claim(ctx, in.Key, in.FP, in.Duration)
		out.Claim = &c
	case "/store/extend":
		err = h.store.Extend(ctx, in.Key, in.Token, in.Duration)
	case "/store/complete":
		err = h.store.Complete(ctx, in.Key, in.Token, in.Value, in.Duration)
	case "/store/release":
		err = h.store.Release(ctx, in.Key, in.Token)
	case "/store/get":
		var rec idempotency.Record
		rec, err = h.store.Get(ctx, in.Key)
		out.Record = &rec
	default:
		http.Error(w, "no such call", http.StatusNotFound)
		return
	}
	if err != nil {
		e := encodeError(err)
		out = stateMsg{Error: &e}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// stateClient calls a stateHandler.
type stateClient struct {
	base string
	http *http.Client
}

func (c *stateClient) call(ctx context.Context, path string, in stateMsg) (stateMsg, error) {
	if err := ctx.Err(); err != nil {
		return stateMsg{}, fmt.Errorf("tour state %s: %w", path, err)
	}
	body, err := json.Marshal(in)
	if err != nil {
		return stateMsg{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return stateMsg{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return stateMsg{}, fmt.Errorf("tour state %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return stateMsg{}, fmt.Errorf("tour state %s: %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
	}
	var out stateMsg
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return stateMsg{}, fmt.Errorf("tour state %s: %w", path, err)
	}
	if out.Error != nil {
		return stateMsg{}, out.Error.err()
	}
	return out, nil
}

// remoteRepo is an orderservice.Repository served by a stateHandler.
type remoteRepo struct{ c *stateClient }

var _ orderservice.Repository = remoteRepo{}

func (r remoteRepo) Create(ctx context.Context, o orderservice.Order) error {
	_, err := r.c.call(ctx, "/repo/create", stateMsg{Order: &o})
	return err
}

func (r remoteRepo) Get(ctx context.Context, id string) (orderservice.Order, error) {
	out, err := r.c.call(ctx, "/repo/get", stateMsg{ID: id})
	if err != nil {
		return orderservice.Order{}, err
	}
	if out.Order == nil {
		return orderservice.Order{}, errors.New("tour state: no order in the answer")
	}
	return *out.Order, nil
}

func (r remoteRepo) Update(ctx context.Context, o orderservice.Order) error {
	_, err := r.c.call(ctx, "/repo/update", stateMsg{Order: &o})
	return err
}

func (r remoteRepo) Changes(ctx context.Context, after int64, limit int) ([]orderservice.Order, int64, bool, error) {
	out, err := r.c.call(ctx, "/repo/changes", stateMsg{After: after, Limit: limit})
	if err != nil {
		return nil, after, false, err
	}
	return out.Orders, out.Last, out.More, nil
}

func (r remoteRepo) Count(ctx context.Context) (int, error) {
	out, err := r.c.call(ctx, "/repo/count", stateMsg{})
	return out.Count, err
}

func (r remoteRepo) Summary(ctx context.Context, tenant string) ([]orderservice.SummaryRow, error) {
	out, err := r.c.call(ctx, "/repo/summary", stateMsg{Tenant: tenant})
	return out.Summary, err
}

// remoteStore is an idempotency.Store served by a stateHandler.
type remoteStore struct{ c *stateClient }

var _ idempotency.Store = remoteStore{}

func (s remoteStore) Claim(ctx context.Context, key string, fingerprint []byte, lease time.Duration) (idempotency.Claim, error) {
	out, err := s.c.call(ctx, "/store/claim", stateMsg{Key: key, FP: fingerprint, Duration: lease})
	if err != nil {
		return idempotency.Claim{}, err
	}
	if out.Claim == nil {
		return idempotency.Claim{}, errors.New("tour state: no claim in the answer")
	}
	return *out.Claim, nil
}

func (s remoteStore) Extend(ctx context.Context, key string, token uint64, lease time.Duration) error {
	_, err := s.c.call(ctx, "/store/extend", stateMsg{Key: key, Token: token, Duration: lease})
	return err
}

func (s remoteStore) Complete(ctx context.Context, key string, token uint64, value []byte, retention time.Duration) error {
	_, err := s.c.call(ctx, "/store/complete", stateMsg{Key: key, Token: token, Value: value, Duration: retention})
	return err
}

func (s remoteStore) Release(ctx context.Context, key string, token uint64) error {
	_, err := s.c.call(ctx, "/store/release", stateMsg{Key: key, Token: token})
	return err
}

func (s remoteStore) Get(ctx context.Context, key string) (idempotency.Record, error) {
	out, err := s.c.call(ctx, "/store/get", stateMsg{Key: key})
	if err != nil {
		return idempotency.Record{}, err
	}
	if out.Record == nil {
		return idempotency.Record{}, errors.New("tour state: no record in the answer")
	}
	return *out.Record, nil
}
