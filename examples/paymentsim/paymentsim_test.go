package paymentsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func charge(t *testing.T, url, key, order string) (int, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/charges", strings.NewReader(fmt.Sprintf(`{"order_id":%q,"amount_cents":100,"currency":"EUR"}`, order)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

func list(t *testing.T, url string) (int, ChargeList) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l ChargeList
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, l
}

func TestListingShowsEachChargeOnce(t *testing.T) {
	p := New(1)
	srv := httptest.NewServer(p)
	defer srv.Close()
	if code, _ := charge(t, srv.URL, "k1", "o1"); code != http.StatusOK {
		t.Fatalf("charge = %d", code)
	}
	if code, hdr := charge(t, srv.URL, "k1", "o1"); code != http.StatusOK || hdr.Get("Idempotent-Replayed") != "true" {
		t.Errorf("charge again with its key = %d, replayed %q; want 200 replayed", code, hdr.Get("Idempotent-Replayed"))
	}
	p.SetFault(Fault{FailRate: 1})
	if code, _ := charge(t, srv.URL, "k2", "o2"); code != http.StatusServiceUnavailable {
		t.Errorf("charge during an outage = %d, want 503", code)
	}
	p.SetFault(Fault{Decline: true})
	if code, _ := charge(t, srv.URL, "k3", "o3"); code != http.StatusPaymentRequired {
		t.Errorf("declined charge = %d, want 402", code)
	}
	p.SetFault(Fault{})
	if code, _ := charge(t, srv.URL, "k4", "o1"); code != http.StatusOK { // a double charge of o1
		t.Fatalf("charge = %d", code)
	}
	got, err := FetchCharges(context.Background(), nil, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := []Charge{{ID: "ch_1", OrderID: "o1", AmountCents: 100, Currency: "EUR"}, {ID: "ch_2", OrderID: "o1", AmountCents: 100, Currency: "EUR"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("FetchCharges = %v, want %v: the replay, the failure and the decline charged nothing", got, want)
	}
}

func TestListingPages(t *testing.T) {
	p := New(1)
	srv := httptest.NewServer(p)
	defer srv.Close()
	const n = maxPage + 5
	for i := 0; i < n; i++ {
		charge(t, srv.URL, fmt.Sprintf("k%d", i), fmt.Sprintf("o%d", i))
	}
	code, first := list(t, srv.URL+"/charges?limit=2")
	if code != http.StatusOK || len(first.Data) != 2 || !first.HasMore || first.Data[1].ID != "ch_2" {
		t.Fatalf("first page = %d %+v, want ch_1, ch_2 and more", code, first)
	}
	if _, next := list(t, srv.URL+"/charges?limit=2&starting_after=ch_2"); len(next.Data) != 2 || next.Data[0].ID != "ch_3" {
		t.Errorf("next page = %+v, want ch_3, ch_4", next)
	}
	if _, last := list(t, srv.URL+fmt.Sprintf("/charges?starting_after=ch_%d", n)); len(last.Data) != 0 || last.HasMore {
		t.Errorf("page after the last = %+v, want empty, no more", last)
	}
	if _, def := list(t, srv.URL+"/charges"); len(def.Data) != defaultPage || !def.HasMore {
		t.Errorf("default page has %d charges (more %v), want %d and more", len(def.Data), def.HasMore, defaultPage)
	}
	for _, bad := range []string{"limit=0", "limit=1001", "limit=x", "starting_after=7", "starting_after=ch_x", "starting_after=ch_0"} {
		if code, _ := list(t, srv.URL+"/charges?"+bad); code != http.StatusBadRequest {
			t.Errorf("GET /charges?%s = %d, want 400", bad, code)
		}
	}
	all, err := FetchCharges(context.Background(), srv.Client(), srv.URL)
	if err != nil || len(all) != n || all[n-1].ID != fmt.Sprintf("ch_%d", n) {
		t.Errorf("FetchCharges = %d charges, %v; want all %d across pages", len(all), err, n)
	}
	for i, c := range all {
		if c.ID != fmt.Sprintf("ch_%d", i+1) {
			t.Fatalf("charge %d is %s, want ch_%d: each once, in order", i, c.ID, i+1)
		}
	}
}
