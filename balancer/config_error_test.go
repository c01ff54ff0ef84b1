package balancer_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
)

func TestConfigErrorsWrapErrInvalidConfig(t *testing.T) {
	for _, cfg := range []balancer.Config{
		{Algorithm: 200},
		{SlowStart: -1},
		{PickSample: -1},
		{Followers: []balancer.Follower{nil}},
	} {
		if _, err := balancer.New(cfg); !errors.Is(err, balancer.ErrInvalidConfig) {
			t.Errorf("New(%+v): err = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

// TestResultOutcomeOverridesErr: a Result's Outcome, when set, is how the
// call counts, whatever its Err.
func TestResultOutcomeOverridesErr(t *testing.T) {
	var got []bulwark.Outcome
	lb, err := balancer.New(balancer.Config{
		Endpoints: []bulwark.Endpoint{{Addr: "10.0.0.1:80"}},
		Observer: bulwark.ObserverFunc(func(e bulwark.Event) {
			if e.Kind == bulwark.EventCall {
				got = append(got, e.Outcome)
			}
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	for _, r := range []balancer.Result{
		{Err: errors.New("404 Not Found"), Outcome: bulwark.Success},
		{Err: errors.New("connection refused")},
		{Outcome: bulwark.Neutral},
	} {
		pk, err := lb.Pick("", nil)
		if err != nil {
			t.Fatal(err)
		}
		pk.Done(r)
	}
	want := []bulwark.Outcome{bulwark.Success, bulwark.Failure, bulwark.Neutral}
	if !slices.Equal(got, want) {
		t.Errorf("call outcomes = %v, want %v", got, want)
	}
}
