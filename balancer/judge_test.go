package balancer_test

import (
	"slices"
	"sync"
	"testing"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
)

// judge is a balancer.Judge whose verdicts the test gives: set reports one
// and waits until the balancer has published it.
type judge struct {
	lb      *balancer.Balancer
	pending bool // new endpoints wait for a verdict

	mu     sync.Mutex
	report func(bulwark.Endpoint, bool)
	sets   [][]bulwark.Endpoint
}

var _ balancer.Judge = (*judge)(nil)

func (j *judge) Attach(report func(bulwark.Endpoint, bool)) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.report = report
	return j.pending, nil
}

func (j *judge) SetEndpoints(eps []bulwark.Endpoint) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.sets = append(j.sets, slices.Clone(eps))
	return nil
}

// set reports that ep is healthy or not, and waits for the balancer to
// publish it.
func (j *judge) set(ep bulwark.Endpoint, healthy bool) {
	j.mu.Lock()
	report := j.report
	j.mu.Unlock()
	report(ep, healthy)
	balancer.Settle(j.lb)
}

// judged returns a balancer made from cfg with one more follower, a judge,
// and that judge.
func judged(t testing.TB, cfg balancer.Config) (*balancer.Balancer, *judge) {
	t.Helper()
	j := &judge{}
	cfg.Followers = append(slices.Clone(cfg.Followers), j)
	lb := mustNew(t, cfg)
	j.lb = lb
	return lb, j
}
