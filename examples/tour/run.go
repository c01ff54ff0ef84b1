package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark/examples/orderservice"
	"github.com/bulwark-go/bulwark/examples/paymentsim"
)

// report is the tour's outcome.
type report struct {
	st                      *stats
	tally                   *tally
	orders                  int
	byState                 map[orderservice.State]int
	shippedUnpaid           int
	reconciled, unreconcile int
	// Payments: the provider's own count, then the audit of its listing
	// against the orders.
	payRequests, payFailed int
	resumed, stillPending  int      // pending payments resumed after the run, and left pending
	charges, paidOrders    int      // charges listed; orders that record a payment
	maxChargesPer          int      // the most charges one order got
	unrecorded             []string // charges that their order does not record
	normal, overload       phase    // what the clients saw before and during the overload phase
}

// The overload phase, as fractions of the run.
const (
	overloadStart = 0.72
	overloadEnd   = 0.92
)

// broken lists the invariants that do not hold.
func (r *report) broken() []string {
	var out []string
	if n := r.st.idemErrors.Load(); n > 0 {
		out = append(out, fmt.Sprintf("%d idempotent requests failed as seen by the client (first: %s)", n, strings.Join(r.st.samples, "; ")))
	}
	if len(r.st.split) > 0 {
		out = append(out, fmt.Sprintf("%d keys answered with two different orders: %s", len(r.st.split), strings.Join(r.st.split, "; ")))
	}
	if keys := len(r.st.keys); r.orders != keys {
		out = append(out, fmt.Sprintf("%d orders exist for %d idempotency keys", r.orders, keys))
	}
	if r.unreconcile > 0 {
		out = append(out, fmt.Sprintf("%d keys never got their order", r.unreconcile))
	}
	if r.maxChargesPer > 1 {
		out = append(out, fmt.Sprintf("an order was charged %d times", r.maxChargesPer))
	}
	if r.charges != r.paidOrders {
		out = append(out, fmt.Sprintf("%d charges for %d paid orders", r.charges, r.paidOrders))
	}
	if len(r.unrecorded) > 0 {
		out = append(out, fmt.Sprintf("%d charges not recorded by their order: %s", len(r.unrecorded), strings.Join(r.unrecorded, "; ")))
	}
	if r.stillPending > 0 {
		out = append(out, fmt.Sprintf("%d payments still pending after resuming them", r.stillPending))
	}
	if r.shippedUnpaid > 0 {
		out = append(out, fmt.Sprintf("%d orders shipped without a confirmed payment", r.shippedUnpaid))
	}
	return out
}

