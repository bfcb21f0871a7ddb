"""``mocobench report``: every ``results.json`` below some folders -> one tidy DataFrame -> tables and figures.

The tidy frame has one row per (pretraining, task, metric, seed): repeated detection runs
(``--repeats``) contribute one row per seed, so every mean ± std is computed here the same way.
Outputs (``write_report``): ``report.md``, ``report.csv`` (the tidy frame), ``report.html`` (deltas
coloured), ``pivot.csv``, ``delta.csv`` and PNG figures. A missing cell stays missing (``—``), never 0.
An earlier report's ``report.csv`` is an input too: a committed report is extended by new runs (another
pretraining seed) after the folders of its first runs are gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from html import escape as html_escape
from pathlib import Path
from typing import Any

import pandas as pd

from mocobench.atomic import atomic_write, atomic_write_text
from mocobench.checkpoint import file_sha256
from mocobench.metrics import read_metrics
from mocobench.results import RESULTS_FILE, ResultsError, read_results
from mocobench.zoo import published_value

logger = logging.getLogger(__name__)

#: Config fields that do not change a number (resources, bookkeeping); left out of the protocol and the hash.
BOOKKEEPING = frozenset({
    "workers", "device", "chunk_size", "num_procs", "num_machines", "machine_rank", "dist_url", "resume",
    "eval_only", "stop_at", "warm_start", "derived", "on_bad_image", "checkpoint_every", "log_every",
    "tensorboard",
})
#: Recipe settings that do not apply to a method (left out of the pretrainings table).
NOT_APPLICABLE = {"supervised": ("moco_m", "moco_t", "queue_size", "mlp", "aug"), "end_to_end": ("moco_m", "queue_size"),
                  "simclr": ("moco_m", "queue_size")}
#: Speed settings shown in the recipes table only when they are not at their default.
QUIET_DEFAULTS = {"amp": "none", "aug_backend": "pil", "aug_device": "loader"}
#: Row order of the tables (others follow alphabetically) and task families of the figures.
ROW_ORDER = ("supervised", "moco_v2", "moco_v1", "random")
FAMILIES = {"classification": ("knn", "linear", "finegrained", "fewshot", "voc07_svm"),
            "detection": ("voc_det", "coco_det", "coco_instseg"), "segmentation": ("voc_seg", "cityscapes_seg")}
#: Metrics drawn in the figures (the tables show every metric). linear: best val top-1 over the epochs, the
#: official main_lincls.py's ``best_acc1``. A results file may name its own (``derived.headline``): finegrained
#: follows the metric of its data set (mean per class or top-1, as ssl-transfer).
HEADLINE = {"knn": "top1", "linear": "top1_best", "finegrained": "mean_per_class", "voc_det": "bbox_AP50",
            "coco_det": "bbox_AP", "coco_instseg": "segm_AP", "voc_seg": "mIoU", "cityscapes_seg": "mIoU"}
#: Metrics that are not scores (no difference is taken).
NOT_SCORES = frozenset({"best_epoch", "wd"})
#: Metric name prefixes that are not scores either (a confidence half-width, a spread).
NOT_SCORE_PREFIXES = ("ci95_", "std_")
MISSING = "—"


#: The columns of the tidy frame, as ``report.csv`` stores them.
TIDY_COLUMNS = ("pretraining", "task", "metric", "value", "seed", "config_hash", "protocol", "arch", "checkpoint",
                "checkpoint_sha256", "checkpoint_epoch", "recipe", "headline", "zoo", "published", "published_source",
                "path")
#: Tidy columns that are numbers (the others are read as text, so that a hash like ``12345678`` stays text).
TIDY_NUMBERS = ("value", "seed", "checkpoint_epoch", "published")
#: Tidy columns that every row fills.
TIDY_REQUIRED = ("pretraining", "task", "metric", "value", "seed", "config_hash", "protocol", "arch", "checkpoint", "path")
#: What makes a row one measurement: a row found twice under this key (a report re-made from its own csv and the
#: same runs, under any spelling of their folders) is kept once.
MEASUREMENT = ("pretraining", "task", "config_hash", "checkpoint", "checkpoint_sha256", "metric", "seed")
#: What tells two checkpoints of one row apart (one pretraining seed each, say).
CHECKPOINT = ("checkpoint", "checkpoint_sha256")


def find_results(roots: list[str | Path]) -> list[Path]:
    """All ``results.json`` files below ``roots`` (a root may also be a results file)."""
    found: list[Path] = []
    for root in map(Path, roots):
        if not root.exists():
            raise ResultsError(f"{root} does not exist")
        found += [root] if root.is_file() else sorted(root.rglob(RESULTS_FILE))
    if not found:
        raise ResultsError(f"no {RESULTS_FILE} below {', '.join(map(str, roots))}")
    return found


def read_tidy(path: str | Path) -> pd.DataFrame:
    """The tidy frame an earlier report stored (its ``report.csv``), task tags (``task@hash``) removed: ``collect``
    tags again over all its inputs. Only ``""`` is missing, so a recipe ``null`` stays the JSON text it was."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: cannot read it as a report.csv: {e}") from e
    missing = [c for c in TIDY_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsError(f"{path} is not a report.csv of mocobench report (the tidy frame): it lacks the "
                           f"column(s) {', '.join(missing)}")
    for col in TIDY_NUMBERS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in TIDY_REQUIRED:
        if df[col].isna().any():
            line = int(df.index[df[col].isna()][0]) + 2
            raise ResultsError(f"{path}: line {line} has no {col} (a number for value and seed, text otherwise)")
    df["seed"] = df["seed"].astype(int)
    df["recipe"] = df["recipe"].fillna("null")  # a csv edited by hand may have lost the JSON null
    df["task"] = df["task"].str.split("@").str[0]
    return df[list(TIDY_COLUMNS)]


def protocol(config: dict[str, Any]) -> dict[str, Any]:
    """The config fields that define a number (``BOOKKEEPING`` removed, and the fields the task names as
    not applying to it, ``derived.unused``); data folders by their name."""
    unused = set((config.get("derived") or {}).get("unused") or ())
    out = {k: v for k, v in config.items() if k not in BOOKKEEPING and k not in unused}
    if out.get("data"):
        out["data"] = Path(out["data"]).name
    opts = out.get("opts")
    if isinstance(opts, (list, tuple)) and opts and len(opts) % 2 == 0:  # detectron2 KEY VALUE pairs, last wins
        out["opts"] = " ".join(f"{k}={v}" for k, v in dict(zip(opts[::2], opts[1::2], strict=True)).items())
    derived = config.get("derived") or {}
    if "config_file" in derived:  # detection: the shipped detectron2 config
        out["config_file"] = derived["config_file"]
    return out


def config_hash(proto: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(proto, sort_keys=True, default=str).encode()).hexdigest()[:8]


def collect(roots: list[str | Path]) -> pd.DataFrame:
    """One tidy DataFrame of every results file below ``roots``, and of the rows of every ``report.csv`` among
    them (:func:`read_tidy`). A measurement found twice (``MEASUREMENT``: a report re-made from its own csv and
    the same runs) is kept once: from a results file over a csv, from the later csv between two.

    Columns: pretraining, task, metric, value, seed, config_hash, protocol, arch, checkpoint,
    checkpoint_sha256, checkpoint_epoch, recipe, headline (the task's headline metric), zoo (the catalogue
    entry of a ``zoo:NAME`` checkpoint), published and published_source (the number that entry publishes
    for this task and metric, :mod:`mocobench.zoo`), path. ``*_std``
    metrics are dropped (recomputed from the per-seed rows). A task run under several protocols becomes ``task@<config hash>``.
    """
    tidy = [read_tidy(r) for r in roots if str(r).endswith(".csv")]
    dirs = [r for r in roots if not str(r).endswith(".csv")]
    rows = []
    for path in find_results(dirs) if dirs or not tidy else []:
        rec = read_results(path)
        try:
            proto = protocol(rec["config"])
            base = {
                "pretraining": rec["pretraining"], "task": rec["task"], "config_hash": config_hash(proto),
                "protocol": json.dumps(proto, sort_keys=True, default=str), "arch": rec["checkpoint"]["arch"],
                "checkpoint": rec["checkpoint"]["source"], "checkpoint_sha256": rec["checkpoint"].get("sha256"),
                "checkpoint_epoch": rec["checkpoint"].get("epoch"),
                "recipe": json.dumps(rec["checkpoint"].get("recipe"), sort_keys=True),
                "headline": (rec["config"].get("derived") or {}).get("headline") or HEADLINE.get(rec["task"]),
                "zoo": rec["checkpoint"].get("zoo"), "path": str(path),
            }
            runs = (rec["config"].get("derived") or {}).get("runs") or [rec["metrics"]]
            for i, metrics in enumerate(runs):
                for name, value in metrics.items():
                    if not name.endswith("_std") and isinstance(value, (int, float)):
                        pub = published_value(base["zoo"], rec["task"], name)
                        rows.append({**base, "metric": name, "value": float(value), "seed": rec["seed"] + i,
                                     "published": pub.value if pub else math.nan,
                                     "published_source": pub.source if pub else None})
        except (KeyError, TypeError) as e:
            raise ResultsError(f"results file {path} lacks a field of schema 1: {e}") from e
    df = pd.concat([*tidy, pd.DataFrame(rows, columns=list(TIDY_COLUMNS))], ignore_index=True) if tidy else \
        pd.DataFrame(rows, columns=list(TIDY_COLUMNS))
    df["checkpoint_sha256"] = df["checkpoint_sha256"].fillna("")  # None (results) and "" (csv) alike
    df = df.drop_duplicates(subset=list(MEASUREMENT), keep="last").reset_index(drop=True)
    # Numbers of one task under different protocols never share a column: tag the task with its hash.
    n_protocols = df.groupby("task")["config_hash"].transform("nunique")
    df["task"] = df["task"].where(n_protocols == 1, df["task"] + "@" + df["config_hash"])
    return df


def reproduction(df: pd.DataFrame) -> pd.DataFrame:
    """Measured next to published, for the rows of catalogue checkpoints that publish a number for their
    task and metric: pretraining, task, metric, measured (mean over seeds), n, published, difference, source."""
    rows = df[df["published"].notna()]
    if rows.empty:
        return pd.DataFrame(columns=["pretraining", "task", "metric", "measured", "n", "published", "difference",
                                     "source"])
    g = rows.groupby(["pretraining", "task", "metric"], sort=False)
    out = g.agg(measured=("value", "mean"), n=("value", "count"), published=("published", "first"),
                source=("published_source", "first")).reset_index()
    out["difference"] = out["measured"] - out["published"]
    return out[["pretraining", "task", "metric", "measured", "n", "published", "difference", "source"]]


def headlines(df: pd.DataFrame) -> dict[str, str]:
    """The headline metric of each (tagged) task column, as its results files name it."""
    return {t: h for t, h in df.groupby("task")["headline"].first().items() if isinstance(h, str)}


def _row_order(names) -> list[str]:
    names = list(dict.fromkeys(names))
    return [n for n in ROW_ORDER if n in names] + sorted(n for n in names if n not in ROW_ORDER)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (NaN for one seed) and count per (pretraining, task, metric)."""
    g = df.groupby(["pretraining", "task", "metric"], sort=False)["value"]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def pivot(df: pd.DataFrame, stat: str = "mean") -> pd.DataFrame:
    """Rows: pretraining; columns: (task, metric); values: the statistic (NaN where missing)."""
    s = summary(df)
    table = s.pivot_table(index="pretraining", columns=["task", "metric"], values=stat, aggfunc="first",
                           sort=False, dropna=False)
    order = [t for fam in FAMILIES.values() for t in fam]
    present = set(table.columns.get_level_values(0))
    tasks = sorted(present, key=lambda t: (order.index(t.split("@")[0]) if t.split("@")[0] in order else len(order), t))
    pairs = set(zip(s["task"], s["metric"], strict=True))
    cols = [c for t in tasks for c in table.columns if c[0] == t and c in pairs]
    return table.reindex(index=_row_order(table.index), columns=pd.MultiIndex.from_tuples(cols, names=["task", "metric"]))


def formatted_pivot(df: pd.DataFrame) -> pd.DataFrame:
    """``mean ± std (n)`` strings where a cell has several seeds, ``mean`` for one, ``—`` when missing."""
    mean = pivot(df, "mean")
    std, n = (pivot(df, stat).reindex(index=mean.index, columns=mean.columns) for stat in ("std", "n"))

    def cell(m, s, k):
        if m is None or (isinstance(m, float) and math.isnan(m)):
            return MISSING
        return f"{m:.1f} ± {s:.1f} (n={int(k)})" if k and k > 1 else f"{m:.1f}"

    return pd.DataFrame(
        [[cell(mean.iat[i, j], std.iat[i, j], n.iat[i, j]) for j in range(mean.shape[1])] for i in range(mean.shape[0])],
        index=mean.index, columns=mean.columns,
    )


def delta(df: pd.DataFrame, baseline: str = "supervised") -> pd.DataFrame | None:
    """Signed difference of each row's mean from the ``baseline`` row (as the MoCo papers' tables);
    None when there is no baseline row."""
    mean = pivot(df, "mean")
    if baseline not in mean.index:
        return None
    mean = mean[[c for c in mean.columns if c[1] not in NOT_SCORES and not str(c[1]).startswith(NOT_SCORE_PREFIXES)]]
    return mean.drop(index=baseline) - mean.loc[baseline]


def _flat(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out.columns = [f"{t} {m}" for t, m in table.columns]
    return out


def _per_task_markdown(table: pd.DataFrame) -> list[str]:
    lines = []
    for task in dict.fromkeys(table.columns.get_level_values(0)):
        sub = table[task]
        lines += [f"**{task}**", "", sub.to_markdown(disable_numparse=True), ""]
    return lines


def _signed(v: float) -> str:
    if pd.isna(v):
        return MISSING
    return "0.0" if abs(v) < 0.05 else f"{v:+.1f}"  # no "-0.0" for a difference that rounds to zero


def protocols_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct (task, protocol): the settings that define the numbers, and who used them."""
    g = df.groupby(["task", "config_hash", "protocol"], sort=True)["pretraining"]  # task may carry @hash
    rows = [{"task": t, "config": h, "pretrainings": ", ".join(_row_order(p.unique())),
             "protocol": ", ".join(f"{k}={v}" for k, v in json.loads(proto).items() if v not in ("", [], None))}
            for (t, h, proto), p in g]
    return pd.DataFrame(rows)


