module github.com/bulwark-go/bulwark/examples

go 1.26.0

require github.com/bulwark-go/bulwark v0.0.0

replace github.com/bulwark-go/bulwark => ..
