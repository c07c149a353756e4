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

.PHONY: install demo test test-all lint encoder clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[train,edge,bench,dev]"
	rm -f $(VENV)/.installed-*
	touch $@

# synth -> train (frozen pretrained encoder, cached features) -> int8 TFLite -> edge_caption
demo: $(STAMP)
	$(BIN)/caption-data synth $(DEMO)/data --images $(DEMO_IMAGES) --seed 0
	$(BIN)/caption-train --data $(DEMO)/data --encoder mobilenet_synth --decoder lstm \
		--out $(DEMO)/run --feature-cache $(DEMO)/features
	$(BIN)/caption-export $(DEMO)/run --format tflite --quantize int8 --out $(DEMO)/bundle-int8
	$(BIN)/python -m edgecap.benchmarks.demo prepare $(DEMO)
	$(BIN)/edge_caption --model $(DEMO)/bundle-int8 --source $(DEMO)/test_images --jsonl > $(DEMO)/test_captions.jsonl
	$(BIN)/edge_caption --model $(DEMO)/bundle-int8 --source $(DEMO)/test_video.mp4 --every 15 --jsonl > $(DEMO)/video_captions.jsonl
	$(BIN)/python -m edgecap.benchmarks.demo report $(DEMO) --bundle $(DEMO)/bundle-int8 --run $(DEMO)/run

# The recipe of the shipped demo encoder (train/assets/mobilenet_synth.keras).
encoder: $(STAMP)
	$(BIN)/caption-data synth artifacts/encoder-data --images $(ENCODER_IMAGES) --seed 12345
	$(BIN)/caption-train pretrain-encoder --data artifacts/encoder-data --out $(ENCODER_FILE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf artifacts .pytest_cache
