"""A run's self-contained HTML report (evaluation/report.html): config, loss curves, previews over
time, the evaluation's numbers with their protocol, and the recipe's own panels, images embedded."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .io import write_text_atomic

MAX_PREVIEWS = 8

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; padding: 0 1.5em; max-width: 72em;
color: #222; } pre { white-space: pre-wrap; background: #f6f6f6; padding: 0.6em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #eee;
text-align: left; vertical-align: top; } th { color: #555; font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0 1em 1em 0; } figcaption { color: #555; font-size: 12px; }
img { image-rendering: pixelated; max-width: 100%; border: 1px solid #ddd; }
"""


def _img(path: Path, caption: str, width: int | None = None) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    w = f' width="{width}"' if width else ""
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"{w}>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _rows(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _rows(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v if isinstance(v, str) else json.dumps(v)))
    return out


def _table(d: dict, numeric: bool = False) -> str:
    cls = ' class="num"' if numeric else ""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td{cls}>{html.escape(v)}</td></tr>" for k, v in _rows(d))
    return f"<table>{body}</table>"


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def write_report(run_dir: str | Path, report: dict) -> Path:
    """Write RUN/evaluation/report.html from the run's files and the evaluation `report`."""
    run = Path(run_dir)
    out = run / "evaluation" / "report.html"
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    title = f"gankit {config.get('recipe', 'run')} on {config.get('data', '?')}: {run.name}"
    parts = [f"<h1>{html.escape(title)}</h1>"]
    lines = report.get("lines", [])
    if lines:
        parts.append("<pre>" + html.escape("\n".join(lines)) + "</pre>")
    metrics = report.get("metrics") or {k: v for k, v in report.items() if _is_number(v)}
    scores = {  # e.g. pix2pix's model and baselines: dicts of numbers
        k: v
        for k, v in report.items()
        if k != "metrics"
        and not k.startswith("quality")
        and isinstance(v, dict)
        and v
        and all(isinstance(x, dict) or _is_number(x) for x in v.values())
    }
    if metrics or scores:
        parts += ["<h2>Metrics</h2>", _table({**metrics, **scores}, numeric=True)]
    if report.get("protocol"):
        parts += ["<h2>Protocol</h2>", _table(report["protocol"])]
    for k, v in report.items():  # translation recipes: FID/KID per direction, each with its protocol
        if k.startswith("quality") and isinstance(v, dict):
            parts.append(f"<h2>Image quality ({html.escape(k)})</h2>")
            parts += (
                [_table(v["metrics"], numeric=True), _table(v["protocol"])] if "metrics" in v else [_table(v)]
            )
    panels = sorted((run / "evaluation").glob("*.png"))
    if panels:
        parts += ["<h2>Evaluation panels</h2>", *(_img(p, p.stem) for p in panels)]
    if (run / "metrics.jsonl").is_file():
        from .viz import plot_monitored

        curve = plot_monitored(run / "metrics.jsonl", run / "monitored.png", title)
        if curve is not None:
            parts += ["<h2>Quality over training</h2>", _img(curve, "monitored metric")]
    if (run / "loss.png").is_file():
        parts += ["<h2>Losses</h2>", _img(run / "loss.png", "loss curves")]
    previews = sorted((run / "previews").glob("epoch-*.png"))
    if len(previews) > MAX_PREVIEWS:  # first, last, and evenly spaced between
        step = (len(previews) - 1) / (MAX_PREVIEWS - 1)
        previews = [previews[round(i * step)] for i in range(MAX_PREVIEWS)]
    if previews:
        parts += ["<h2>Previews over training</h2>", *(_img(p, p.stem, 240) for p in previews)]
    if config:
        parts += ["<h2>Configuration</h2>", _table(config)]
    write_text_atomic(out, _page(title, parts))
    return out


def _page(title: str, parts: list[str]) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def _grid(rows: list[dict]) -> str:
    """A table with a header row from a list of records."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)

    def cell(v) -> str:
        text = f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))
        return f'<td class="num">{html.escape(text)}</td>'

    body = "".join("<tr>" + "".join(cell(r.get(k)) for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_robustness_page(report: dict, out: Path, title: str) -> Path:
    """OUT/robustness.html: the robust-accuracy curve (embedded) and its table, self-contained."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts.append(f"<pre>clean accuracy {report['clean_accuracy']:.2%} on {report['count']} images</pre>")
    warnings = report.get("warnings") or []
    if warnings:
        parts.append("<h2>Warnings: possible gradient masking</h2>")
        parts.append(
            "<ul>"
            + "".join(
                f"<li><b>{html.escape(w['check'])}</b>: {html.escape(w['message'])}</li>" for w in warnings
            )
            + "</ul>"
        )
    if report.get("protocol"):
        parts += ["<h2>Protocol</h2>", f"<pre>{html.escape(json.dumps(report['protocol'], indent=1))}</pre>"]
    if (out / "robustness.png").is_file():
        parts += ["<h2>Robust accuracy against epsilon</h2>", _img(out / "robustness.png", "attack curves")]
    rows = [
        {k: v for k, v in r.items() if k != "breakdown"}
        | (
            {"broken by": ", ".join(f"{k} {n}" for k, n in r["breakdown"].items())}
            if r.get("breakdown")
            else {}
        )
        for r in report["rows"]
    ]
    parts += ["<h2>Per attack and epsilon</h2>", _grid(rows)]
    path = out / "robustness.html"
    write_text_atomic(path, _page(title, parts))
    return path
