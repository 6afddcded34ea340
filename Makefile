# Palaver's front door. `make help` lists the targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Tools are pinned here and installed into ./bin by this Makefile.
LOCALBIN ?= $(CURDIR)/bin
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)

# envtest's etcd, kube-apiserver and kubectl are built from Go modules (no
# prebuilt download reaches every machine), once per machine, outside the
# clone so every checkout shares them. hack/envtest/*/go.mod pin the
# versions; build.sh prints the directory (KUBEBUILDER_ASSETS).
ENVTEST_BUILD := hack/envtest/build.sh
# The Helm CLI and the Prometheus server the deployment tests run, built the
# same way (pinned in hack/helm/go.mod and hack/prometheus/go.mod) into
# ~/.cache/palaver/tools.
TOOLS_BUILD := hack/tools.sh

# The race detector runs in every test command: a data race is a bug.
GO_TEST_FLAGS ?= -race -count=1 -timeout=30m
FUZZTIME ?= 10s
MODULES := services operator

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Run

# ARGS go to `palaver dev`, run from the repository's top directory: a second
# one beside the first takes other ports and its own data directory with
# make dev ARGS='--listen 127.0.0.1:8081 --kafka-port 0 --ops-addr 127.0.0.1:0 --data-dir .cache/dev2'
ARGS ?=

.PHONY: dev
dev: prereqs-go ## Run all of Palaver in one process on an embedded broker (ARGS='--listen 127.0.0.1:8081 ...' for other ports).
	go run ./services/cmd/palaver dev --data-dir="$${PALAVER_DEV_DATA:-.cache/dev}" --rooms="$${PALAVER_DEV_ROOMS:-k8s/samples}" $(ARGS)

.PHONY: kafka-up
kafka-up: prereqs-kafka ## Start a local real Apache Kafka broker (KRaft) on 127.0.0.1:19092.
	cd services && go run ./kafkatest/kafkalocal up

.PHONY: kafka-down
kafka-down: prereqs-go ## Stop the local Kafka broker started by kafka-up.
	cd services && go run ./kafkatest/kafkalocal down

##@ Test

.PHONY: test
test: prereqs-kafka envtest generate vet lint test-services test-operator ## Everything: regenerate, vet, lint, unit and integration tests against the real broker and API server.

.PHONY: test-services
test-services: prereqs-kafka e2e-deps ## Unit and integration tests of the services (starts real Kafka brokers).
	cd services && go test -v $(GO_TEST_FLAGS) ./...

.PHONY: test-operator
test-operator: prereqs-kafka envtest helm prometheus ## Operator and deployment tests (chart, k8s/, dashboards, Tiltfile) against a real kube-apiserver, etcd and Kafka.
	assets=$$($(ENVTEST_BUILD)) && cd operator && KUBEBUILDER_ASSETS=$$assets go test -v $(GO_TEST_FLAGS) ./...

.PHONY: e2e-deps
e2e-deps: ## Install what the browser test needs: Debian's Chromium (apt) and e2e/node_modules (npm ci).
	@hack/prereqs.sh node
	@command -v chromium >/dev/null || { s=; [[ $$(id -u) -eq 0 ]] || s=sudo; $$s apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$s apt-get install -y -qq --no-install-recommends chromium; }
	cd e2e && npm ci --no-audit --no-fund

.PHONY: e2e
e2e: ## Browser test against a running gateway (PALAVER_E2E_URL, default http://127.0.0.1:8080, e.g. make dev).
	PALAVER_E2E_URL=$${PALAVER_E2E_URL:-http://127.0.0.1:8080} node --test e2e/

.PHONY: test-short
test-short: prereqs-go ## Fast unit tests only: no Kafka broker, no API server, no browser (skipped in -short).
	for m in $(MODULES); do (cd $$m && go test -race -short ./...); done

.PHONY: vet
vet: prereqs-go ## go vet both modules.
	for m in $(MODULES); do (cd $$m && go vet ./...); done

.PHONY: lint
lint: $(GOLANGCI_LINT) ## golangci-lint both modules.
	for m in $(MODULES); do (cd $$m && $(GOLANGCI_LINT) run --allow-parallel-runners ./...); done

.PHONY: fuzz
fuzz: prereqs-go ## Run every fuzz target for FUZZTIME (default 10s) each.
	cd services && for pkg in $$(go list ./...); do \
	  for f in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

##@ Build

.PHONY: build
build: prereqs-go ## Build the binaries into ./bin.
	cd services && GOBIN=$(LOCALBIN) go install ./cmd/...
	cd operator && go build -o $(LOCALBIN)/palaver-operator ./cmd

.PHONY: envtest
envtest: prereqs-go ## Build etcd, kube-apiserver and kubectl for tests from Go modules (once, ~10 min, 3 GB build cache).
	$(ENVTEST_BUILD) >/dev/null

.PHONY: helm
helm: prereqs-go ## Build the pinned Helm CLI for the deployment tests from its Go module (once, a few minutes).
	$(TOOLS_BUILD) helm >/dev/null

.PHONY: prometheus
prometheus: prereqs-go ## Build the pinned Prometheus server for the dashboards test from its Go module (once, a few minutes).
	$(TOOLS_BUILD) prometheus >/dev/null

.PHONY: dashboards
dashboards: prereqs-go ## Regenerate charts/palaver/dashboards from hack/dashboards.
	cd hack/dashboards && GOWORK=off go run . -write ../../charts/palaver/dashboards

.PHONY: generate
generate: prereqs-go ## Regenerate the operator's CRD (and the chart's copy), RBAC and deepcopy code.
	$(MAKE) -C operator manifests generate
	cp operator/config/crd/bases/chat.palaver.dev_chatrooms.yaml charts/palaver/crds/

.PHONY: verify-generated
verify-generated: generate ## Fail if the generated operator files are out of date.
	git diff --exit-code -- operator/config operator/api charts/palaver/crds || { echo "generated files are stale: run 'make generate' and commit" >&2; exit 1; }

# Prerequisites: say what to install instead of failing obscurely.

.PHONY: prereqs-go prereqs-kafka
prereqs-go:
	@hack/prereqs.sh go
prereqs-kafka:
	@hack/prereqs.sh go java mvn

$(GOLANGCI_LINT): | prereqs-go
	@echo "installing golangci-lint $(GOLANGCI_LINT_VERSION) into $(LOCALBIN) (built from source, once)"
	mkdir -p $(LOCALBIN)
	tmp=$$(mktemp -d) && GOWORK=off GOBIN=$$tmp go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) && mv $$tmp/golangci-lint $@ && rmdir $$tmp
