"""AutoAttack (Croce and Hein 2020): the ensemble by which robust accuracy is reported.

version "standard" (Linf or L2): APGD-CE, APGD-T (targeted DLR, 9 targets), FAB-T (9 targets) and
Square (5,000 queries), each with one restart and 100 iterations, in that order; each runs on the
images that every earlier attack failed on, and an image counts as robust only if all four fail.
version "rand", for randomised defences: APGD-CE and APGD-DLR with gradients averaged over 20
forward passes (EOT).

Each attack leaves an image out of its search once it is broken (`early_stop`): robust accuracy is
what it would be without, the work is less. With `batch_size`, a whole split handed to `run` is
attacked as the reference implementation does it: each attack runs over all the images still robust,
a batch at a time, before the next one starts, so the later attacks get full batches of survivors
rather than a few images from each batch.

    aa = AutoAttack(model, eps=8/255, norm="linf")
    result = aa.run(images, labels)        # result.found_by: which attack broke each image
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import GankitError
from .apgd import APGD, APGDT
from .base import Attack, AttackResult, project
from .fab import FAB
from .square import Square

# The attacks of each version, in the order they run.
MEMBERS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}
VERSIONS = tuple(MEMBERS)


class AutoAttack(Attack):
    """AutoAttack under the Linf or L2 norm: see the module docstring.

    steps: iterations of APGD, APGD-T and FAB-T (default 100); queries: Square's budget (default
    5000); n_targets: target classes of APGD-T and FAB-T (default 9). Untargeted only. After `run`,
    `found_by` names, per image, the attack that broke it ("clean" when already misclassified, None
    when robust); `breakdown` counts them.
    """

    first_step_at_input = False
    supports_target = False

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        norm: str = "linf",
        version: str = "standard",
        steps: int = 100,
        queries: int = 5000,
        n_targets: int = 9,
        **kw,
    ):
        super().__init__(model, eps, norm=norm, **kw)
        if version not in VERSIONS:
            raise GankitError(f"--version {version!r}: expected one of {', '.join(VERSIONS)}")
        if steps < 1 or queries < 1 or n_targets < 1:
            raise GankitError("--steps, --queries and n_targets must be at least 1")
        self.version, self.steps, self.queries, self.n_targets = version, steps, queries, n_targets
        self.found_by: list[str | None] = []

    @property
    def protocol(self) -> dict:
        """What a robust accuracy measured with this attack must be reported with."""
        return {
            "attack": "autoattack",
            "version": self.version,
            "norm": self.norm,
            "eps": self.eps,
            "steps": self.steps,
            "queries": self.queries if self.version == "standard" else None,
            "n_targets": self.n_targets if self.version == "standard" else None,
            "seed": self.seed,
            "attacks": list(MEMBERS[self.version]),
        }

    def components(self) -> list[tuple[str, Attack]]:
        """The attacks in the order they run."""
        m, e = self.model, self.eps
        common = {"norm": self.norm, "batch_size": self.batch_size}
        searching = {**common, "early_stop": True}  # APGD's: leave a sample at its first success
        seeds = [self.seed * 7 + k for k in range(4)]
        if self.version == "rand":
            return [
                ("apgd-ce", APGD(m, e, self.steps, loss="ce", eot=20, seed=seeds[0], **searching)),
                ("apgd-dlr", APGD(m, e, self.steps, loss="dlr", eot=20, seed=seeds[1], **searching)),
            ]
        return [
            ("apgd-ce", APGD(m, e, self.steps, loss="ce", seed=seeds[0], **searching)),
            ("apgd-t", APGDT(m, e, self.steps, n_targets=self.n_targets, seed=seeds[1], **searching)),
            ("fab-t", FAB(m, e, self.steps, n_targets=self.n_targets, seed=seeds[2], **common)),
            ("square", Square(m, e, self.queries, seed=seeds[3], **common)),
        ]

    def perturb(self, x, labels, targets):
        if targets is not None:
            raise GankitError("autoattack is untargeted: leave out --target")
        pred = self.logits(x).argmax(1)
        labels = pred if labels is None else labels
        robust = pred == labels
        found: list[str | None] = ["clean" if not ok else None for ok in robust.tolist()]
        adv = x.clone()
        for name, attack in self.components():
            idx = robust.nonzero()[:, 0]
            if not len(idx):
                break
            tried = project(attack.perturb_batches(x[idx], labels[idx], None)[0], x[idx], self.eps, self.norm)
            broken = self.logits(tried).argmax(1) != labels[idx]
            # An image no attack breaks keeps the first attack's highest-loss point: the nearest
            # thing to an adversarial example there is for it.
            keep = broken if name != "apgd-ce" else torch.ones_like(broken)
            adv[idx[keep]] = tried[keep]
            robust[idx[broken]] = False
            for i in idx[broken].tolist():
                found[i] = name
        self.found_by = found
        return adv, labels

    def perturb_batches(self, x, labels, targets):
        # `perturb` batches each member attack itself, attack after attack.
        return self.perturb(x, labels, targets)

    def run(self, images: torch.Tensor, labels: torch.Tensor | None = None, target=None) -> AttackResult:
        result = super().run(images, labels, target)
        result.found_by = (
            list(self.found_by)
            if self.eps > 0
            else ["clean" if bad else None for bad in (result.clean_pred != result.labels).tolist()]
        )
        return result

    @property
    def breakdown(self) -> dict:
        """How many images each attack broke in the last call (and how many were misclassified clean)."""
        return count_found(self.found_by, MEMBERS[self.version])


def count_found(found_by: list[str | None], names) -> dict:
    """{"clean": n, attack: n, ..., "robust": n} from per-image found_by entries."""
    counts = {k: 0 for k in ["clean", *names, "robust"]}
    for f in found_by:
        counts["robust" if f is None else f] += 1
    return counts
