# Tandem's entry points. Each target installs what is missing (Debian
# packages, through scripts/install-deps.sh) and builds first.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: deps configure build test demo bench clean

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) > /dev/null

build: configure
	@bash scripts/check-blas.sh
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 300 -j 2

# Until data-parallel training lands: the collective benchmark on 2 ranks.
demo: build
	$(BUILD_DIR)/tools/tandem-run --nproc-per-node 2 -- $(BUILD_DIR)/tools/tandem bench comm \
		--op all --backend auto,gloo --min-bytes 4096 --max-bytes 16777216 --rounds 1

# The comparison of docs/benchmarks.md: every backend beside raw MPI_Allreduce.
bench: build
	bash bench/comm_compare.sh $(BUILD_DIR) $(BUILD_DIR)/comm_compare.jsonl
	@command -v python3 >/dev/null && python3 bench/comm_table.py $(BUILD_DIR)/comm_compare.jsonl || true

clean:
	rm -rf $(BUILD_DIR)
