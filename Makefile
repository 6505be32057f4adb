# civicwifi — see `make help`.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin
# Debian packages the tests, the lab and the demo use.
DEB_PKGS := iptables ipset iproute2 conntrack dnsmasq-base dnsutils iperf3 wrk redis-server curl isc-dhcp-client ca-certificates chromium busybox shellcheck prometheus libreoffice-calc-nogui
GATEWAY_ARCHES := amd64 arm64 arm mipsle

.PHONY: help deps build build-all test test-short check lab demo bench clean

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## install what is missing (Debian packages, Go modules)
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(GO) mod download

build: ## build the portal and the controller (this machine) into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/portal ./portal/cmd/portal
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/controller ./controller/cmd/controller
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/cwlab ./internal/lab/cmd/cwlab

build-all: ## cross-compile the gateway for amd64, arm64, arm/v7 and mipsle (OpenWrt)
	@for a in $(GATEWAY_ARCHES); do \
		extra=""; [ $$a = arm ] && extra="GOARM=7"; [ $$a = mipsle ] && extra="GOMIPS=softfloat"; \
		echo "portal linux/$$a"; \
		env CGO_ENABLED=0 GOOS=linux GOARCH=$$a $$extra $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/portal-linux-$$a ./portal/cmd/portal || exit 1; \
	done

test: deps ## install what is missing, then run every test (root: the network-namespace tests too)
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout 40m ./...

test-short: ## unit tests only (no root needed)
	$(GO) test -short -count=1 ./...

check: ## gofmt, go vet, staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

lab: deps build ## build the namespace lab and leave it running until Ctrl-C
	$(BIN)/cwlab up

demo: deps build ## a whole site in network namespaces with the gateway running; prints what to try
	$(BIN)/cwlab demo -portal $(BIN)/portal -controller $(BIN)/controller

bench: deps build ## measure the gateway, the controller, logins and the dashboard (writes bench/*.md, bench/ops.txt)
	$(GO) run ./portal/cmd/cwbench -portal $(BIN)/portal -out bench/results.md
	$(GO) run ./controller/cmd/ctlbench -controller $(BIN)/controller -out bench/controller.md
	$(GO) run ./portal/cmd/loginbench -portal $(BIN)/portal -controller $(BIN)/controller -out bench/login.md
	$(GO) test -run '^$$' -bench 'BenchmarkPages$$|BenchmarkMonthlyExport' -benchtime 100x ./controller/internal/dashboard/ ./controller/internal/stats/ | tee bench/ops.txt

clean: ## remove build output and leftover lab namespaces
	rm -rf $(BIN)
	-$(GO) run ./internal/lab/cmd/cwlab sweep
