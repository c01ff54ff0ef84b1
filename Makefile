# Every target loops over every module (each directory with a go.mod): with a
# committed go.work, the root's ./... does not reach the nested modules.
SHELL := /bin/bash
export PATH := $(PATH):$(shell go env GOPATH)/bin
MODULES := $(shell find . -name go.mod -not -path './.git/*' -printf '%h\n' | sort)
STATICCHECK_VERSION := v0.8.2
BENCH_COUNT ?= 10

.PHONY: test lint fmt vet staticcheck tidy build-isolated unit bench bench-peers cover tools

test: lint tidy build-isolated unit

lint: fmt vet staticcheck

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go'; git ls-files --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	@set -e; for m in $(MODULES); do echo "vet $$m"; (cd $$m && go vet ./...); done

tools:
	@command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: tools
	@set -e; for m in $(MODULES); do echo "staticcheck $$m"; (cd $$m && staticcheck ./...); done

# go mod tidy must change nothing in any module.
tidy:
	@set -e; for m in $(MODULES); do (cd $$m && GOWORK=off GOFLAGS=-mod=mod go mod tidy -diff) || \
	  { echo "go mod tidy would change $$m"; exit 1; }; done

# Each nested module builds on its own, through its replace directive.
build-isolated:
	@set -e; for m in $(MODULES); do echo "build (GOWORK=off) $$m"; (cd $$m && GOWORK=off go build -o /dev/null ./...); done

unit:
	@set -e; for m in $(MODULES); do echo "test $$m"; (cd $$m && go test -race -count=1 ./...); done

bench:
	@set -e; for m in $(MODULES); do [ "$$m" = ./benchmarks ] && continue; \
	  (cd $$m && go test -run '^$$' -bench . -benchmem ./...); done

bench-peers:
	cd benchmarks && go test -run '^$$' -bench . -benchmem -count=$(BENCH_COUNT) ./...

cover:
	@set -e; for m in $(MODULES); do (cd $$m && go test -cover ./... | grep -v 'no test files'); done
