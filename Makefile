# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp names a hash of pyproject.toml, so editing the dependencies reinstalls them.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-10)
DEMO := artifacts/demo
DEMO_IMAGES ?= 4000
ENCODER_IMAGES ?= 16000
ENCODER_FILE := train/assets/mobilenet_synth.keras

.PHONY: install demo bench bench-inputs bench-training test test-all lint encoder synth-results flickr8k docs-tables dist clean \
	release-model platforms-prepare test-debian13 test-arm64 test-pi-matrix

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[train,edge,bench,dev]"
	rm -f $(VENV)/.installed-*
	touch $@

# synth -> train (frozen pretrained encoder, cached features) -> int8 TFLite -> edge_caption,
# then the built-in Flickr8k model on real photos: docs/photos, and Flickr8k test photos at
# their original size (with references) where ../shared has them.
ORIGINALS ?= $(wildcard ../shared/data/flickr8k-originals)
F8K_TOKENS ?= ../shared/data/flickr8k/Flickr8k.token.txt
demo: $(STAMP)
	$(BIN)/caption-data synth $(DEMO)/data --images $(DEMO_IMAGES) --seed 0
	$(BIN)/caption-train --data $(DEMO)/data --encoder mobilenet_synth --decoder lstm \
		--out $(DEMO)/run --feature-cache $(DEMO)/features
	$(BIN)/caption-export $(DEMO)/run --format tflite --quantize int8 --out $(DEMO)/bundle-int8
	$(BIN)/python -m edgecap.export.demo prepare $(DEMO)
	$(BIN)/edge_caption --model $(DEMO)/bundle-int8 --source $(DEMO)/test_images --jsonl > $(DEMO)/test_captions.jsonl
	$(BIN)/edge_caption --model $(DEMO)/bundle-int8 --source $(DEMO)/test_video.mp4 --realtime --every 15 \
		--output $(DEMO)/annotated.mp4 --jsonl > $(DEMO)/video_captions.jsonl
	$(BIN)/python -m edgecap.export.demo report $(DEMO) --bundle $(DEMO)/bundle-int8 --run $(DEMO)/run
	$(BIN)/python -m edgecap.export.demo photos docs/photos $(ORIGINALS) \
		$(if $(ORIGINALS),--annotations $(F8K_TOKENS)) --out $(DEMO)/photos.json

# The recipe of the shipped demo encoder (train/assets/mobilenet_synth.keras).
encoder: $(STAMP)
	$(BIN)/caption-data synth artifacts/encoder-data --images $(ENCODER_IMAGES) --seed 12345
	$(BIN)/caption-train pretrain-encoder --data artifacts/encoder-data --out $(ENCODER_FILE)

