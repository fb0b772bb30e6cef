"""The attack registry: every attack by its command-line name, and how options reach it.

A class added to ATTACKS gets the attack contract tests (tests/test_attack_contract.py), the
`gankit attack` and `gankit evaluate --attack` commands and the robustness curves without more code.
"""

from __future__ import annotations

import inspect

import torch.nn as nn

from ..errors import GankitError
from .apgd import APGD, APGDT
from .autoattack import AutoAttack
from .base import Attack
from .fab import FAB
from .gradient import BIM, FGSM, MIFGSM, PGD
from .square import Square

ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM,
    "bim": BIM,
    "pgd": PGD,
    "mifgsm": MIFGSM,
    "apgd": APGD,
    "apgdt": APGDT,
    "fab": FAB,
    "square": Square,
    "autoattack": AutoAttack,
}


def make_attack(name: str, model: nn.Module, eps: float, **options) -> Attack:
    """An attack by CLI name; options the attack does not take are dropped (e.g. steps for FGSM)."""
    if name not in ATTACKS:
        raise GankitError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    cls = ATTACKS[name]
    return cls(model, eps, **{k: v for k, v in options.items() if k in accepted_options(cls)})


def accepted_options(cls: type[Attack]) -> set[str]:
    """The keyword options an attack class takes, through its whole constructor chain."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break  # this constructor takes nothing further up the chain
    return names - {"self", "model", "eps"}