func run(ctx context.Context, opt options) (*report, error) {
	w, err := build(ctx, opt)
	if w != nil {
		defer w.close()
	}
	if err != nil {
		return nil, err
	}
	out := opt.out
	fmt.Fprintf(out, "bulwark tour: 3 order-service processes (zones a, a, b) behind a Peak-EWMA proxy in zone a,\n")
	fmt.Fprintf(out, "a payment provider, %d clients of %d tenants for %v (seed %d)\n\n", opt.workers, len(tenants), opt.duration, opt.seed)

	st := &stats{start: time.Now(), keys: map[string]string{}, pending: map[string]pending{}, owner: map[string]string{}}
	transport := &http.Transport{MaxIdleConnsPerHost: 256}
	defer transport.CloseIdleConnections()
	httpClient := &http.Client{Transport: transport, Timeout: 15 * time.Second}

	loadCtx, stopLoad := context.WithTimeout(ctx, opt.duration)
	defer stopLoad()
	start := st.start
	var wg sync.WaitGroup
	newClient := func(i int) *client {
		return &client{http: httpClient, base: w.front.url(), apiKey: tenants[i%len(tenants)].key,
			rng: rand.New(rand.NewPCG(opt.seed, uint64(i))), st: st}
	}
	for i := 0; i < opt.workers; i++ {
		c := newClient(i)
		wg.Add(1)
		go func() { defer wg.Done(); c.work(loadCtx, i) }()
	}

	// The overload phase: users who arrive on their own (Poisson arrivals,
	// each doing one action, whatever the service answers), at twice the
	// rate of the clients' actions so far, join the clients: three times
	// the normal load. It comes last: the proxy's retries of the requests
	// shed spend its retry budget, which then, for the budget's 10 s, covers
	// no other failure (an instance killed just after it).
	at := func(f float64) time.Duration { return time.Duration(f * float64(opt.duration)) }
	overFrom, overTo := at(overloadStart), at(overloadEnd) // until the steps run
	overCtx, stopOver := context.WithCancel(loadCtx)
	defer stopOver()
	var normalRate, arrivals float64 // actions a second
	overload := func() {
		if overCtx.Err() != nil {
			return // the run was too short for its timeline
		}
		overFrom = time.Since(start)
		arrivals = 2 * normalRate
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(opt.seed, 1<<32))
			next := time.Now()
			for n := 0; ; n++ {
				next = next.Add(time.Duration(rng.ExpFloat64() / arrivals * float64(time.Second)))
				sleep(overCtx, time.Until(next))
				if overCtx.Err() != nil {
					return
				}
				c := newClient(opt.workers + n)
				wg.Add(1)
				go func() { defer wg.Done(); c.act(loadCtx, fmt.Sprintf("u%d", n)) }()
			}
		}()
	}

	// The timeline, as fractions of the run.
	b1, b2 := w.backends[0], w.backends[1]
	steps := []struct {
		at   float64
		what string
		do   func()
	}{
		{0.12, "backend " + b2.name + " (zone a) is killed with SIGKILL mid-run: its requests are cut off, the keys it held " +
			"stay claimed until their " + lease.String() + " lease passes; zone a is half down, traffic spills to zone b", func() {
			normalRate = float64(st.actions.Load()) / time.Since(start).Seconds() // the clients' rate, all healthy
			b2.kill()
		}},
		{0.30, "backend " + b2.name + " restarts", func() {
			if err := b2.start(); err != nil {
				fmt.Fprintf(out, "  (could not restart %s: %v)\n", b2.name, err)
			}
		}},
		{0.42, "backend " + b1.name + " (zone a) turns slow: +150 ms a request", func() { b1.setSlow(150 * time.Millisecond) }},
		{0.50, "payment provider fails every request", func() { w.payments.SetFault(paymentsim.Fault{FailRate: 1}) }},
		{0.65, "payment provider recovers; " + b1.name + " is fast again", func() {
			w.payments.SetFault(paymentsim.Fault{})
			b1.setSlow(0)
		}},
		{overloadStart, "overload: users arrive on their own at twice the clients' normal rate, three times the normal load; the instances " +
			"shed what their database cannot serve, reports first (503, or 429 for a tenant over its share), the proxy sends a shed request to another instance " +
			"at once and refuses one that no instance has room for, and the clients come back after Retry-After", func() {
			overload()
			fmt.Fprintf(out, "          (%.0f arrivals a second)\n", arrivals)
		}},
		{overloadEnd, "the overload ends", func() { overTo = time.Since(start); stopOver() }},
	}
	share := func() string {
		picks := w.tally.takePicks()
		var total int64
		for _, n := range picks {
			total += n
		}
		parts := make([]string, 0, len(w.backends))
		for _, b := range w.backends {
			pct := 0.0
			if total > 0 {
				pct = 100 * float64(picks[b.addr]) / float64(total)
			}
			parts = append(parts, fmt.Sprintf("%s %3.0f%%", b.name, pct))
		}
		return strings.Join(parts, ", ")
	}
	// A progress line every second, and after each step, which runs on
	// time, not at the next tick: in a short run, a step a tick late would
	// move the phases the report measures.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	stepAt := time.NewTimer(time.Until(start.Add(at(steps[0].at))))
	defer stepAt.Stop()
	next := 0
	for loadCtx.Err() == nil {
		select {
		case <-loadCtx.Done():
		case <-tick.C:
		case <-stepAt.C:
		}
		elapsed := time.Since(start)
		for next < len(steps) && elapsed >= time.Duration(steps[next].at*float64(opt.duration)) {
			fmt.Fprintf(out, "t=%4.1fs  traffic since the last change: %s\n", elapsed.Seconds(), share())
			fmt.Fprintf(out, "t=%4.1fs  ** %s\n", elapsed.Seconds(), steps[next].what)
			steps[next].do()
			next++
		}
		if next < len(steps) {
			stepAt.Reset(time.Until(start.Add(at(steps[next].at))))
		}
		open := w.tally.open()
		breakers := "all closed"
		if len(open) > 0 {
			sort.Strings(open)
			breakers = strings.Join(open, " ")
		}
		fmt.Fprintf(out, "t=%4.1fs  requests %5d  client errors %d  shed %4d (clients saw %d)  retries %4d  replays %4d  ejections %d  breakers: %s\n",
			elapsed.Seconds(), st.requests.Load(), st.idemErrors.Load(), w.tally.shed(), st.shed.Load(), w.tally.retries.Load(), w.tally.replays.Load(),
			w.tally.ejections.Load(), breakers)
	}
	wg.Wait()
	fmt.Fprintf(out, "t=%4.1fs  traffic since the last change: %s\n", time.Since(start).Seconds(), share())
	for ; next < len(steps); next++ { // a run too short for its timeline still ends healthy
		steps[next].do()
	}

	// A client that never got the answer to a create sends it again, with
	// the same key, once the system is healthy: it must get its order.
	rep := &report{st: st, tally: w.tally, byState: map[orderservice.State]int{},
		normal: st.phase(at(0.03), at(0.12)), overload: st.phase(overFrom, overTo)}
	settle, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	later := func(apiKey string) *client {
		return &client{http: httpClient, base: w.front.url(), apiKey: apiKey, rng: rand.New(rand.NewPCG(opt.seed, 99)), st: st}
	}
	st.mu.Lock()
	unanswered := make(map[string]pending, len(st.pending))
	for k, v := range st.pending {
		unanswered[k] = v
	}
	st.mu.Unlock()
	for key, p := range unanswered {
		later(p.apiKey).create(settle, key, p.body)
		rep.reconciled++
	}
	st.mu.Lock()
	rep.unreconcile = len(st.pending)
	ids := append([]string(nil), st.orders...)
	owner := make(map[string]string, len(st.owner))
	for id, k := range st.owner {
		owner[id] = k
	}
	st.mu.Unlock()

	// A payment left pending (its instance was killed, or the provider
	// failed, between moving the order to paid and recording the charge) is
	// resumed by pay, which charges under the same key: at most once.
	// A payments breaker may still be open in an instance: a refused resume
	// is tried again, for as long as the settling lasts.
	resumed := map[string]bool{}
	for settle.Err() == nil {
		left := 0
		for _, id := range ids {
			if o, err := w.repo.Get(ctx, id); err == nil && o.State == orderservice.Paid && o.PaymentID == "" {
				later(owner[id]).transition(settle, id, "pay")
				resumed[id] = true
				left++
			}
		}
		if left == 0 {
			break
		}
		sleep(settle, 250*time.Millisecond)
	}
	rep.resumed = len(resumed)

	if rep.orders, err = w.repo.Count(ctx); err != nil {
		return nil, err
	}
	recorded := map[string]string{} // order id → the payment id it records
	for _, id := range ids {
		o, err := w.repo.Get(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("order %s of a key is missing: %w", id, err)
		}
		rep.byState[o.State]++
		if o.State == orderservice.Shipped && o.PaymentID == "" {
			rep.shippedUnpaid++
		}
		if o.State == orderservice.Paid && o.PaymentID == "" {
			rep.stillPending++
		}
		if o.PaymentID != "" {
			recorded[o.ID] = o.PaymentID
		}
	}
	rep.paidOrders = len(recorded)

	// The audit: the provider's own listing of its charges, read over HTTP
	// as an auditor outside it would, against the orders.
	charges, err := paymentsim.FetchCharges(ctx, httpClient, w.paySrv.url())
	if err != nil {
		return nil, fmt.Errorf("audit of the charges: %w", err)
	}
	rep.charges = len(charges)
	perOrder := map[string]int{}
	for _, ch := range charges {
		perOrder[ch.OrderID]++
		rep.maxChargesPer = max(rep.maxChargesPer, perOrder[ch.OrderID])
		if recorded[ch.OrderID] != ch.ID && len(rep.unrecorded) < 5 {
			rep.unrecorded = append(rep.unrecorded, fmt.Sprintf("%s of order %s", ch.ID, ch.OrderID))
		}
	}
	rep.payRequests, rep.payFailed, _, _ = w.payments.Stats()
	rep.print(out, time.Since(start))
	return rep, nil
}

