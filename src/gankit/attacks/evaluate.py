"""Robustness evaluation: robust accuracy and success rate against epsilon, per attack and worst case."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..io import atomic_path, write_json_atomic, write_text_atomic
from .autoattack import MEMBERS, AutoAttack, count_found
from .checks import model_checks, square_check
from .registry import make_attack


def robustness_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_list: list[float],
    attacks: list[str],
    batch_size: int = 32,
    **options,
) -> dict:
    """For each eps and attack: robust accuracy (correct on the adversarial image), success rate (among
    images classified correctly when clean) and mean Linf/L2 perturbation; plus the per-sample worst case
    over all attacks (an image counts as robust only if every attack failed on it).

    AutoAttack rows also count which of its attacks broke how many images (`breakdown`). The report
    carries the protocol (norm, seed, image count; AutoAttack's version and budgets) and the
    gradient-masking warnings of `checks.py`."""
    device = next(model.parameters()).device
    # The checks read the first 100 images; the set itself stays where it is (the attacks move batches).
    rows, warnings = [], model_checks(model, images[:100].to(device), labels[:100].to(device))
    with torch.no_grad():
        clean_correct = (
            torch.cat([model(b.to(device)).argmax(1).cpu() for b in images.split(batch_size)]) == labels
        )
    protocol = {"count": len(labels), "norm": options.get("norm", "linf"), "seed": options.get("seed", 0)}
    for eps in eps_list:
        worst = clean_correct.clone()
        for name in attacks:
            # The whole set at once: the attack feeds the model `batch_size` images at a time (and
            # AutoAttack runs each member over every survivor before the next member starts).
            atk = make_attack(name, model, eps, batch_size=batch_size, **options)
            if isinstance(atk, AutoAttack):
                protocol["autoattack"] = {k: v for k, v in atk.protocol.items() if k != "eps"}
            r = atk.run(images, labels)
            correct_t = (r.adv_pred == r.labels).cpu() & clean_correct
            worst &= correct_t
            row = _row(eps, name, correct_t, clean_correct, r.linf.cpu(), r.l2.cpu())
            if isinstance(atk, AutoAttack) and eps > 0:
                row["breakdown"] = count_found(r.found_by, MEMBERS[atk.version])
                for w in square_check(row["breakdown"]):
                    warnings.append({**w, "eps": eps})
            rows.append(row)
        if len(attacks) > 1:
            rows.append(_row(eps, "worst-case", worst, clean_correct, None, None))
    return {
        "clean_accuracy": clean_correct.float().mean().item(),
        "count": len(labels),
        "attacks": attacks,
        "eps": eps_list,
        "protocol": protocol,
        "warnings": warnings,
        "rows": rows,
    }


def _row(eps, attack, correct, clean_correct, linf, l2) -> dict:
    n_clean = int(clean_correct.sum())
    return {
        "eps": eps,
        "attack": attack,
        "robust_accuracy": correct.float().mean().item(),
        "success_rate": (clean_correct & ~correct).sum().item() / n_clean if n_clean else None,
        "mean_linf": linf.mean().item() if linf is not None else None,
        "mean_l2": l2.mean().item() if l2 is not None else None,
    }


CSV_COLUMNS = ("eps", "attack", "robust_accuracy", "success_rate", "mean_linf", "mean_l2", "broken_by")


def breakdown_text(breakdown: dict | None) -> str:
    """'apgd-ce 12, apgd-t 3, fab-t 0, square 0' (images each attack broke); '' for none."""
    if not breakdown:
        return ""
    return ", ".join(f"{k} {v}" for k, v in breakdown.items() if k not in ("clean", "robust"))


def write_report(report: dict, out: Path, title: str = "") -> list[str]:
    """robustness.json, robustness.csv, robustness.png (robust accuracy vs eps) and robustness.html (a
    self-contained page of both) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "robustness.json", report)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows({**r, "broken_by": breakdown_text(r.get("breakdown"))} for r in report["rows"])
    write_text_atomic(out / "robustness.csv", buf.getvalue())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=100)
    for name in dict.fromkeys(r["attack"] for r in report["rows"]):
        pts = np.array([(r["eps"], r["robust_accuracy"]) for r in report["rows"] if r["attack"] == name])
        ax.plot(
            pts[:, 0] * 255,
            pts[:, 1],
            marker="o",
            label=name,
            linestyle="--" if name == "worst-case" else "-",
        )
    ax.set_xlabel("epsilon (x 1/255)")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "robustness.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    from ..report import write_robustness_page

    write_robustness_page(report, out, title or "robustness")
    return [str(out / f"robustness.{e}") for e in ("json", "csv", "png", "html")]
