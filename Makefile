# Every target loops over every module (each directory with a go.mod): with a
# committed go.work, the root's ./... does not reach the nested modules.
SHELL := /bin/bash
export PATH := $(PATH):$(shell go env GOPATH)/bin
MODULES := $(shell find . -name go.mod -not -path './.git/*' -printf '%h\n' | sort)
STATICCHECK_VERSION := v0.8.2
BENCH_COUNT ?= 10
# The candidate version that release-check publishes and installs.
VERSION ?= v0.1.0
# make stress: runs per test and mode; STRESS_PKGS narrows it (./balancer/...),
# STRESS_FLAGS passes more flags (-race on, -run TestX, -hog=false).
STRESS_COUNT ?= 20
STRESS_PKGS ?=
STRESS_FLAGS ?=
TEST_STEPS := fmt vet staticcheck tidy build-isolated unit

.PHONY: test lint fmt vet staticcheck tidy build-isolated unit bench bench-peers cover tools release-check release-bump stress api-count

# Runs every step over every module, whatever fails, then lists every failure
# (step, module, and for unit the failing tests and packages) and exits 1 if
# there was any.
test:
	@export BULWARK_FAILLOG=$$(mktemp); trap 'rm -f "$$BULWARK_FAILLOG"' EXIT; failed=0; \
	for s in $(TEST_STEPS); do \
	  $(MAKE) --no-print-directory $$s || { failed=1; grep -q "^$$s" "$$BULWARK_FAILLOG" || echo "$$s" >> "$$BULWARK_FAILLOG"; }; \
	done; \
	if [ $$failed -ne 0 ]; then echo; echo "make test FAILED:"; sed 's/^/  /' "$$BULWARK_FAILLOG"; exit 1; fi; \
	echo; echo "make test: every step passed in every module"

lint: fmt vet staticcheck

# each_module runs $(2) in every module, carries on past a failing one, and
# fails at the end naming every module that failed (also appended to
# $$BULWARK_FAILLOG, when make test set it). $(1) names the step.
define each_module
fails=(); for m in $(MODULES); do echo "$(1) $$m"; (cd $$m && $(2)) || fails+=("$$m"); done; \
if [ $${#fails[@]} -gt 0 ]; then echo "$(1) FAILED in: $${fails[*]}"; \
  if [ -n "$$BULWARK_FAILLOG" ]; then for m in "$${fails[@]}"; do echo "$(1) $$m" >> "$$BULWARK_FAILLOG"; done; fi; \
  exit 1; fi
endef

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go'; git ls-files --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; \
	  if [ -n "$$BULWARK_FAILLOG" ]; then echo "$$out" | sed 's/^/fmt /' >> "$$BULWARK_FAILLOG"; fi; exit 1; fi

vet:
	@$(call each_module,vet,go vet ./...)

tools:
	@command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: tools
	@$(call each_module,staticcheck,staticcheck ./...)

# go mod tidy must change nothing in any module.
tidy:
	@$(call each_module,tidy,GOWORK=off GOFLAGS=-mod=mod go mod tidy -diff)

# Each nested module builds on its own, through its replace directive.
build-isolated:
	@$(call each_module,build-isolated,GOWORK=off go build -o /dev/null ./...)

# go test -race in every module; the failing tests and packages of each are
# listed at the end.
unit:
	@fails=(); for m in $(MODULES); do echo "test $$m"; out=$$(mktemp); \
	  (cd $$m && go test -race -count=1 ./... 2>&1) | tee "$$out"; \
	  if [ $${PIPESTATUS[0]} -ne 0 ]; then fails+=("$$m"); \
	    if [ -n "$$BULWARK_FAILLOG" ]; then echo "unit $$m" >> "$$BULWARK_FAILLOG"; \
	      grep -E '^\s*--- FAIL|^FAIL\s|^panic:' "$$out" | sed 's/^/    /' >> "$$BULWARK_FAILLOG"; fi; fi; \
	  rm -f "$$out"; done; \
	if [ $${#fails[@]} -gt 0 ]; then echo "unit FAILED in: $${fails[*]}"; exit 1; fi

# Publishes every module at $(VERSION) into a file-based module proxy and
# installs each one with go get from a fresh module outside the repository
# (see tools/releasecheck). Run by .ci/run.
release-check:
	cd tools && go run ./releasecheck -version $(VERSION)

# Sets every module's requirements on the others to $(VERSION): the first
# step of a release (CONTRIBUTING.md).
release-bump:
	cd tools && go run ./releasecheck -version $(VERSION) -bump

# Every package's tests, $(STRESS_COUNT) times without and with -race, while
# a CPU hog keeps every core busy; lists the failing tests per package. Slow
# (about two hours at 20 runs on two cores), so not part of make test or CI.
stress:
	cd tools && go run ./stress -count $(STRESS_COUNT) $(STRESS_FLAGS) $(STRESS_PKGS)

# The number of exported names of each core package (BENCHMARKS.md, "API size").
API_PKGS = . healthcheck outlier healthz balancer breaker retry consistenthash bulwarktest discovery limit ratelimit throttle timeout fallback idempotency
api-count:
	cd tools && go run ./apicount $(addprefix ../,$(API_PKGS))

bench:
	@set -e; for m in $(MODULES); do [ "$$m" = ./benchmarks ] && continue; \
	  (cd $$m && go test -run '^$$' -bench . -benchmem ./...); done

bench-peers:
	cd benchmarks && go test -run '^$$' -bench . -benchmem -count=$(BENCH_COUNT) ./...

cover:
	@set -e; for m in $(MODULES); do (cd $$m && go test -cover ./... | grep -v 'no test files'); done
