# renderocc: `make demo` runs the pipeline end to end, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyPI's standard torch + torchvision pair by default: timm's backbones need torchvision, whose PyPI
# wheels import only beside PyPI's standard torch (a CUDA build; it runs on CPU-only machines too).
# Another CUDA version:  make install TORCH_SPEC="torch==2.14.1 torchvision==0.29.1" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu126"
# CPU-only torch (smaller; the plain ResNet encoder only, no timm backbones):
#   make install TORCH_SPEC="torch==2.14.1" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
DEMO_DIR ?= .demo
DEMO_AIRSIDE_DIR ?= .demo-airside

.PHONY: install test lint demo demo-airside bench clean

$(BIN)/renderocc: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_INDEX) $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[dev]"
	@case "$(TORCH_INDEX)$(TORCH_SPEC)" in *cu[0-9]*) \
	  $(BIN)/python -c "import torch, sys; sys.exit(0 if torch.version.cuda else 'make install: asked for a CUDA build of torch but got ' + torch.__version__ + ' (CPU only): check TORCH_INDEX')" \
	  && $(BIN)/python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)";; esac
	@touch $@

install: $(BIN)/renderocc

test: install
	$(BIN)/ruff check renderocc tests benchmarks
	$(BIN)/python -m pytest tests

lint: install
	$(BIN)/ruff check renderocc tests benchmarks

demo: install
	PATH=$(BIN):$$PATH bash scripts/demo.sh $(DEMO_DIR)

demo-airside: install
	PATH=$(BIN):$$PATH bash scripts/demo_airside.sh $(DEMO_AIRSIDE_DIR)

bench: install
	PATH=$(BIN):$$PATH bash benchmarks/run_all.sh

clean:
	rm -rf $(DEMO_DIR) $(DEMO_AIRSIDE_DIR) build *.egg-info
