package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain runs an order-service instance instead of the tests when the tour
// under test starts one: the test binary is the tour's binary.
func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "orderservice" {
		if err := serveOrders(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "tour orderservice:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestTourShort(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var out bytes.Buffer
	rep, err := run(context.Background(), options{
		// Two connections an instance instead of four: the four clients
		// then keep them about as busy as the eight of the tour do the
		// four, and the overload phase sheds.
		duration: 8 * time.Second, workers: 4, seed: 3, out: &out, dbConns: 2,
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if broken := rep.broken(); len(broken) > 0 {
		t.Errorf("invariants broken:\n%s", strings.Join(broken, "\n"))
	}
	if len(rep.st.keys) == 0 || rep.tally.replays.Load() == 0 {
		t.Errorf("the tour created %d orders with %d replays; want some of each", len(rep.st.keys), rep.tally.replays.Load())
	}
	if lim := rep.tally.limits(); lim.byReason["limit"]+lim.byReason["tenant"] == 0 {
		t.Errorf("the instances' limiters refused nothing: the overload phase did not overload them")
	}
	// The users who arrive in the overload phase bring twice the normal
	// load; the clients, who wait for their answers, send less as the
	// answers slow down.
	if n, o := rep.normal, rep.overload; float64(o.sent)/o.seconds < 1.5*float64(n.sent)/n.seconds {
		t.Errorf("the overload phase sent %.0f requests/s, the normal load %.0f; want half as many again at least",
			float64(o.sent)/o.seconds, float64(n.sent)/n.seconds)
	}
	// Passive ejection or the active check, whichever sees it first, takes
	// the killed backend out.
	if rep.tally.ejections.Load() == 0 && rep.tally.transitionCounts()["healthcheck healthy→unhealthy"] == 0 {
		t.Errorf("the killed backend was neither ejected nor marked unhealthy")
	}
}
