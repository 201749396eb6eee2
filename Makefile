# Sluice's build. `make test` is the one command that runs every test, locally and in CI:
# it installs and builds what the integration suites need (etcd from Debian, kube-apiserver
# from the Go module proxy), caching both outside the work tree so later runs skip the build.

GO      ?= go
KUBE_VERSION := v1.37.2
TOOLS   ?= $(HOME)/.cache/sluice/bin
APISERVER := $(TOOLS)/kube-apiserver-$(KUBE_VERSION)
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(TOOLS)/staticcheck-$(STATICCHECK_VERSION)

export SLUICE_KUBE_APISERVER := $(APISERVER)
export SLUICE_ETCD := $(shell command -v etcd 2>/dev/null || echo /usr/bin/etcd)
# Where tests keep what CI should upload (admin's dashboard screenshot, dashboard.png).
export SLUICE_ARTIFACTS ?= $(HOME)/.cache/sluice/artifacts

.PHONY: test vet staticcheck unit tools etcd chromium bench bench-process bench-l4 fuzz

## test: gofmt, vet, staticcheck, then every unit and integration test under the race detector.
test: vet staticcheck tools chromium
	$(GO) test -race -count=1 -timeout 25m -tags integration ./...
	$(GO) test -count=1 -run '$(MEASURED)' ./h1/ ./tcpproxy/ ./udpproxy/ ./proxy/ ./proxyproto/

# MEASURED are the tests whose figures are acceptance points (memory per idle connection, flow
# and proxied connection; allocations per request and datagram). Under -race they run with
# limits loosened for the detector's larger frames and pool drops, so make test runs them once
# more without it, at the figures the docs give.
MEASURED := TestIdleConnectionMemory|TestIdleFlowMemory|TestForwardAllocs|TestForwardingAllocatesNothing|TestAllocs

## unit: the tests that need no external process (quick inner loop).
unit:
	$(GO) test -race ./...

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...

## staticcheck: staticcheck over every package, as built without and with the integration tag.
staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags integration ./...

# Installed through the Go module proxy into a scratch GOBIN, then renamed: the version is in
# the file name, so a cached binary is reused until STATICCHECK_VERSION changes.
$(STATICCHECK):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS)/.staticcheck-$(STATICCHECK_VERSION) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(TOOLS)/.staticcheck-$(STATICCHECK_VERSION)/staticcheck $@
	rmdir $(TOOLS)/.staticcheck-$(STATICCHECK_VERSION)

## tools: etcd and kube-apiserver for the integration suites (cached).
tools: etcd $(APISERVER)

etcd:
	@command -v etcd >/dev/null 2>&1 || { \
	  echo "installing etcd-server from Debian"; \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  ($$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq etcd-server) >/dev/null || \
	  { echo "could not install etcd-server: run 'apt-get install etcd-server' as root"; exit 1; }; }

# chromium: the headless browser admin's dashboard test drives (it fails without one under CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium from Debian"; \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  ($$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium) >/dev/null || \
	  { echo "could not install chromium: run 'apt-get install chromium' as root"; exit 1; }; }

# The version is in the file name, so a cached binary is reused until KUBE_VERSION changes.
$(APISERVER):
	@mkdir -p $(TOOLS)
	@echo "building kube-apiserver $(KUBE_VERSION) (first build takes several minutes; cached after)"
	cd internal/kubetest/apiserver && $(GO) build -o $@ k8s.io/kubernetes/cmd/kube-apiserver

## bench: every benchmark, with allocations.
bench:
	$(GO) test -run=NONE -bench=. -benchmem ./...

## bench-process: whole-process CPU per request, req/s, latency and peak RSS of sluice,
## httputil.ReverseProxy, NGINX and HAProxy side by side: HTTP/1.1 under wrk (keep-alive,
## Connection: close, POST, 1 MiB), HTTP/2 under h2load (h2c, over TLS) and full TLS 1.3
## handshakes under openssl s_time; installs nginx-light, haproxy, wrk and nghttp2-client from
## Debian when root and they are missing. About 8 minutes.
bench-process:
	./scripts/bench-process.sh

## bench-l4: whole-process CPU per TCP connection (a 1 KiB exchange each) and per GiB (1 GiB
## transfers) of sluice's tcpproxy, HAProxy in mode tcp and NGINX's stream module side by side;
## installs haproxy, nginx-light and libnginx-mod-stream from Debian when root. About 2 minutes.
bench-l4:
	./scripts/bench-l4.sh

## fuzz: a short run of every fuzz target (FUZZTIME each). Go 1.26's fuzz coordinator can end a
## clean run with "context deadline exceeded" (go.dev/issue/75804), so a target fails the run
## only when it also wrote a failing input under testdata/fuzz.
FUZZTIME ?= 10s
fuzz:
	@set -e; failed=0; for f in $$(git grep -l '^func Fuzz' -- '*_test.go'); do \
	  dir=$$(dirname $$f); pkg=./$$dir; \
	  for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do \
	    echo "fuzz $$pkg $$t"; \
	    before=$$(ls $$dir/testdata/fuzz/$$t 2>/dev/null | wc -l); \
	    if ! $(GO) test -run=NONE -fuzz="^$$t\$$" -fuzztime=$(FUZZTIME) $$pkg; then \
	      after=$$(ls $$dir/testdata/fuzz/$$t 2>/dev/null | wc -l); \
	      if [ "$$after" -gt "$$before" ]; then failed=1; \
	      else echo "fuzz $$pkg $$t: stopped with no failing input (go.dev/issue/75804), not a failure"; fi; \
	    fi; \
	  done; \
	done; exit $$failed

## framing-compare: the framing cases against sluice, NGINX and HAProxy side by side (installs
## nginx and haproxy from Debian when missing; not part of `make test`).
.PHONY: framing-compare
framing-compare:
	./scripts/framing-compare.sh
