# MicroFaaS front door. `make demo` and `make test` do all their own setup.
SHELL := /bin/bash
GO ?= go
ARCH ?= x86
OUT ?= out
# Kernel recipe (mfbuild kernel --version): a folder of configs/kernel/ (6.1, 5.10).
KVERSION ?= 6.1
TEST_TIMEOUT ?= 60m
# Fuzzing budgets are execution counts, not durations: with a duration, Go
# 1.26's fuzz coordinator can fail a clean run with "context deadline
# exceeded" when the deadline races a busy worker (go.dev/issue/75804, fixed
# in Go 1.27). A count has no deadline to race. FUZZSCALE multiplies them all.
FUZZSCALE ?= 1

.PHONY: all deps deps-demo build demo experiment test test-short bench images bbb-images verify-reproducible clean

all: build

deps:
	@scripts/install-deps.sh
	@scripts/services/install.sh
	@scripts/openfaas/install.sh

# Only what `make demo` needs (an x86 kernel build and QEMU): a first demo
# does not wait for the ARM toolchain, the services, the browser or OpenFaaS.
deps-demo:
	@scripts/install-deps.sh --demo

build:
	@mkdir -p bin
	$(GO) build -trimpath -o bin/ ./cmd/mfbuild ./cmd/mforch ./cmd/mfinit ./cmd/mfrelay

images: deps-demo build
	bin/mfbuild worker --arch $(ARCH) --version $(KVERSION) --out $(OUT)/$(ARCH)

# One SD-card image per BeagleBone worker of the example cluster (docs/images.md).
bbb-images: deps-demo build
	bin/mfbuild image sdcard --cluster configs/cluster.example.yaml --all --out $(OUT)/images

# Build an x86 worker, boot a local cluster of 3 QEMU workers, run the
# compute functions, print the summary table and write out/demo/report.html.
demo: images
	bin/mforch demo --kernel $(OUT)/x86/bzImage --initrd $(OUT)/x86/initramfs.cpio \
		--workers 3 --invocations 36 --out $(OUT)/demo

# A short version of the original experiment: 170 invocations of the whole
# 17-function suite on 3 QEMU workers, against real Redis, PostgreSQL, S3
# and Kafka on loopback; records a run folder under $(OUT)/experiments and
# prints the summary table and the report's path (docs/experiments.md).
experiment: deps images
	bin/mforch experiment examples/experiments/quick.yaml --out $(OUT)/experiments/quick-$$(date +%Y%m%d-%H%M%S)

# The whole suite, QEMU boots included (the kernel build is cached outside
# the repository, so only the first run pays for it).
test: deps build
	$(GO) vet ./...
	@echo "== building the x86 worker once, so the test packages share its cache entry"
	bin/mfbuild worker --arch x86 --version $(KVERSION) --out $(OUT)/x86
	@echo "== building the ARM worker and U-Boot once (BeagleBone images, ARM QEMU boots)"
	bin/mfbuild worker --arch arm --version $(KVERSION) --out $(OUT)/arm
	bin/mfbuild uboot
	@echo "== the GPIO test kernel: the x86 worker kernel plus the test-only gpio-sim fragment"
	bin/mfbuild kernel --arch x86 --version $(KVERSION) --fragment configs/kernel/test-gpio-sim.config
	@echo "== the 5.10 series (Debian bullseye), x86 and ARM, booted by builder's TestKernel510Boots"
	bin/mfbuild worker --arch x86 --version 5.10 --out $(OUT)/x86-5.10
	bin/mfbuild worker --arch arm --version 5.10 --out $(OUT)/arm-5.10
	$(GO) test -timeout $(TEST_TIMEOUT) -count=1 ./...
	@echo "== brief fuzzing of the decoders and argument parsing"
	$(GO) test -run '^$$' -fuzz FuzzReceive -fuzztime $$(( 200000 * $(FUZZSCALE) ))x ./protocol/
	$(GO) test -run '^$$' -fuzz FuzzJob -fuzztime $$(( 50000 * $(FUZZSCALE) ))x ./runtime/
	$(GO) test -run '^$$' -fuzz FuzzFunctions -fuzztime $$(( 20000 * $(FUZZSCALE) ))x ./runtime/functions/
	$(GO) test -run '^$$' -fuzz FuzzBootParams -fuzztime $$(( 200000 * $(FUZZSCALE) ))x ./bootparams/

# Unit tests only: no kernel build, no VM.
test-short:
	$(GO) test -short -count=1 ./...

bench: deps build
	$(GO) test -run '^$$' -bench ColdStart -benchtime 10x -timeout 30m ./e2e/
	$(GO) test -run '^$$' -bench Scheduler -benchtime 20000x -cpu 1,2 ./orchestrator/
	$(GO) test -run '^$$' -bench DeployedColdCalls -benchtime 1x -v -timeout 60m ./orchestrator/openfaas/
	$(GO) test -run '^$$' -bench Rack100x24h -benchtime 1x ./lab/sim/

# Build kernel and initramfs twice, each from an empty cache, and compare bytes.
verify-reproducible: deps build
	scripts/verify-reproducible.sh $(ARCH) $(KVERSION)

clean:
	rm -rf bin $(OUT)
