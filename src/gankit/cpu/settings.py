"""Every knob of the CPU fast paths, read once from the environment into one typed object.

One convention for every path: `GANKIT_CPU_<PATH>=auto|on|off`. `auto` (the default) takes the path
where its rule says so; for a calibrated path (`CALIBRATED`) the rule includes this machine's measured
verdict (`gankit.cpu.calibration`). `on` takes it wherever its rule's shape conditions hold, without
measuring; `off` never. `GANKIT_AUTO_PRECISION=fp32|bf16` says what `--precision auto` means without
measuring it. Variables are read when the settings are first used; `refresh()` reads them again and
`override()` changes them for a block of code (benchmarks switching a path inside one process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

from ..errors import GankitError

# path -> what it is (the table of `gankit doctor` and the docs' performance page list them in this order)
PATHS = {
    "channels_last": "networks and image batches in channels-last (NHWC) layout, on every device",
    "host_memory": "glibc keeps freed tensor memory for reuse instead of unmapping it",
    "frequency_conv": "stride-1 transposed convolutions on small maps in the frequency domain",
    "winograd": "fp32 stride-1 3x3 and 4x4 convolutions by Winograd F(4x4, 3x3) / F(3x3, 4x4)",
    "gemm_wgrad": "fp32 4x4 stride-2 layers at small batches: the weight gradient as one GEMM",
    "small_map": "convolutions on batches of tiny maps (N x H x W <= 128 px) as im2col + one GEMM",
    "small_map_wide": "fp32 wide layers on maps of at most 16 px as im2col + one GEMM",
    "narrow_conv": "stride-1 'same' convolutions with 1-3 output channels as GEMM + shifted adds",
    "bias_apart": "a transposed convolution's bias added after it (its fused bias gradient is slow)",
    "fast_dropout": "dropout masks from one 64-bit random draw per four elements",
    "per_image_norm": "instance norm (and per-image batch norm) of up to 16 images, layout kept",
    "layout_flatten": "flatten/unflatten that keep a channels-last network channels-last",
}
# Paths whose `auto` consults this machine's calibration; the others follow their shape rules alone.
CALIBRATED = ("frequency_conv", "winograd", "gemm_wgrad", "small_map_wide")
MODES = ("auto", "on", "off")
PRECISION_ENV = "GANKIT_AUTO_PRECISION"
# Names these knobs had before they shared one convention: set, they are refused with their new name.
_RENAMED = {
    "GANKIT_FREQUENCY_CONV": "GANKIT_CPU_FREQUENCY_CONV",
    "GANKIT_WINOGRAD": "GANKIT_CPU_WINOGRAD",
    "GANKIT_GEMM_WGRAD": "GANKIT_CPU_GEMM_WGRAD",
    "GANKIT_SMALL_MAP_WIDE": "GANKIT_CPU_SMALL_MAP_WIDE",
    "GANKIT_MEMORY_FORMAT": "GANKIT_CPU_CHANNELS_LAST",
    "GANKIT_KEEP_HOST_MEMORY": "GANKIT_CPU_HOST_MEMORY",
}


def env_name(path: str) -> str:
    """The variable of `path`: GANKIT_CPU_<PATH>."""
    return f"GANKIT_CPU_{path.upper()}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The mode of each path (`PATHS`: auto, on or off) and the forced precision (None: measured)."""

    modes: dict[str, str]
    precision: str | None = None

    def mode(self, path: str) -> str:
        return self.modes[path]

    def enabled(self, path: str) -> bool:
        """Not switched off (a calibrated path under `auto` still asks its verdict)."""
        return self.modes[path] != "off"

    def forced(self, path: str) -> bool | None:
        """True for on, False for off, None for auto."""
        return {"on": True, "off": False}.get(self.modes[path])


def read(environ=os.environ) -> Settings:
    """Settings from `environ`; a bad value is a one-line GankitError naming the variable."""
    for old, new in _RENAMED.items():
        if old in environ:
            raise GankitError(f"${old} is no longer read: set ${new}=auto|on|off instead")
    modes = {}
    for path in PATHS:
        value = environ.get(env_name(path), "auto").strip().lower()
        if value not in MODES:
            raise GankitError(f"${env_name(path)}={value!r}: expected auto, on or off")
        modes[path] = value
    precision = environ.get(PRECISION_ENV) or None
    if precision not in (None, "fp32", "bf16"):
        raise GankitError(f"${PRECISION_ENV}={precision!r}: expected fp32 or bf16")
    return Settings(modes, precision)


_current: Settings | None = None


def current() -> Settings:
    """This process's settings, read from the environment the first time they are asked for."""
    global _current
    if _current is None:
        _current = read()
    return _current


def refresh() -> Settings:
    """Read the environment again (after a change to it, e.g. in a test)."""
    global _current
    _current = None
    return current()


@contextlib.contextmanager
def override(precision: str | None = None, **modes: str):
    """Run a block with some paths' modes (and the forced precision) changed: `override(winograd="off")`."""
    global _current
    before = current()
    unknown = set(modes) - set(PATHS)
    if unknown or any(v not in MODES for v in modes.values()):
        raise ValueError(f"override: paths {sorted(PATHS)} take {MODES}; got {modes}")
    _current = Settings({**before.modes, **modes}, precision if precision is not None else before.precision)
    try:
        yield _current
    finally:
        _current = before


def describe() -> list[str]:
    """One line per path: its variable, its mode here and what it does."""
    s = current()
    return [f"{env_name(p):28} {s.mode(p):4}  {what}" for p, what in PATHS.items()]