def _checkpoints(df: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """(row name, its first tidy row) for every checkpoint of every row, in row order: a row pretrained with
    several seeds has several checkpoints."""
    return [(name, sub) for name in _row_order(df["pretraining"])
            for _, sub in df[df["pretraining"] == name].drop_duplicates(list(CHECKPOINT)).iterrows()]


def _several_checkpoints(df: pd.DataFrame) -> pd.Series:
    """Per row name: whether it holds more than one checkpoint."""
    return df.drop_duplicates(["pretraining", *CHECKPOINT]).groupby("pretraining").size() > 1


def recipes_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint: its row, checkpoint, sha256 (what tells apart two files that took turns at one
    path), epoch and the recipe read from it (when it has one)."""
    rows = []
    for name, sub in _checkpoints(df):
        recipe = json.loads(sub["recipe"]) or {}
        for key in NOT_APPLICABLE.get(recipe.get("method"), ()):
            recipe.pop(key, None)
        recipe = {k: v for k, v in recipe.items() if QUIET_DEFAULTS.get(k, object()) != v}
        if recipe.get("data"):
            recipe["data"] = "/".join(Path(recipe["data"]).parts[-2:])
        rows.append({"pretraining": name, "arch": sub["arch"], "checkpoint": sub["checkpoint"],
                     "sha256": sub["checkpoint_sha256"], "epoch": sub["checkpoint_epoch"],
                     "recipe": ", ".join(f"{k}={v}" for k, v in recipe.items() if v is not None and k != "arch")})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- figures
def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (imported on first use, not with the module)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_outside(ax, lines=None) -> None:
    """The legend to the right of the axes, where it covers no bar or line (saved with a tight bounding box); of
    ``lines`` (of any panel) when given, else of the axes' own labelled artists."""
    kw = dict(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    if lines is None:
        ax.legend(**kw)
    else:
        ax.legend(lines, [line.get_label() for line in lines], **kw)


def _save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as PNG atomically (bounding box fitted to everything drawn, legends included) and close it."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    _pyplot().close(fig)
    return path


def bar_figures(df: pd.DataFrame, out: Path) -> list[Path]:
    """One grouped bar chart per task family: headline metric per task, one bar per pretraining (± std)."""
    plt = _pyplot()
    s = summary(df)
    paths = []
    for family, tasks in FAMILIES.items():
        cols = sorted({(t, h) for t, h in headlines(df).items() if t.split("@")[0] in tasks}
                      & set(zip(s["task"], s["metric"], strict=True)), key=lambda c: (tasks.index(c[0].split("@")[0]), c[0]))
        if not cols:
            continue
        names = _row_order(s["pretraining"])
        fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(cols), 3.4))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            vals, errs = [], []
            for t, m in cols:
                hit = s[(s["pretraining"] == name) & (s["task"] == t) & (s["metric"] == m)]
                vals.append(hit["mean"].iloc[0] if len(hit) else float("nan"))
                errs.append(hit["std"].iloc[0] if len(hit) and not pd.isna(hit["std"].iloc[0]) else 0.0)
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(cols))]
            ax.bar(xs, vals, width, yerr=errs, label=name, capsize=2)
        ax.set_xticks(range(len(cols)), [f"{t}\n{m}" for t, m in cols], fontsize=8)
        ax.set_ylabel("score (%)")
        ax.set_title(f"{family} transfer")
        _legend_outside(ax)
        fig.tight_layout()
        paths.append(_save_figure(fig, out / f"fig_{family}.png"))
    return paths


