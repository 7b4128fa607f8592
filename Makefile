# dronelink — build, test, fuzz, bench, lint.
# `make demo` runs the link end to end on loopback; `make test` is what CI runs.

GO        ?= go
FUZZTIME  ?= 1m
BENCHTIME ?= 1s
STATICCHECK_VERSION ?= v0.8.2
BIN       ?= bin

# VERSION is stamped into both programs ("dronelink version", "dronelinkd version"), so a
# build names itself even where Go records no VCS information (-buildvcs=false, a git
# worktree, a source tarball). Every target that builds the programs passes
# $(LDFLAGS_VERSION) to -ldflags; override as `make build VERSION=v1.2.0`.
VERSION         ?= $(shell git describe --tags --always --dirty 2>/dev/null)
LDFLAGS_VERSION := -X github.com/dronelink/dronelink/internal/buildinfo.version=$(VERSION)

PACKAGES  := ./...

.PHONY: cross all build man test vet fmt-check lint fuzz bench demo soak clean tidy-check

all: build

build:
	mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS_VERSION)' -o $(BIN)/ ./cmd/...

# man: a man page for every command of both programs, from the same definitions as --help,
# in man/man1 (not committed; `man -l man/man1/dronelink-send.1`, or install them with
# `sudo cp man/man1/*.1 /usr/local/share/man/man1/ && sudo mandb -q`).
MANDIR ?= man/man1
man: build
	$(BIN)/dronelink man --dir $(MANDIR)
	$(BIN)/dronelinkd man --dir $(MANDIR)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PACKAGES)

# test: formatting, vet, and every test (seed corpora of the fuzz targets included) under the
# race detector; first the allocation tests without it (under the race detector sync.Pool
# drops items at random, so pooled paths cannot be checked there).
test: fmt-check vet cross
	$(GO) test -count=1 -run 'Alloc' ./pkg/link ./pkg/crypto ./pkg/replay ./pkg/metrics
	$(GO) test -race -count=1 -timeout 20m $(PACKAGES)

# The batched socket code hands the kernel hand-laid-out structures (pkg/link/conn_linux.go):
# build for the drones' 32- and 64-bit ARM, and run its tests as 32-bit x86 (different
# struct sizes and alignment) where this kernel can run such binaries.
cross:
	GOOS=linux GOARCH=arm $(GO) vet ./pkg/link
	GOOS=linux GOARCH=arm64 $(GO) vet ./pkg/link
	GOOS=linux GOARCH=386 $(GO) test -count=1 -run 'UDPConn|Pack|Sockaddr|Zone|BroadcastBatch' ./pkg/link

lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PACKAGES)

tidy-check:
	$(GO) mod tidy -diff

# fuzz: every native fuzz target in the module, each for FUZZTIME.
fuzz:
	@set -e; for pkg in $$($(GO) list $(PACKAGES)); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# bench: the per-packet benchmarks beside the code, then the side-by-side harness (raw UDP,
# dronelink, pion/dtls, wireguard-go on loopback; handshake rates; session memory). See BENCHMARKS.md.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./pkg/...
	$(GO) run ./bench --duration 2s

# soak: the lossy soak for SOAKTIME (30% loss, reordering, duplication, a rekey every 10 s);
# make test runs a 20-second version.
SOAKTIME ?= 5m
soak:
	$(GO) test -race -count=1 -run '^TestLossySoak$$' -timeout 30m -v ./pkg/link -args -soak $(SOAKTIME)

# demo: the whole story on loopback with throwaway identities and a lossy radio link.
demo: build
	$(GO) run ./tools/demo --bin $(BIN)

clean:
	rm -rf $(BIN) man $(DIST)

# ---- release builds (issue #14) ---------------------------------------------------------
# release: static (CGO_ENABLED=0), stripped (-s -w), version-stamped binaries for the
# drones' computers in $(DIST)/ as PROGRAM-linux-amd64, PROGRAM-linux-arm64 and
# PROGRAM-linux-armv7 (GOARM=7), checked by tools/releasecheck (ELF target, static,
# stripped, CGO_ENABLED=0, -trimpath, the stamp, at most 15 MB each; any failure fails the
# target), and $(DIST)/SHA256SUMS. The stamp is RELEASE_VERSION: VERSION when set (in this
# Makefile or on the command line), else `git describe --tags --always --dirty`; it is
# written to github.com/dronelink/dronelink/internal/buildinfo.version.
DIST            ?= dist
RELEASE_VERSION ?= $(or $(VERSION),$(shell git describe --tags --always --dirty 2>/dev/null),unknown)
RELEASE_TARGETS := linux/amd64 linux/arm64 linux/arm/7
RELEASE_LDFLAGS  = -s -w -X github.com/dronelink/dronelink/internal/buildinfo.version=$(RELEASE_VERSION)

.PHONY: release
release:
	rm -rf $(DIST)
	mkdir -p $(DIST)
	@set -e; for t in $(RELEASE_TARGETS); do \
	  os=$${t%%/*}; rest=$${t#*/}; arch=$${rest%%/*}; arm=; name=$$os-$$arch; \
	  case $$rest in */*) arm=$${rest#*/}; name=$$os-$${arch}v$$arm;; esac; \
	  for p in dronelink dronelinkd; do \
	    echo "CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags '$(RELEASE_LDFLAGS)' -o $(DIST)/$$p-$$name ./cmd/$$p"; \
	    CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags '$(RELEASE_LDFLAGS)' -o $(DIST)/$$p-$$name ./cmd/$$p; \
	  done; \
	done
	$(GO) run ./tools/releasecheck --version '$(RELEASE_VERSION)' $(DIST)/dronelink-* $(DIST)/dronelinkd-*
	cd $(DIST) && sha256sum dronelink-* dronelinkd-* > SHA256SUMS
	@echo "$(DIST)/: release $(RELEASE_VERSION)"; cat $(DIST)/SHA256SUMS

# test-release: the release tests alone (also part of make test): the release checks, the
# arm64 and armv7 daemons under qemu-user against the amd64 operator, and the daemon's
# memory through three simultaneous logins.
.PHONY: test-release
test-release:
	$(GO) test -race -count=1 ./internal/release
	$(GO) test -race -count=1 -run 'TestCrossArchDaemons|TestDaemonMemory' -v ./e2e
