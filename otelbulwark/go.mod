module github.com/bulwark-go/bulwark/otelbulwark

go 1.26.0

replace github.com/bulwark-go/bulwark => ..