def curve_runs(df: pd.DataFrame) -> dict[str, list[dict]]:
    """``{label: epoch records}`` of every checkpoint whose folder has metrics.jsonl and whose file is still the one
    measured: a checkpoint pretrained again in place (another sha256 than its results record) has the new run's
    metrics beside it, so its old results get no curve rather than the new run's."""
    curves = {}
    several = _several_checkpoints(df)
    for name, sub in _checkpoints(df):
        ckpt = Path(sub["checkpoint"])
        metrics = ckpt.parent / "metrics.jsonl"
        if ckpt.name == "random" or not metrics.is_file():
            continue
        if sub["checkpoint_sha256"] and ckpt.is_file() and file_sha256(ckpt) != sub["checkpoint_sha256"]:
            logger.info("report: no curve for %s's %s (sha256 %s): the file there now is another run's", name, ckpt,
                        sub["checkpoint_sha256"])
            continue
        seed = (json.loads(sub["recipe"]) or {}).get("seed")
        label = f"{name} (pretraining seed {seed})" if several[name] else name
        label = label if label not in curves else f"{label}, {ckpt.parent.name}"
        curves[label] = [r for r in read_metrics(metrics) if r.get("kind") == "epoch"]
    return curves


def pretraining_curves(df: pd.DataFrame, out: Path) -> Path | None:
    """Loss and kNN monitor against epoch for every pretraining that :func:`curve_runs` finds."""
    curves = curve_runs(df)
    return _save_figure(draw_curves(curves), out / "fig_pretraining_curves.png") if curves else None


