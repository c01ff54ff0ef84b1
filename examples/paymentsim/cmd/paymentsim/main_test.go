package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/bulwark-go/bulwark/examples/paymentsim"
)

func TestServesAndLists(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-listen", "127.0.0.1:0"}, pw); pw.Close() }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	base := "http://" + strings.TrimSpace(strings.TrimPrefix(line, "listening on "))
	req, _ := http.NewRequest(http.MethodPost, base+"/charges", strings.NewReader(`{"order_id":"o1","amount_cents":5,"currency":"EUR"}`))
	req.Header.Set("Idempotency-Key", "k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	charges, err := paymentsim.FetchCharges(ctx, nil, base)
	if err != nil || len(charges) != 1 || charges[0].OrderID != "o1" {
		t.Errorf("charges = %+v, %v; want the one charge of o1", charges, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run after its ctx ended = %v, want nil", err)
	}
}

func TestRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-fail-rate", "2"}, {"-latency", "-1s"}, {"-nope"}} {
		if err := run(context.Background(), args, io.Discard); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}
