# rfork — the two commands:  make demo   (set-up + a 3-node demo)   and   make test   (the whole suite).
PREFIX ?= /usr/local
SWIFT ?= swift
SWIFT_CONFIG ?= release
BUILD := build

.PHONY: all build setup demo test unit-test integration-test model-check install proto clean format lint bench

all: build

# Installs Debian packages, builds CRIU >= 4.1 and sets kernel knobs; a no-op once done.
setup:
	@bash scripts/setup.sh

# Everything lands under build/ in the same layout as an installed prefix (bin, lib, libexec, include).
build:
	$(MAKE) -C librfork OUT=$(CURDIR)/$(BUILD)
	$(SWIFT) build -c $(SWIFT_CONFIG) --product rfork
	$(SWIFT) build -c $(SWIFT_CONFIG) --product rforkd
	@mkdir -p $(BUILD)/bin
	install -m 0755 .build/$(SWIFT_CONFIG)/rfork .build/$(SWIFT_CONFIG)/rforkd $(BUILD)/bin/
	$(MAKE) -C tests/conformance OUT=$(CURDIR)/$(BUILD)/tests
	$(MAKE) -C examples OUT=$(CURDIR)/$(BUILD)/examples
	$(MAKE) -C bench OUT=$(CURDIR)/$(BUILD)/libexec/rfork

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/libexec/rfork
	install -m 0755 $(BUILD)/bin/rfork $(BUILD)/bin/rforkd $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 $(BUILD)/lib/librfork.so $(DESTDIR)$(PREFIX)/lib/
	install -m 0644 $(BUILD)/include/rfork.h $(DESTDIR)$(PREFIX)/include/
	install -m 0755 $(BUILD)/libexec/rfork/rfork-standin $(BUILD)/libexec/rfork/rfork-nsinit \
		$(BUILD)/libexec/rfork/rfork-forkbench $(DESTDIR)$(PREFIX)/libexec/rfork/

demo: setup build
	bash scripts/demo.sh

# Remote fork against plain fork and the seed's CRIU pipeline; writes bench/results/latest.{md,json,svg}.
bench: setup build
	$(BUILD)/bin/rfork bench --out bench/results

unit-test:
	$(SWIFT) test

# Every interleaving of the shared-memory coherence protocol, checked by SPIN (spec/coherence.pml).
model-check:
	@command -v spin >/dev/null || { echo "model-check: spin is missing; run: make setup (or apt-get install spin)" >&2; exit 1; }
	@rm -rf $(BUILD)/model-check && mkdir -p $(BUILD)/model-check
	cd $(BUILD)/model-check && spin -a $(CURDIR)/spec/coherence.pml >spin.log && \
		cc -O2 -w -DSAFETY -DCOLLAPSE -o pan pan.c && ./pan -m1000000 >pan.log; \
		grep -E "errors|states, stored" pan.log; grep -q "errors: 0" pan.log || { cat pan.log >&2; exit 1; }

# The suite runs the tools from an installed prefix, so it also checks that they need nothing from here.
integration-test: setup build
	rm -rf $(BUILD)/prefix
	$(MAKE) --no-print-directory install PREFIX=$(CURDIR)/$(BUILD)/prefix
	RFORK_PREFIX=$(CURDIR)/$(BUILD)/prefix bash tests/integration/run.sh
	RFORK_PREFIX=$(CURDIR)/$(BUILD)/prefix bash tests/integration/cluster.sh

# One debug build serves the unit tests and the integration suite.
test:
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory setup
	$(MAKE) --no-print-directory build SWIFT_CONFIG=debug
	$(MAKE) --no-print-directory unit-test
	$(MAKE) --no-print-directory model-check
	$(MAKE) --no-print-directory integration-test SWIFT_CONFIG=debug
	$(MAKE) --no-print-directory sanitize-test SWIFT_CONFIG=debug

# Regenerates the Swift code of the peer protocol (needs protoc and protoc-gen-swift).
proto:
	protoc --swift_out=Sources/RforkWire --swift_opt=Visibility=Public -Iproto proto/peer.proto

format:
	$(SWIFT) format --in-place --recursive $(SWIFT_SOURCES) Package.swift

# Generated code (peer.pb.swift) is left as protoc writes it.
SWIFT_SOURCES := Sources/rfork Sources/rforkd Sources/RforkDaemon Sources/RforkCluster Sources/RforkPlacement Sources/RforkProtocol \
	Sources/RforkCheckpoint Sources/RforkSystem Sources/RforkWire/LocalFrame.swift Sources/RforkWire/PeerFraming.swift Tests

lint:
	$(SWIFT) format lint --strict --recursive $(SWIFT_SOURCES)

clean:
	rm -rf $(BUILD) .build

# ---------------------------------------------------------------------------------------------------------
# Sanitizers: librfork's C unit tests (tests/c) under ASan+UBSan, then the conformance programs on a local
# 3-node cluster with the sanitizer builds of librfork.so (UBSan) and its helpers (ASan+UBSan), installed
# into build/sanitize-prefix next to this tree's rfork and rforkd. Needs root; assumes
# `make build SWIFT_CONFIG=debug`. Reports go to build/sanitize-logs; any report fails it.
SAN_BUILD := $(BUILD)/sanitize
SAN_PREFIX := $(BUILD)/sanitize-prefix

.PHONY: sanitize-test
sanitize-test:
	$(MAKE) -C librfork sanitize-check OUT=$(CURDIR)/$(BUILD) SAN_OUT=$(CURDIR)/$(SAN_BUILD)
	$(MAKE) -C tests/conformance OUT=$(CURDIR)/$(BUILD)/tests
	rm -rf $(SAN_PREFIX)
	install -d $(SAN_PREFIX)/bin $(SAN_PREFIX)/lib $(SAN_PREFIX)/include $(SAN_PREFIX)/libexec/rfork
	install -m 0755 $(BUILD)/bin/rfork $(BUILD)/bin/rforkd $(SAN_PREFIX)/bin/
	install -m 0755 $(SAN_BUILD)/lib/librfork.so $(SAN_PREFIX)/lib/
	install -m 0644 $(SAN_BUILD)/include/rfork.h $(SAN_PREFIX)/include/
	install -m 0755 $(SAN_BUILD)/libexec/rfork/rfork-standin $(SAN_BUILD)/libexec/rfork/rfork-nsinit \
		$(SAN_PREFIX)/libexec/rfork/
	RFORK_PREFIX=$(CURDIR)/$(SAN_PREFIX) bash tests/integration/sanitized.sh
