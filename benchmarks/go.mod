module github.com/bulwark-go/bulwark/benchmarks

go 1.26.0

replace github.com/bulwark-go/bulwark => ..