func (r *report) print(out io.Writer, took time.Duration) {
	fmt.Fprintf(out, "\n== report after %v\n", took.Round(100*time.Millisecond))
	fmt.Fprintf(out, "client requests          %d\n", r.st.requests.Load())
	fmt.Fprintf(out, "client-visible errors    %d  (GETs and keyed creates; must be 0)\n", r.st.idemErrors.Load())
	fmt.Fprintf(out, "duplicate creates sent   %d  → replays %d, waits for an in-flight first %d (409 seen: %d)\n",
		r.st.duplicates.Load(), r.tally.replays.Load(), r.tally.conflicts.Load(), r.st.createConflict.Load())
	fmt.Fprintf(out, "orders created           %d  for %d unique keys (late answers reconciled: %d)\n", r.orders, len(r.st.keys), r.reconciled)
	fmt.Fprintf(out, "orders by state          created %d, paid %d, shipped %d, cancelled %d\n",
		r.byState[orderservice.Created], r.byState[orderservice.Paid], r.byState[orderservice.Shipped], r.byState[orderservice.Cancelled])
	fmt.Fprintf(out, "transitions lost a race  %d  (409/412 under If-Match)\n", r.st.raceLost.Load())
	fmt.Fprintf(out, "leases taken over        %d  (keys held by the killed instance, or by a run that outlived its lease)\n", r.tally.takeovers.Load())
	fmt.Fprintf(out, "late completions fenced  %d\n", r.tally.fenced.Load())
	fmt.Fprintf(out, "payments                 %d requests, %d failed on purpose; %d pending payments resumed after the run\n",
		r.payRequests, r.payFailed, r.resumed)
	fmt.Fprintf(out, "charges (audited)        %d  for %d paid orders, at most %d per order  (GET /charges of the provider)\n",
		r.charges, r.paidOrders, r.maxChargesPer)
	fmt.Fprintf(out, "pay refused in outage    %d\n", r.st.payRefused.Load())
	fmt.Fprintf(out, "retries                  %d  (gave up %d, budget refused %d)\n", r.tally.retries.Load(), r.tally.giveUps.Load(), r.tally.budget.Load())
	fmt.Fprintf(out, "rejections               %d  (open breakers, budgets, limits)\n", r.tally.rejections.Load())
	r.printPhases(out)
	fmt.Fprintf(out, "ejections                %d  (returned %d)\n", r.tally.ejections.Load(), r.tally.unejections.Load())
	counts := r.tally.transitionCounts()
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(out, "state changes:")
	for _, k := range keys {
		fmt.Fprintf(out, "  %-52s %d\n", k, counts[k])
	}
}