def draw_curves(curves: dict[str, list[dict]]):
    """The three panels (loss, pretext top-1, kNN monitor) of ``{row: epoch records}``. Each row keeps one colour in
    every panel, also when it has no kNN points (a run without the monitor), and the one legend names every row."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc, ax_knn) = plt.subplots(1, 3, figsize=(12, 3.2))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, recs) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        ax_loss.plot([r["epoch"] + 1 for r in recs], [r["loss"] for r in recs], label=name, color=color)
        ax_acc.plot([r["epoch"] + 1 for r in recs], [r["acc1"] for r in recs], label=name, color=color)
        knn = [r for r in recs if "knn_top1" in r]
        if knn:
            ax_knn.plot([r["epoch"] + 1 for r in knn], [r["knn_top1"] for r in knn], marker="o", color=color)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="pretraining loss")
    ax_acc.set(xlabel="epoch", ylabel="pretext top-1 (%)", title="pretext accuracy (positive / class)")
    ax_knn.set(xlabel="epoch", ylabel="kNN top-1 (%)", title="kNN monitor")
    if ax_loss.lines:  # one legend, beside the last panel, from the loss panel's lines (every row has one)
        _legend_outside(ax_knn, list(ax_loss.lines))
    fig.tight_layout()
    return fig


#: Recipe settings that a sweep varies. "negatives" is the x-axis of the paper's Fig. 3, K: the queue or the
#: bank samples, and for end_to_end the batch size N (its negatives are "K - 1 in end-to-end"); simclr, not in
#: the figure, is placed at its number of negatives, 2N - 2.
SWEPT = ("moco_m", "negatives", "bn_splits", "moco_t", "epochs", "lr")


def _swept_value(recipe: dict, key: str):
    if key == "negatives":
        method = recipe.get("method")
        if method in ("moco_v1", "moco_v2", "memory_bank"):
            return recipe["queue_size"]
        if method in ("end_to_end", "simclr"):
            return recipe["batch_size"] if method == "end_to_end" else 2 * recipe["batch_size"] - 2
    return recipe.get(key)


def sweep_figures(df: pd.DataFrame, out: Path) -> list[Path]:
    """When the pretrainings differ in exactly one recipe setting of ``SWEPT`` (a sweep): the headline
    score of each task against it, one line per method (the paper's Table 1 / Fig. 3 style). Rows
    without a recipe (random init, foreign checkpoints) are left out; settings that do not apply to a
    method are ignored."""
    plt = _pyplot()
    recipes = {n: json.loads(r) for n, r in df.groupby("pretraining")["recipe"].first().items() if json.loads(r)}
    s = summary(df)
    paths = []
    swept = {}
    for key in SWEPT:
        values = {n: _swept_value(r, key) for n, r in recipes.items() if key not in NOT_APPLICABLE.get(r.get("method"), ())}
        values = {n: v for n, v in values.items() if v is not None}
        per_method: dict[str, set] = {}
        for n, v in values.items():
            per_method.setdefault(recipes[n]["method"], set()).add(v)
        if any(len(vs) > 1 for vs in per_method.values()):  # some method has two or more points
            swept[key] = values
    if len(swept) != 1:  # not a sweep (e.g. different recipes compared side by side)
        return []
    for key, values in swept.items():
        for task in sorted(s["task"].unique()):
            metric = headlines(df).get(task)
            hit = s[(s["task"] == task) & (s["metric"] == metric) & s["pretraining"].isin(values)]
            if hit.empty:
                continue
            fig, ax = plt.subplots(figsize=(5, 3.2))
            xs = sorted({values[n] for n in hit["pretraining"]})
            # Sizes spanning a decade or more (K, batch) on a log2 axis; other settings (m) one slot each.
            log_axis = all(isinstance(v, int | float) and v > 0 for v in xs) and max(xs) >= 10 * min(xs)
            for method in sorted({recipes[n]["method"] for n in hit["pretraining"]}):
                pts = sorted((values[n], m) for n, m in zip(hit["pretraining"], hit["mean"], strict=True)
                             if recipes[n]["method"] == method)
                ax.plot([v if log_axis else xs.index(v) for v, _ in pts], [m for _, m in pts], marker="o", label=method)
            if log_axis:
                from matplotlib.ticker import ScalarFormatter

                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(ScalarFormatter())
            else:
                ax.set_xticks(range(len(xs)), [str(v) for v in xs])
            xlabel = "K (queue or bank; end_to_end: batch N = K)" if key == "negatives" else key
            ax.set(xlabel=xlabel, ylabel=f"{task} {metric} (%)", title=f"{task} against {key}")
            _legend_outside(ax)
            fig.tight_layout()
            paths.append(_save_figure(fig, out / f"fig_sweep_{key}_{task.replace('@', '_')}.png"))
    return paths


# --------------------------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class Report:
    out: Path
    tidy: pd.DataFrame
    pivot: pd.DataFrame
    delta: pd.DataFrame | None
    files: tuple[Path, ...]


#: The report page's whole stylesheet, inlined: readable at laptop width, wide tables scroll inside themselves.
CSS = """body{font-family:'DejaVu Sans',system-ui,sans-serif;max-width:1180px;margin:1.5em auto;padding:0 1em;
color:#1f2328;line-height:1.45}h1{font-size:1.55em}h2{font-size:1.25em;border-bottom:1px solid #d0d7de;
padding-bottom:.2em;margin-top:1.8em}h3{font-size:1em;margin:1.1em 0 .3em}
table{border-collapse:collapse;margin:.3em 0 1em;font-size:.88em;display:block;overflow-x:auto;width:fit-content;
max-width:100%}
th,td{border:1px solid #d0d7de;padding:.25em .6em;text-align:right;white-space:nowrap}thead th{background:#f6f8fa}
th:first-child,td:first-child{text-align:left}table.wrap td{white-space:normal;text-align:left;min-width:8em}
img{max-width:100%;height:auto;display:block;margin:.4em 0 1.4em}p.note{color:#57606a;font-size:.9em}"""


def _html_delta(table: pd.DataFrame, uid: str) -> str:
    def colour(v):
        if pd.isna(v) or v == 0:
            return ""
        return "color: #1a7f37" if v > 0 else "color: #cf222e"

    return table.style.set_uuid(uid).format(_signed).map(colour).to_html()  # fixed ids: same input, same bytes


def _html_per_task(table: pd.DataFrame, delta: bool = False) -> list[str]:
    """One ``<h3>`` and table per task, as the markdown has (no table wider than a task's metrics)."""
    out = []
    for i, task in enumerate(dict.fromkeys(table.columns.get_level_values(0))):
        sub = table[task]
        out += [f"<h3>{task}</h3>", _html_delta(sub, f"delta{i}") if delta else sub.to_html()]
    return out


def _inline_png(path: Path) -> str:
    """An ``<img>`` carrying the PNG itself (a data URI): the page needs no other file and fetches nothing."""
    import base64

    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img src='data:image/png;base64,{data}' alt='{path.stem}'>"


def _code_spans(text: str) -> str:
    """`x` -> <code>x</code> in already escaped text."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def read_notes(path: str | Path) -> tuple[str, ...]:
    """The items of a notes file: each line starting with ``- `` begins an item, other non-empty lines continue it."""
    items: list[str] = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("- ") or not items:
            items.append(line.removeprefix("- ").strip())
        elif line.strip():
            items[-1] += " " + line.strip()
    return tuple(i for i in items if i)


def write_report(roots: list[str | Path], out: str | Path, baseline: str = "supervised", title: str = "",
                 notes: tuple[str, ...] = ()) -> Report:
    """Collect, tabulate and plot; every file is written atomically into ``out``. ``notes``: the items of a
    "What this can and cannot show" section after the results (plain text; `code` spans kept in the HTML)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = collect(roots)
    table, dtable = formatted_pivot(df), delta(df, baseline)
    protos, recipes = protocols_table(df), recipes_table(df)
    figures = bar_figures(df, out) + sweep_figures(df, out)
    curve = pretraining_curves(df, out)
    figures += [curve] if curve else []

    title = title or f"mocobench report: {out.name}"
    seeds = ("seeds (± std, n when more than one: the probe's seeds, and a row's pretraining seeds where it has "
             "several checkpoints)" if _several_checkpoints(df).any()
             else "seeds (± std, n seeds when more than one)")
    md = [f"# {title}", "", f"{df['path'].nunique()} results files; {df['pretraining'].nunique()} pretrainings, "
          f"{df['task'].nunique()} tasks. Cells: mean over {seeds}; "
          f"{MISSING} = not run. One table per task (columns: its metrics; rows: pretrainings).", "",
          "## Results", ""]
    md += _per_task_markdown(table)
    if notes:
        md += ["## What this can and cannot show", "", *(f"- {n}" for n in notes), ""]
    if dtable is not None:
        md += [f"## Difference from {baseline}", "", "Signed difference of the means (points); positive is better "
               f"than {baseline}.", ""]
        md += _per_task_markdown(dtable.map(_signed))
    elif baseline:
        md += [f"(No `{baseline}` row: no difference table.)", ""]
    repro = reproduction(df)
    if not repro.empty:
        md += ["## Published numbers", "", "Catalogue checkpoints (`zoo:NAME`): the measured mean next to the number "
               "published for the same file, and where it was published. Only a run of the published protocol "
               "at full scale (the paper preset) can reproduce it.", "",
               repro.to_markdown(index=False, floatfmt=".2f"), ""]
    md += ["## Protocols", "", "The settings behind each number (config hash = `config` column of report.csv).", "",
           protos.to_markdown(index=False, disable_numparse=True), "", "## Pretrainings", "", recipes.to_markdown(index=False, disable_numparse=True), ""]
    md += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]

    html = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>", f"<title>{title}</title>",
            f"<style>{CSS}</style></head><body>", f"<h1>{title}</h1>", f"<p class='note'>{md[2]}</p>",
            "<h2>Results</h2>", *_html_per_task(table)]
    if notes:
        html += ["<h2>What this can and cannot show</h2>", "<ul>",
                 *(f"<li>{_code_spans(html_escape(n))}</li>" for n in notes), "</ul>"]
    if dtable is not None:
        html += [f"<h2>Difference from {baseline}</h2>", "<p class='note'>Signed difference of the means (points); "
                 f"green is better than {baseline}, red worse.</p>", *_html_per_task(dtable, delta=True)]
    if not repro.empty:
        html += ["<h2>Published numbers</h2>", repro.to_html(index=False, float_format="%.2f")]
    html += ["<h2>Protocols</h2>", protos.to_html(index=False, classes="wrap"), "<h2>Pretrainings</h2>",
             recipes.to_html(index=False, classes="wrap"), "<h2>Figures</h2>"]
    html += [_inline_png(p) for p in figures] + ["</body></html>"]

    files = [out / "report.md", out / "report.html", out / "report.csv", out / "pivot.csv"]
    atomic_write_text(files[0], "\n".join(md))
    atomic_write_text(files[1], "\n".join(html) + "\n")
    atomic_write_text(files[2], df.to_csv(index=False))
    atomic_write_text(files[3], _flat(pivot(df)).to_csv())
    if dtable is not None:
        files.append(out / "delta.csv")
        atomic_write_text(files[-1], _flat(dtable).to_csv())
    logger.info("report: %d rows from %s -> %s", len(df), ", ".join(map(str, roots)), out / "report.md")
    return Report(out, df, table, dtable, tuple(files + figures))