# Every export pair of the demo run on this machine, with the Keras baselines (README
# "Benchmarks"). Run `make demo` first; pairs missing under $(DEMO)/bundles are exported
# first (their names come from export/formats.py's RECIPES). Writes $(BENCH)/results.json,
# results.md and latency_quality.png. BENCH_ARGS adds caption-bench options.
BENCH := artifacts/bench
BENCH_ARGS ?=
bench: $(STAMP)
	@test -f $(DEMO)/run/config.json || { echo "make bench: no $(DEMO)/run; run 'make demo' first" >&2; exit 2; }
	for pair in $$($(BIN)/python -c "from edgecap.export.formats import RECIPES; print(*(r.name for r in RECIPES))"); do \
		test -f $(DEMO)/bundles/$$pair/manifest.json || \
			$(BIN)/caption-export $(DEMO)/run --format $${pair%%-*} --quantize $${pair#*-} \
				--out $(DEMO)/bundles/$$pair || exit 1; \
	done
	$(BIN)/caption-bench $(DEMO)/bundles/* --data $(DEMO)/data --split test \
		--keras-run $(DEMO)/run --out $(BENCH) $(BENCH_ARGS)

# The README's synthetic results table: every decoder on the demo data, greedy and beam 3.
# Run `make demo` first (it makes the data and the feature cache). About 45 minutes on 2 cores.
SYNTH_RESULTS := artifacts/synth-results
synth-results: $(STAMP)
	for decoder in lstm merge blstm; do \
		$(BIN)/caption-train --config synth-$$decoder --data $(DEMO)/data \
			--out $(SYNTH_RESULTS)/run-$$decoder --feature-cache $(DEMO)/features || exit 1; \
		for beam in 1 3; do \
			$(BIN)/caption-train evaluate $(SYNTH_RESULTS)/run-$$decoder --data $(DEMO)/data --beam $$beam \
				--feature-cache $(DEMO)/features --out $(SYNTH_RESULTS)/eval-$$decoder-beam$$beam || exit 1; \
		done; \
	done
	$(BIN)/python -m edgecap.train.eval_table $(SYNTH_RESULTS)/eval-*/metrics.json --out $(SYNTH_RESULTS)/table.md

# The real Flickr8k models (README "Flickr8k"): train, export and evaluate each model of
# export/pipeline.py's MODELS, then write $(F8K_OUT)/table.md. Hours on 2 cores; resumable:
# a rerun skips every run, bundle and evaluation already finished. F8K_BUNDLES=tflite-int8
# exports and evaluates only that bundle of each model (the one make release-model ships). FLICKR8K and
# IMAGENET_WEIGHTS default to the copies in ../shared when they are there.
FLICKR8K ?= $(wildcard ../shared/data/flickr8k-224)
IMAGENET_WEIGHTS ?= $(wildcard ../shared/weights/imagenet)
F8K_OUT ?= artifacts/flickr8k
F8K_MODELS ?= all
F8K_BUNDLES ?= all
flickr8k: $(STAMP)
	PYTHONUNBUFFERED=1 $(BIN)/python -m edgecap.export.pipeline --data "$(FLICKR8K)" \
		--weights-dir "$(IMAGENET_WEIGHTS)" --out $(F8K_OUT) --models $(F8K_MODELS) --bundles $(F8K_BUNDLES)

# Ship a bundle that `make flickr8k` made as the package's built-in model
# (edge_runtime/models/NAME): its hashes, parity record and card are checked, it is re-scored
# on the whole test split (greedy and beam 3), and the scores and its provenance go into its
# model card. A later, better model replaces it the same way. Commit the folder it writes.
RELEASE_BUNDLE ?= $(F8K_OUT)/mobilenet_v2-lstm-tflite-int8
release-model: $(STAMP)
	@test -f $(RELEASE_BUNDLE)/manifest.json || { echo "make release-model: no bundle at $(RELEASE_BUNDLE); run 'make flickr8k F8K_MODELS=mobilenet_v2-lstm' first, or pass RELEASE_BUNDLE=DIR" >&2; exit 2; }
	@test -n "$(FLICKR8K)" || { echo "make release-model: no Flickr8k folder; pass FLICKR8K=DIR" >&2; exit 2; }
	$(BIN)/python -m edgecap.export.release $(RELEASE_BUNDLE) --data "$(FLICKR8K)"

# The input-kinds study, export/studies/input_kinds.py (photo files, 12 MP JPEGs, 720p/1080p
# frames, a 720p video; the fast and the exact preprocessing) on the demo bundle and the
# Flickr8k int8 bundle, each where it exists. A few minutes; run it on an otherwise idle machine.
PHOTOS ?= $(wildcard ../shared/data/flickr8k-originals ../shared/data/imagenet_check)
F8K_INT8 := $(F8K_OUT)/mobilenet_v2-lstm-tflite-int8
bench-inputs: $(STAMP)
	@test -n "$(PHOTOS)" || { echo "make bench-inputs: no photos; set PHOTOS to folders of JPEGs" >&2; exit 2; }
	test ! -f $(DEMO)/bundle-int8/manifest.json || $(BIN)/python export/studies/input_kinds.py $(DEMO)/bundle-int8 \
		$(foreach d,$(PHOTOS),--photos $(d)) --out $(DEMO)/bench-inputs
	test ! -f $(F8K_INT8)/manifest.json || $(BIN)/python export/studies/input_kinds.py $(F8K_INT8) \
		$(foreach d,$(PHOTOS),--photos $(d)) --out $(F8K_OUT)/bench/inputs

# Peak memory and time of training (export/studies/training_memory.py): Flickr8k from a cold
# and a warm feature cache, LSTM and BLSTM, and 10,000 vs 100,000 synthetic captions.
# About 40 minutes on 2 cores; `make docs-tables` puts the table in the README.
bench-training: $(STAMP)
	$(BIN)/python export/studies/training_memory.py --flickr8k "$(FLICKR8K)" \
		--weights "$(IMAGENET_WEIGHTS)/mobilenet_v2_1.0_224_imagenet_bnfolded_no_top.h5" \
		--out artifacts/bench/training-memory

# The tables that come from result files, regenerated from them (each where its file exists),
# and docs/cli.md's option tables, from the console scripts' parsers.
# Flickr8k: the evaluations under $(F8K_OUT)/eval update their rows of the committed record
# docs/results/flickr8k.json, and the README table shows the whole record, so a rerun of
# one model keeps the others' rows. The cross-entropy parents of SCST models (NAME-xe) are
# left out: docs/flickr8k.md records them.
F8K_RECORD := docs/results/flickr8k.json
# The final Flickr8k bundles on an NVIDIA H200 (ONNX on the CUDA provider, TFLite on LiteRT's
# GPU accelerator), each against the host's 16 CPU cores (docs/benchmarks.md#nvidia-gpu-h200):
# committed caption-bench results, merged into docs/bench/h200.
GPU_RESULTS := $(addprefix docs/results/h200/,onnx-cuda.json onnx-cpu.json litert-gpu.json litert-cpu.json)
INPUTS_RESULTS = $(wildcard $(F8K_OUT)/bench/inputs/inputs.json $(DEMO)/bench-inputs/inputs.json)
docs-tables: $(STAMP)
	test ! -f artifacts/demo/report.json || \
		$(BIN)/caption-bench render demo artifacts/demo/report.json --into README.md
	$(BIN)/python -m edgecap.train.eval_table $(shell ls $(F8K_OUT)/eval/*/metrics.json 2>/dev/null | grep -v -- '-xe-') \
		--record $(F8K_RECORD)
	$(BIN)/caption-bench render flickr8k $(F8K_RECORD) --into README.md
	test -z "$(INPUTS_RESULTS)" || { \
		$(BIN)/caption-bench render inputs $(INPUTS_RESULTS) --into docs/benchmarks.md && \
		$(BIN)/caption-bench render inputs-before-after $(INPUTS_RESULTS) --into README.md; }
	$(BIN)/caption-bench merge $(GPU_RESULTS) --out docs/bench/h200 > /dev/null
	test ! -f artifacts/bench/training-memory/training-memory.json || \
		$(BIN)/caption-bench render training-memory artifacts/bench/training-memory/training-memory.json --into README.md
	test ! -f $(PI_MATRIX_RECORD) || \
		$(BIN)/python tests/platforms/matrix.py render --record $(PI_MATRIX_RECORD) --into docs/raspberry-pi.md --marker pi-matrix
	$(BIN)/python tests/cli_reference.py render --into docs/cli.md

# The wheel and sdist a device installs (the package is not on a public index): dist/.
# Rebuilt when pyproject.toml or any packaged file changes.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
WHEEL := dist/edge_caption-$(VERSION)-py3-none-any.whl
PACKAGED := $(shell git ls-files edge_runtime train export benchmarks 2>/dev/null)
dist: $(WHEEL)
$(WHEEL): $(STAMP) pyproject.toml README.md $(PACKAGED)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

# The Raspberry Pi legacy environment: tflite-runtime 2.14 + numpy < 2, no ai_edge_litert and
# no TensorFlow, with edge-caption installed from the built wheel (not the checkout), so
# that package data, entry points and the no-TensorFlow import are proven on what a user
# installs. tests/e2e/test_pi_legacy.py runs the runtime's tests (tests/edge_runtime/) in it.
PI_VENV := $(VENV)/pi-legacy
PI_STAMP := $(PI_VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-10)
$(PI_STAMP): pyproject.toml $(WHEEL)
	$(PYTHON) -m venv $(PI_VENV)
	$(PI_VENV)/bin/pip install --quiet --upgrade pip
	$(PI_VENV)/bin/pip install --quiet "$(WHEEL)[pi-legacy]" "pytest>=8.0" "pytest-timeout>=2.3" "hypothesis>=6.100"
	$(PI_VENV)/bin/pip install --quiet --force-reinstall --no-deps "$(WHEEL)"  # same version, new build
	rm -f $(PI_VENV)/.installed-*
	touch $@

# Other Pythons and arm64 (docs/testing.md, "Debian roots"): the BUILT WHEEL installed into
# Debian roots made with debootstrap, the runtime tests (the folder tests/edge_runtime/) run
# there, and the captions of the check photos and the first 200 Flickr8k test photos
# compared with this machine's, image by image, and scored. Needs root and `apt-get install
# debootstrap qemu-user-static binfmt-support`; not part of `make test`. Run them niced
# (`nice -n 19 make test-arm64`) beside other work. ROOTS holds the roots and the .deb and
# pip caches, outside the repo; a finished root is reused. BUNDLE: the bundle to caption
# with; empty means the package's built-in model (the default once there is one).
# test-debian13: x86_64 Debian 13 (trixie, Python 3.13) with [edge].
# test-arm64: arm64 under QEMU user-mode emulation: Debian 12 (bookworm, Python 3.11) with
# [edge] and [pi-legacy], Debian 13 (Python 3.13) with [edge].
ROOTS ?= $(HOME)/.cache/edgecap-roots
ARM_CPU ?= cortex-a76  # the core QEMU emulates: cortex-a76 (Pi 5), cortex-a72 (Pi 4), cortex-a53
SHARED ?= ../shared
PLATFORMS := artifacts/platforms
BUILTIN := $(firstword $(wildcard edge_runtime/models/*/manifest.json))
BUNDLE ?= $(if $(BUILTIN),,$(DEMO)/bundle-int8)
DEMO_BUNDLE ?=
ROOT_SH = ROOTS="$(ROOTS)" ARM_CPU="$(strip $(ARM_CPU))" WHEEL="$(abspath $(WHEEL))" BUNDLE="$(if $(BUNDLE),$(abspath $(BUNDLE)))" \
	DEMO_BUNDLE="$(if $(DEMO_BUNDLE),$(abspath $(DEMO_BUNDLE)))" \
	SHARED="$(abspath $(SHARED))" PLATFORMS="$(abspath $(PLATFORMS))" PYTHON="$(abspath $(BIN)/python)" \
	PI_PYTHON="$(abspath $(PI_VENV)/bin/python)" \
	bash tests/platforms/debian_root.sh
