"""The fused CPU kernel for decode-time attention (`csrc/decode_attention.cpp`): built on first use, optional.

At decode time each (batch, head) pair attends a few query positions over a few dozen cached keys. Through
torch operations that is hundreds of tiny matrix products per call, which mostly wait on memory; the kernel
reads each key and value row once per query position, in registers. One call with the benchmark's greedy
cross-attention shape (64 x 4 heads, 1 query over 32 keys of 64, fp32, 2 threads, data in cache) takes 33 us,
against 100-140 us through torch's matmuls or SDPA. End to end in the benchmark's model (bench/generation.py
setup, 2 threads, 256 sources, kernel on and off in alternation in one process, 3 rounds): greedy decoding
13-19% faster in fp32 and 21-27% in bf16, 4 beams 12-17% faster in both, with the same tokens.

The kernel is compiled with torch's C++ extension builder the first time a decode step needs it (about 25 s
on 2 cores; then cached in `s2s/` under torch's extension folder, `TORCH_EXTENSIONS_DIR`), for the CPU it runs
on (`-march=native`; the name carries the CPU's instruction sets, so a home folder shared between different
machines keeps one build per kind of CPU). Without a C++ compiler or ninja, or when the build fails, decoding
goes on through torch operations, with the same results, and one log line says why. Set `S2S_DECODE_KERNEL=0`
to never build or use it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "decode_attention.cpp"
ENV_SWITCH = "S2S_DECODE_KERNEL"
LANES = 16  # the kernel's head size must be a multiple of this (see the source)
# torch's builder holds a lock file in the build folder while it builds or loads; a build killed hard (SIGKILL,
# out of memory) leaves it behind, and every later load would wait on it forever. A build takes about 25 s, so
# a lock this old is stale.
STALE_LOCK_SECONDS = 600

_lock = threading.Lock()
_loaded: dict[str, Callable[..., Tensor] | None] = {}


def enabled() -> bool:
    """False when the user switched the kernel off (`S2S_DECODE_KERNEL=0`)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def supports(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, scale: float | None = None) -> bool:
    """Whether the kernel handles these inputs: CPU, one dtype (fp32 or bf16), no autograd, contiguous head
    dimension of a multiple of 16, the default 1/sqrt(head size) score scale and at most a bool mask. A float
    mask (an additive bias, as T5's relative positions) or another scale goes through torch operations."""
    return (
        scale is None
        and (mask is None or mask.dtype == torch.bool)
        and q.device.type == "cpu"
        and q.dtype in (torch.float32, torch.bfloat16)
        and q.dtype == k.dtype == v.dtype
        and q.size(-1) % LANES == 0
        and q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
        and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
    )


def kernel() -> Callable[..., Tensor] | None:
    """The compiled `decode_attention(q, k, v, mask)`, building it on the first call; None when switched off
    or when it cannot be built (logged once)."""
    if not enabled():
        return None
    name = extension_name()
    if name not in _loaded:
        with _lock:
            if name not in _loaded:
                _loaded[name] = _build(name)
    return _loaded[name]


@functools.cache
def extension_name() -> str:
    """One build per source text, torch and Python version and kind of CPU (the build uses `-march=native`)."""
    fingerprint = hashlib.sha256()
    fingerprint.update(SOURCE.read_bytes())
    fingerprint.update(torch.__version__.encode())
    fingerprint.update(sys.version.encode())
    fingerprint.update(_cpu_flags().encode())
    return f"s2s_decode_attention_{fingerprint.hexdigest()[:12]}"


def build_directory(name: str) -> Path:
    """Under torch's extension folder (`TORCH_EXTENSIONS_DIR`, or its default in the user's cache)."""
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    return Path(root) / "s2s" / name


def clear_stale_lock(directory: Path, *, max_age: float = STALE_LOCK_SECONDS) -> bool:
    """Remove the builder's lock file when it is older than `max_age` seconds (see STALE_LOCK_SECONDS);
    True when one was removed."""
    lock = directory / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age <= max_age:
        return False
    logger.warning("removing the stale lock %s (%.0f s old) of an interrupted kernel build", lock, age)
    lock.unlink(missing_ok=True)
    return True


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(name: str) -> Callable[..., Tensor] | None:
    from torch.utils import cpp_extension

    try:
        directory = build_directory(name)
        directory.mkdir(parents=True, exist_ok=True)
        if not any(directory.glob(f"{name}*.so")):
            logger.info(
                "building the decode-attention kernel %s (once per machine, ~25 s; %s=0 skips it)",
                name,
                ENV_SWITCH,
            )
        clear_stale_lock(directory)
        with _ninja_on_path():
            module = cpp_extension.load(
                name=name,
                sources=[str(SOURCE)],
                build_directory=str(directory),
                extra_cflags=["-O3", "-march=native", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
    except Exception as error:  # no compiler, no ninja, a failed build: decoding goes on through torch
        logger.warning(
            "decode-attention kernel not available (%s: %s); decoding uses torch operations (same results, "
            "slower). It needs a C++ compiler and ninja (`pip install ninja`); set %s=0 to silence this.",
            type(error).__name__,
            str(error).strip().splitlines()[-1] if str(error).strip() else "",
            ENV_SWITCH,
        )
        return None
    return module.decode_attention


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """torch looks for the `ninja` executable on PATH; the `ninja` package (a dependency) installs one next to
    the interpreter's scripts, which is not on PATH when the environment is not activated."""
    try:
        import ninja
    except ImportError:
        yield
        return
    saved = os.environ.get("PATH")
    os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, saved]) if saved else ninja.BIN_DIR
    try:
        yield
    finally:
        if saved is None:
            del os.environ["PATH"]
        else:
            os.environ["PATH"] = saved
