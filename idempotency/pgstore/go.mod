module github.com/bulwark-go/bulwark/idempotency/pgstore

go 1.26.0

replace github.com/bulwark-go/bulwark => ../..