DEBIAN13_RUNS := debian13-amd64:edge
ARM64_RUNS := debian12-arm64:edge debian12-arm64:pi-legacy debian13-arm64:edge

platforms-prepare: $(STAMP) $(WHEEL) $(PI_STAMP)
	@test -z "$(BUNDLE)" || test -f "$(BUNDLE)/manifest.json" || { \
		echo "make: no bundle at BUNDLE=$(BUNDLE); run 'make demo' or set BUNDLE=FOLDER" >&2; exit 2; }
	@test -z "$(DEMO_BUNDLE)" || test -f "$(DEMO_BUNDLE)/manifest.json" || { \
		echo "make: no bundle at DEMO_BUNDLE=$(DEMO_BUNDLE); run 'make demo' or set DEMO_BUNDLE=FOLDER" >&2; exit 2; }
	$(ROOT_SH) prepare

test-debian13 test-arm64: platforms-prepare
	@status=0; start=$$(date +%s); \
	for run in $(if $(filter test-arm64,$@),$(ARM64_RUNS),$(DEBIAN13_RUNS)); do \
		$(ROOT_SH) run $${run%%:*} $${run#*:} || status=1; \
	done; \
	$(ROOT_SH) summary $(subst :,-,$(if $(filter test-arm64,$@),$(ARM64_RUNS),$(DEBIAN13_RUNS))) || status=1; \
	echo "make $@: $$(( $$(date +%s) - start )) s (platforms-prepare not counted)"; exit $$status

# The Raspberry Pi OS matrix (docs/raspberry-pi.md, "Tested images"): one row per image a
# user may run, each an emulated Debian root of its release and architecture
# (tests/platforms/matrix.py's ROWS): Raspberry Pi OS 64-bit Bookworm ([edge], [pi-legacy]),
# Trixie ([edge]), Bullseye (Debian 11, Python 3.9) and 32-bit Bookworm (armhf). Each row:
# the install command and its time and download, the backend and delegate, the runtime tests,
# and the captions of 200 Flickr8k test photos against x86's with the built-in model and the
# demo bundle. A row that does not install is measured too (pip's error is its verdict).
# Updates the record docs/results/pi-matrix.json; `make docs-tables` renders it. Needs
# root and the tools of test-arm64 (qemu-user-static covers armhf); new roots take up to
# an hour each to make under emulation, and each row minutes; not part of `make test`.
PI_MATRIX_RECORD := docs/results/pi-matrix.json
# Evaluated when used (after platforms-prepare made the venv): matrix.py imports edgecap.
PI_MATRIX_RUNS = $(shell $(BIN)/python tests/platforms/matrix.py runs)
test-pi-matrix: DEMO_BUNDLE = $(DEMO)/bundle-int8
test-pi-matrix: platforms-prepare
	@status=0; start=$$(date +%s); \
	for run in $(PI_MATRIX_RUNS); do \
		rc=0; $(ROOT_SH) run $${run%%:*} $${run#*:} || rc=$$?; \
		[ $$rc = 0 ] || [ $$rc = 3 ] || status=1; \
	done; \
	$(BIN)/python tests/platforms/matrix.py report $(addprefix $(PLATFORMS)/,$(subst :,-,$(PI_MATRIX_RUNS))) \
		--record $(PI_MATRIX_RECORD) --out $(PLATFORMS)/pi-matrix.md || status=1; \
	echo "make $@: $$(( $$(date +%s) - start )) s (platforms-prepare not counted)"; exit $$status

test: $(STAMP) $(PI_STAMP)
	EDGECAP_PI_PYTHON=$(PI_VENV)/bin/python $(BIN)/python -m pytest -q

test-all: $(STAMP) $(PI_STAMP)
	EDGECAP_PI_PYTHON=$(PI_VENV)/bin/python $(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf artifacts .pytest_cache dist
