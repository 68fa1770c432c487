# The two commands of the README. Both install what they need on first use (.venv/, see
# tools/setup_env.sh) and are quick the second time.
PY := .venv/bin/python
export PYTHONHASHSEED := 0

.PHONY: demo test install
install:
	@bash tools/setup_env.sh

demo: install   ## train + COCO eval + fused checkpoint on the synthetic shapes dataset (CPU, ~12 min on 2 cores)
	$(PY) tools/demo.py $(ARGS)

test: install   ## the whole test suite (CI runs exactly this)
	$(PY) -m pytest tests $(ARGS)