// printPhases prints what the clients saw before and during the overload
// phase, and what the instances' limiters did.
func (r *report) printPhases(out io.Writer) {
	line := func(name string, p phase) {
		fmt.Fprintf(out, "  %-9s %6.0f requests/s, goodput %6.0f/s, shed %5.0f/s; admitted p50 %v, p99 %v\n", name,
			float64(p.sent)/p.seconds, float64(p.oks)/p.seconds, float64(p.sheds)/p.seconds,
			p.p50.Round(time.Millisecond), p.p99.Round(time.Millisecond))
	}
	fmt.Fprintln(out, "load (as the clients saw it):")
	line("normal", r.normal)
	line("overload", r.overload)
	o := r.overload
	pct := func(c class) float64 { return 100 * float64(o.byClass[c].shed) / float64(max(o.byClass[c].sent, 1)) }
	fmt.Fprintf(out, "  overload requests by criticality: critical %d, normal %d, sheddable (reports) %d; shed as the clients saw it: %.0f %%, %.0f %%, %.0f %%\n",
		o.byClass[critical].sent, o.byClass[normal].sent, o.byClass[sheddable].sent, pct(critical), pct(normal), pct(sheddable))
	fmt.Fprintf(out, "  reads given up after three refusals: %d\n", r.st.gaveUp.Load())
	lim := r.tally.limits()
	fmt.Fprintf(out, "limiters (instances):    refused %d for the limit, %d for a tenant's share (by criticality: %s); rate limit %d; limits now %s\n",
		lim.byReason["limit"], lim.byReason["tenant"], lim.crit, lim.rate, lim.now)
	fmt.Fprintf(out, "proxy (limit a backend): refused %d with every backend at its limit; limits now %s\n",
		r.tally.proxyRefused.Load(), lim.proxyNow)
}
