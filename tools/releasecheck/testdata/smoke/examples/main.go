// The smoke program of github.com/bulwark-go/bulwark/examples, built and run
// by releasecheck from a fresh module (which also builds every command of
// the module): the payment simulator answers a charge.
package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/bulwark-go/bulwark/examples/paymentsim"
)

func main() {
	var h http.Handler = paymentsim.New(1)
	req := httptest.NewRequest(http.MethodPost, "/charges", strings.NewReader(`{"amount": 100}`))
	req.Header.Set("Idempotency-Key", "smoke-1")
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		fmt.Fprintln(os.Stderr, "paymentsim:", rec.Code, rec.Body.String())
		os.Exit(1)
	}
	fmt.Println("examples: paymentsim answered", rec.Code)
}
