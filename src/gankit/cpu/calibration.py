"""One calibration: what each measured choice found on this machine, in one cache file.

Four choices are measured rather than assumed, because the same rule loses on another kind of CPU (an
AVX2-only Zen 3 emulates bf16; an AMX Xeon's bf16 kernels beat the frequency domain): the precision
`--precision auto` means (`gankit.cpu.precision`), the frequency-domain crossover per compute dtype
(`gankit.cpu.frequency`), and whether Winograd, the GEMM weight gradient and wide tiny-map GEMMs beat
oneDNN (`gankit.cpu.winograd`, `.wgrad`, `.small_map`). Each is a *section*, measured the first time a
layer (or a run) needs it, in a second or a few, and kept in `<cache>/calibration.json`:

    {"schema": 1, "machines": {"<machine key>": {"<section>": {...figures, "seconds": s}}}}

keyed by `gankit.cpu.machine.machine_key` (CPU model and kind, threads, torch version). A file of
another schema, or a damaged entry, is measured again, never trusted. `$GANKIT_CPU_CALIBRATION`:
`auto` (default) measures what is missing; `off` never measures and takes each section's documented
default (`DEFAULTS`; the test suite runs so); `on` measures every section again once per process. A
data-parallel run's process 0 measures or reads the sections and hands them to the others (`agree`).
"""

from __future__ import annotations

import json
import os
import sys

import torch

from ..errors import GankitError
from .machine import machine_key

SCHEMA = 1
FILE = "calibration.json"
ENV = "GANKIT_CPU_CALIBRATION"
# machine key -> section -> entry, this process (read from the file, measured, or handed by process 0)
_known: dict[str, dict[str, dict]] = {}


def mode() -> str:
    value = os.environ.get(ENV, "auto").strip().lower()
    if value not in ("auto", "on", "off"):
        raise GankitError(f"${ENV}={value!r}: expected auto, on or off")
    return value


def path():
    from ..data.download import cache_dir

    return cache_dir() / FILE


def _read_file() -> dict:
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("schema") != SCHEMA
        or not isinstance(data.get("machines"), dict)
    ):
        return {}
    return data["machines"]


def _write(key: str, section: str, entry: dict) -> str | None:
    from ..io import write_json_atomic

    machines = _read_file()
    machines.setdefault(key, {})[section] = entry
    try:
        path().parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path(), {"schema": SCHEMA, "machines": machines})
    except OSError:  # a read-only cache only costs the measurement next time
        return None
    return str(path())


def entry(section: str, device: torch.device, measure, valid, default: dict, summary=None) -> dict:
    """This machine's entry for `section`: known in this process, else from the file where `valid(entry)`,
    else `measure()`'s (written back; `summary(entry)` printed once to stderr), else under
    `$GANKIT_CPU_CALIBRATION=off` `default` (not written)."""
    key = machine_key(device)
    known = _known.setdefault(key, {})
    if section in known:
        return known[section]
    how = mode()
    if how == "off":
        known[section] = dict(default, unmeasured=True)
        return known[section]
    cached = _read_file().get(key, {}).get(section) if how == "auto" else None
    if isinstance(cached, dict) and valid(cached):
        known[section] = cached
        return cached
    found = measure()
    where = _write(key, section, found)
    if summary is not None:
        print(
            f"{summary(found)}; measured on this {device.type} in {found.get('seconds', 0):.1f} s"
            + (f", cached in {where}" if where else ""),
            file=sys.stderr,
        )
    known[section] = found
    return found


def known(device: torch.device | None = None) -> dict[str, dict]:
    """The sections this process holds for `device` (measured, read or handed over)."""
    return dict(_known.get(machine_key(device or torch.device("cpu")), {}))


def cached(device: torch.device | None = None) -> dict[str, dict]:
    """The sections the cache file holds for `device`, without measuring anything."""
    return _read_file().get(machine_key(device or torch.device("cpu")), {})


def install(sections: dict[str, dict], device: torch.device | None = None) -> None:
    """Take `sections` as this machine's, in this process (what process 0 handed over, or a test's)."""
    _known.setdefault(machine_key(device or torch.device("cpu")), {}).update(sections)


def forget() -> None:
    """Drop what this process holds (the next question reads the file or measures)."""
    _known.clear()


def agree(device: torch.device, bf16: bool) -> None:
    """In a data-parallel CPU run, process 0 alone measures (or reads) every section the run may ask
    for (the frequency domain in fp32, and bf16 when it trains in bf16, and the fp32 algorithms); the
    other processes take its entries: measuring in each would compete for the same cores and could
    disagree."""
    from ..engine import distributed

    if device.type != "cpu" or distributed.world_size() < 2:
        return
    from . import algorithms, frequency

    if distributed.is_main():
        frequency.factor(torch.float32)
        if bf16:
            frequency.factor(torch.bfloat16)
        algorithms.verdicts()
    install(distributed.from_main(known(device) if distributed.is_main() else None), device)
