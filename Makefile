# Tandem's entry points. Each target installs what is missing (Debian
# packages, through scripts/install-deps.sh) and builds first.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: deps configure build tools test demo demo-detect bench bench-ddp clean

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) > /dev/null

build: configure
	@bash scripts/check-blas.sh
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Only what `make demo` runs: the library and the two tools (not the tests,
# benchmarks' extras or examples).
tools: configure
	@bash scripts/check-blas.sh
	cmake --build $(BUILD_DIR) -j $(JOBS) --target tandem_cli tandem-run

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 300 -j 2

# About a minute of 2-rank data-parallel training (ResNet-18, synthetic
# CIFAR-10), then the 2-rank collective bandwidth table. Builds only the two
# tools it runs; `make test` builds the rest.
demo: tools
	$(BUILD_DIR)/tools/tandem-run --nproc-per-node 2 -- $(BUILD_DIR)/tools/tandem train \
		--model resnet18 --data synthetic-cifar --dataset-size 4096 --steps 120 \
		--batch-size 16 --lr 0.05 --momentum 0.9 --nesterov --log-every 5
	$(BUILD_DIR)/tools/tandem-run --nproc-per-node 2 -- $(BUILD_DIR)/tools/tandem bench comm \
		--op all_reduce,reduce_scatter,all_gather --backend auto,gloo --min-bytes 4096 \
		--max-bytes 4194304 --rounds 1

# A short detection training on 2 ranks (docs/detect.md): a make-shapes set of
# 256 + 64 images, yolo-n at imgsz 160 for 5 epochs with `device=0,1`, which
# re-launches the command with one rank per device. Writes runs/detect/trainN
# under $(BUILD_DIR) (weights, results.csv, results.png, PR curve, val
# predictions).
demo-detect: tools
	$(BUILD_DIR)/tools/tandem detect make-shapes $(BUILD_DIR)/demo-shapes --train 512 --val 128 \
		--imgsz 160
	$(BUILD_DIR)/tools/tandem detect train model=yolo-n data=$(BUILD_DIR)/demo-shapes/shapes.yaml \
		epochs=12 imgsz=160 batch=16 device=0,1 project=$(BUILD_DIR)/runs/detect

# The comparison of docs/benchmarks.md: every backend beside raw MPI_Allreduce.
bench: build
	bash bench/comm_compare.sh $(BUILD_DIR) $(BUILD_DIR)/comm_compare.jsonl
	@command -v python3 >/dev/null && python3 bench/comm_table.py $(BUILD_DIR)/comm_compare.jsonl || true

# Tandem's DDP beside PyTorch's own (Debian's python3-torch, Gloo) on ResNet-18
# and a 1024-wide MLP, alternating rounds; the comparison in docs/benchmarks.md.
bench-ddp: build
	@bash scripts/install-deps.sh --bench
	/usr/bin/python3 bench/ddp_vs_pytorch.py $(BUILD_DIR) --rounds 5 --pytorch-keep-freed-memory

clean:
	rm -rf $(BUILD_DIR)
