"""The ``mocobench`` command. Each sub-command parses options, builds a typed config and calls one
library function; heavy modules are imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import sys

import click

from mocobench.options import config_file_pairs, dataclass_options, merge_config_file, read_config_file
from mocobench.pretrain.config import PretrainConfig
from mocobench.suite import PRESETS as SUITE_PRESETS
from mocobench.sweep import SWEEPS as SWEEP_NAMES

logger = logging.getLogger("mocobench")


def versions() -> str:
    """``mocobench X (torch Y, torchvision Z, detectron2 W)`` from the installed distributions' metadata (nothing
    heavy is imported; a package that is not installed says so)."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    def get(name: str, *dists: str) -> str:
        for dist in (name, *dists):
            try:
                return version(dist)
            except PackageNotFoundError:
                pass
        if name == "detectron2" and importlib.util.find_spec(name) is not None:  # on sys.path without metadata
            import detectron2

            return detectron2.__version__
        return "not installed"

    others = ", ".join(f"{n} {get(n, *d)}" for n, *d in (("torch",), ("torchvision",), ("detectron2", "sal-detectron2")))
    return f"mocobench {get('mocobench')} ({others})"


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(versions())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the versions of mocobench, torch, torchvision and detectron2, and exit.")
def main() -> None:
    """MoCo v1/v2 pretraining and transfer benchmarks for ResNets."""


@main.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML file of these options (a run's config.yaml re-runs it); options given here override it.")
@dataclass_options(PretrainConfig, enforce_required=False)
def pretrain(config_file, **options) -> None:
    """Pretrain MoCo v1/v2 (or the supervised baseline) on a folder of images (one process, or N under torchrun).

    \b
    Defaults are the published recipes (ResNet-50, batch 256, lr 0.03 per 256 images, K 65536,
    m 0.999; v1: T 0.07, fc head, step lr; v2: T 0.2, MLP head, cosine lr, blur; supervised:
    lr 0.1 per 256, 90 epochs, x0.1 at 30 and 60).
    Example (CPU, small):
      mocobench pretrain --data imagenette/train --out runs/v2 --arch resnet18 \\
          --image-size 64 --batch-size 64 --queue-size 4096 --epochs 20
    Several processes:  torchrun --nproc_per_node 2 -m mocobench.cli pretrain ...
    Again, from a run's saved config:  mocobench pretrain --config runs/v2/config.yaml --out runs/v2-again
    """
    from mocobench.atomic import OutputFolderError
    from mocobench.checkpoint import CheckpointError
    from mocobench.datasets import DataError
    from mocobench.pretrain.config import ConfigError
    from mocobench.pretrain.engine import NonFiniteLossError
    from mocobench.pretrain.engine import pretrain as run

    try:
        run(PretrainConfig(**merge_config_file(config_file, PretrainConfig, options)))
    except (ConfigError, DataError, CheckpointError, NonFiniteLossError, OutputFolderError) as e:
        raise click.ClickException(str(e)) from e


def load_options(fn):
    """``--format``, ``--prefix``, ``--part``, ``--stem``: how the one reader reads a checkpoint whose
    structure does not say (``mocobench.checkpoint.LoadOptions``); passed to ``fn`` as ``load``."""
    import functools

    from mocobench.layouts import BY_NAME, STEMS

    @click.option("--format", "fmt", type=click.Choice(list(BY_NAME)), default=None,
                  help="Force a checkpoint layout (default: recognised from the file's structure).")
    @click.option("--prefix", default=None, help="Read the ResNet under this key prefix of any layout, e.g. "
                  "'encoder.' (keys outside it are dropped and listed in results.json).")
    @click.option("--part", default=None, help="Which backbone of a file holding several (dino: teacher, the "
                  "default, or student; moco_official: query or key).")
    @click.option("--stem", type=click.Choice(["standard", *STEMS]), default=None,
                  help="The stem of a 3x3-conv1 (small-image) ResNet, where its layout does not name it.")
    @functools.wraps(fn)
    def wrapper(*args, fmt, prefix, part, stem, **kwargs):
        from mocobench.checkpoint import LoadOptions

        return fn(*args, load=LoadOptions(fmt, prefix, part, stem), **kwargs)

    return wrapper


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("checkpoint")
@click.option("--task", "task_name", required=True, help="Task name (mocobench tasks lists them).")
@click.option("--data", default=None, help="Data root of the task (same as --set data=ROOT).")
@click.option("--out", default=None, help="Output folder (default: runs/transfer/<task>/<checkpoint name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a task config field.")
@click.option("--arch", default=None, help="Required for 'random'; checked against the checkpoint otherwise.")
@click.option("--pretraining", default=None, help="Name of the pretraining in results (default: from the checkpoint).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--overwrite", is_flag=True, help="Replace an existing results.json in --out.")
@click.option("--preset", default=None, help="Detection: a preset of the task (cpu-smoke, cpu-crop).")
@click.option("--num-gpus", type=click.IntRange(min=1), default=None, help="Detection: processes per machine (GPUs; CPU processes without CUDA).")
@click.option("--num-machines", type=click.IntRange(min=1), default=None, help="Detection: machines.")
@click.option("--machine-rank", type=click.IntRange(min=0), default=None, help="Detection: rank of this machine.")
@click.option("--dist-url", default=None, help="Detection: rendezvous URL.")
@click.option("--resume", is_flag=True, default=None, help="Detection: resume the last detectron2 checkpoint.")
@click.option("--eval-only", is_flag=True, default=None, help="Detection: evaluate only.")
@click.option("--repeats", type=click.IntRange(min=1), default=None, help="Detection: runs with consecutive seeds (mean and std).")
@click.option("--feature-cache", default=None, type=click.Path(file_okay=False),
              help="Frozen-feature cache folder (default: OUT/feature_cache); share it between runs of one checkpoint.")
@click.option("--feature-cache-fp16", is_flag=True, help="Store cached features in float16 (half the disk).")
@click.option("--tensorboard/--no-tensorboard", default=None,
              help="linear, voc_seg, cityscapes_seg: TensorBoard events in OUT/tensorboard (default on).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML file of the task's config keys (a results.json re-runs its task); --set and options win.")
@load_options
def transfer(checkpoint, task_name, data, out, overrides, arch, pretraining, seed, overwrite, preset, num_gpus,
             num_machines, machine_rank, dist_url, resume, eval_only, repeats, feature_cache, feature_cache_fp16,
             tensorboard, config_file, load) -> None:
    """Evaluate CHECKPOINT (a file, zoo:NAME, or 'random') on one transfer task; writes OUT/results.json.

    CHECKPOINT may be any layout of the README's table (mocobench, official MoCo, MoCo v3, solo-learn,
    lightly, mmselfsup, VISSL, DINO, SwAV, PyContrast, detectron2 .pkl, a torchvision state dict), a
    catalogue entry zoo:NAME (mocobench zoo list), or 'random' (with --arch). --set KEY=VALUE overrides a
    field of the task's config (mocobench tasks lists them); --set normalize=imagenet|swav|none overrides
    the input normalisation the checkpoint expects; for detection tasks an upper-case KEY
    (--set SOLVER.MAX_ITER=200) overrides the detectron2 config.
    """
    from pathlib import Path

    from mocobench.atomic import OutputFolderError
    from mocobench.checkpoint import CheckpointError
    from mocobench.datasets import DataError
    from mocobench.evaluators.registry import TaskError
    from mocobench.pretrain.engine import TrainingInterrupted
    from mocobench.results import ResultsError
    from mocobench.transfer.run import run_transfer

    shortcuts = {"data": data, "preset": preset, "num_procs": num_gpus, "num_machines": num_machines,
                 "machine_rank": machine_rank, "dist_url": dist_url, "resume": resume, "eval_only": eval_only,
                 "repeats": repeats, "tensorboard": tensorboard}
    overrides = (*(f"{k}={v}" for k, v in shortcuts.items() if v is not None), *overrides)
    if config_file:  # the file's values first: later pairs win
        from mocobench.evaluators.registry import get_task

        try:
            overrides = (*config_file_pairs(config_file, get_task(task_name).config_cls), *overrides)
        except TaskError as e:
            raise click.ClickException(str(e)) from e
    out = out or str(Path("runs") / "transfer" / task_name / Path(checkpoint).stem)
    try:
        run_transfer(task_name, checkpoint, out, overrides, arch, pretraining, seed, overwrite, load, feature_cache,
                     "float16" if feature_cache_fp16 else "float32")
    except (TaskError, DataError, CheckpointError, TrainingInterrupted, ResultsError, OutputFolderError) as e:
        raise click.ClickException(str(e)) from e


@main.command()
@click.argument("checkpoint")
@click.option("--to", "to", type=click.Choice(["detectron2", "torchvision"]), required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file (.pkl for detectron2).")
@load_options
def convert(checkpoint: str, to: str, out: str, load) -> None:
    """Convert CHECKPOINT's backbone (any readable layout, or zoo:NAME) to detectron2 or torchvision weights."""
    from mocobench.checkpoint import CheckpointError
    from mocobench.convert import convert_checkpoint
    from mocobench.log import setup_logging

    setup_logging()
    try:
        path = convert_checkpoint(checkpoint, to, out, load)
    except CheckpointError as e:
        raise click.ClickException(str(e)) from e
    logger.info("wrote %s", path)


@main.command("tasks")
def list_tasks() -> None:
    """List the transfer tasks and their config keys (for --set)."""
    import dataclasses

    from mocobench.evaluators.registry import tasks

    for task in tasks().values():
        click.echo(f"{task.name}: {task.summary}")
        for f in dataclasses.fields(task.config_cls):
            click.echo(f"    {f.name} = {f.default!r}  {f.metadata.get('help', '')}")


def _run_then_report(run, partial_failure: type[Exception], runs_dir, report_dir, baseline: str, title: str = "") -> None:
    """Run a suite or sweep, then report whatever finished; ``partial_failure`` (some pairs or points
    failed) and a report error become one ClickException after the report is written."""
    from mocobench.report import write_report
    from mocobench.results import ResultsError

    error = None
    try:
        run()
    except partial_failure as e:
        error = e
    import os

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes the report
        if error is not None:
            raise click.ClickException(str(error))
        return
    try:
        report = write_report([runs_dir], report_dir, baseline, title)
        logger.info("report: %s", report.out / "report.md")
    except ResultsError as e:
        error = error or e
    if error is not None:
        raise click.ClickException(str(error))


#: Keys of a suite file (``suite --config``): the command's options, ``checkpoints`` as a list, ``set`` as a list.
SUITE_KEYS = ("checkpoints", "out", "preset", "tasks", "data_root", "arch", "set", "report", "baseline", "title",
              "feature_cache_fp16")


def _suite_file(path: str, options: dict) -> dict:
    """``options`` of ``suite`` over the values of suite file ``path`` (explicit command-line values win)."""
    from click.core import ParameterSource

    data = read_config_file(path, section="suite")
    unknown = sorted(set(map(str, data)) - set(SUITE_KEYS))
    if unknown:
        raise click.BadParameter(f"{path}: unknown keys {unknown}; valid keys: {', '.join(SUITE_KEYS)}",
                                 param_hint="--config")
    names = {"set": "overrides", "report": "report_dir"}
    ctx = click.get_current_context()
    merged = dict(options)
    for key, value in data.items():
        name = names.get(key, key)
        given = options[name] if name == "checkpoints" else ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
        if given:
            continue
        if key in ("checkpoints", "set"):
            if isinstance(value, dict):  # checkpoints as {label: source}
                value = [f"{k}={v}" for k, v in value.items()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise click.BadParameter(f"{path}: {key} must be a list of strings (or a mapping label: source)",
                                         param_hint="--config")
            value = tuple(value)
        elif key == "tasks" and isinstance(value, list):
            value = ",".join(map(str, value))
        elif key == "feature_cache_fp16" and not isinstance(value, bool):
            raise click.BadParameter(f"{path}: feature_cache_fp16 must be true or false, got {value!r}",
                                     param_hint="--config")
        elif key != "feature_cache_fp16" and not isinstance(value, str):
            raise click.BadParameter(f"{path}: {key} must be a string, got {value!r}", param_hint="--config")
        merged[name] = value
    return merged


@main.command()
@click.argument("checkpoints", nargs=-1)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Suite file (YAML): checkpoints, out, preset, tasks, data_root, arch, set, report, baseline, title; "
              "options given here win. Keep it beside the report: it says what the comparison is.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Suite folder: OUT/<label>/<task>/.")
@click.option("--preset", default="cpu-small", show_default=True, type=click.Choice(SUITE_PRESETS),
              help="Task list: cpu-small, demo or paper.")
@click.option("--tasks", default="", help="Comma-separated subset of the preset's tasks.")
@click.option("--data-root", default=".", show_default=True, help="Folder holding the preset's data folders.")
@click.option("--arch", default=None, help="Architecture of 'random' (checked against the other checkpoints).")
@click.option("--set", "overrides", multiple=True, metavar="TASK.KEY=VALUE", help="Override a task's config.")
@click.option("--report", "report_dir", default=None, help="Report folder (default: OUT/report).")
@click.option("--baseline", default="supervised", show_default=True, help="Row the report's deltas refer to.")
@click.option("--title", default="", help="Title of the report (default: 'mocobench report: <report folder name>').")
@click.option("--feature-cache-fp16", is_flag=True, help="Store the cached features (OUT/<label>/feature_cache) in float16.")
@load_options
def suite(checkpoints, config_file, out, preset, tasks, data_root, arch, overrides, report_dir, baseline, title,
          feature_cache_fp16, load) -> None:
    """Run a preset's tasks on each CHECKPOINT ([LABEL=]PATH, [LABEL=]zoo:NAME or 'random'), then write the report.

    Pairs that already have results are skipped, so re-running an interrupted suite resumes it.
    --format/--prefix/--part/--stem apply to every file CHECKPOINT (zoo entries know their layout).
    Example:  mocobench suite moco=runs/v2/checkpoint_last.pth sup=runs/sup/checkpoint_last.pth random
    --arch resnet18 --preset cpu-small --data-root ../shared/data --out runs/suite
    """
    from pathlib import Path

    from mocobench.log import setup_logging
    from mocobench.suite import SuiteError, run_suite

    if config_file:
        o = _suite_file(config_file, dict(checkpoints=checkpoints, out=out, preset=preset, tasks=tasks,
                                          data_root=data_root, arch=arch, overrides=overrides, report_dir=report_dir,
                                          baseline=baseline, title=title, feature_cache_fp16=feature_cache_fp16))
        checkpoints, out, preset, tasks, data_root, arch = (o[k] for k in ("checkpoints", "out", "preset", "tasks",
                                                                          "data_root", "arch"))
        overrides, report_dir, baseline, title, feature_cache_fp16 = (
            o[k] for k in ("overrides", "report_dir", "baseline", "title", "feature_cache_fp16"))
    if not checkpoints or not out:
        raise click.UsageError("give the CHECKPOINTS and --out, on the command line or in --config FILE")
    from mocobench.atomic import OutputFolderError, writable_folder
    from mocobench.suite import check_suite

    task_names = tuple(t for t in tasks.split(",") if t)
    try:
        check_suite(list(checkpoints), preset, task_names, data_root, overrides)  # before any folder or work
        writable_folder(out)
    except (SuiteError, OutputFolderError) as e:
        raise click.ClickException(str(e)) from e
    setup_logging()
    _run_then_report(
        lambda: run_suite(list(checkpoints), out, preset, task_names, data_root, arch,
                          overrides, load, "float16" if feature_cache_fp16 else "float32"),
        SuiteError, out, report_dir or Path(out) / "report", baseline, title)


@main.command()
@click.argument("name", type=click.Choice(SWEEP_NAMES))
@dataclass_options(PretrainConfig, exclude=("out", "resume"))
@click.option("--out", "sweep_out", required=True, help="Sweep folder: one sub-folder per point, and report/.")
@click.option("--knn-data", required=True, help="Root of the kNN task run on every point (train + val splits).")
@click.option("--knn-set", multiple=True, metavar="KEY=VALUE", help="Override of the kNN task's config.")
@click.option("--point", "points", multiple=True, help="Run only these points (labels as in the folder names).")
def sweep(name, sweep_out, knn_data, knn_set, points, **options) -> None:
    """Run ablation NAME (momentum, negatives, shuffle_bn) as normal runs, then write its report.

    Every pretrain option sets the base of all points; each point changes one setting. Example (CPU):
      mocobench sweep momentum --data imagenette-96/train --out runs/m --knn-data imagenette-96
      --arch resnet18 --image-size 64 --batch-size 64 --queue-size 4096 --epochs 20 --workers 1
    """
    from pathlib import Path

    from mocobench.checkpoint import CheckpointError
    from mocobench.datasets import DataError
    from mocobench.log import setup_logging
    from mocobench.pretrain.config import ConfigError
    from mocobench.sweep import SweepError, check_sweep, run_sweep, sweep_points

    base = PretrainConfig(out="", **options)
    try:  # every point and the kNN settings, before any folder or work
        check_sweep(base, Path(sweep_out), sweep_points(name, points), knn_data, knn_set)
    except SweepError as e:
        raise click.ClickException(str(e)) from e
    setup_logging()
    try:
        _run_then_report(lambda: run_sweep(name, base, sweep_out, knn_data, knn_set, points, checked=True),
                         SweepError, sweep_out, Path(sweep_out) / "report", baseline="", title=f"sweep: {name}")
    except (ConfigError, DataError, CheckpointError) as e:
        raise click.ClickException(str(e)) from e


@main.command()
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--out", required=True, help="Report folder (e.g. reports/NAME).")
@click.option("--baseline", default="supervised", show_default=True, help="Row the deltas refer to.")
@click.option("--title", default="", help="Title of report.md / report.html.")
@click.option("--notes", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Text file of '- ' items: the report's 'What this can and cannot show' section.")
def report(run_dirs, out, baseline, title, notes) -> None:
    """Tables (md/csv/html) and figures from every results.json below RUN_DIRS.

    A RUN_DIRS entry may also be an earlier report's report.csv: its rows join the new runs', so a committed
    report can be extended (another pretraining seed) after its first run folders are gone."""
    from mocobench.log import setup_logging
    from mocobench.report import read_notes, write_report
    from mocobench.results import ResultsError

    setup_logging()
    try:
        rep = write_report(list(run_dirs), out, baseline, title, read_notes(notes) if notes else ())
    except ResultsError as e:
        raise click.ClickException(str(e)) from e
    click.echo(rep.out / "report.md")


@main.group()
def data() -> None:
    """Data sets: the embedded synthetic sets, and downloads of the public ones."""


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--what", type=click.Choice(["all", "classification", "detection", "segmentation"]), default="all",
              show_default=True, help="classification: OUT/classification/{train,val}; detection: OUT/coco and OUT/voc; "
              "segmentation: OUT/segmentation (images/, labels/, classes.txt, train.txt, val.txt).")
@click.option("--classes", default=10, show_default=True, type=click.IntRange(1, 10), help="Number of classes (at most 10).")
@click.option("--train-per-class", default=60, show_default=True, type=click.IntRange(min=1))
@click.option("--val-per-class", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--test-per-class", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default=64, show_default=True, type=click.IntRange(min=16), help="Image side in pixels (classification).")
@click.option("--det-train", default=120, show_default=True, type=click.IntRange(min=1), help="Detection training images.")
@click.option("--det-val", default=40, show_default=True, type=click.IntRange(min=1), help="Detection validation images.")
@click.option("--seg-train", default=120, show_default=True, type=click.IntRange(min=1), help="Segmentation training images.")
@click.option("--seg-val", default=40, show_default=True, type=click.IntRange(min=1), help="Segmentation validation images.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
def data_synth(out: str, what: str, classes: int, train_per_class: int, val_per_class: int, test_per_class: int,
               size: int, det_train: int, det_val: int, seg_train: int, seg_val: int, seed: int) -> None:
    """Write the deterministic synthetic data sets under OUT (no download needed)."""
    from pathlib import Path

    from mocobench.log import setup_logging
    from mocobench.synth import SynthSpec, write_synthetic_classification
    from mocobench.synth_det import SynthDetSpec, write_synthetic_detection, write_synthetic_segmentation

    setup_logging()
    try:
        if what in ("all", "classification"):
            spec = SynthSpec(classes, train_per_class, val_per_class, size, seed, test_per_class)
            write_synthetic_classification(Path(out) / "classification", spec)
        if what in ("all", "detection"):
            write_synthetic_detection(out, SynthDetSpec(det_train, det_val, seed=seed))
        if what in ("all", "segmentation"):
            write_synthetic_segmentation(Path(out) / "segmentation", SynthDetSpec(seg_train, seg_val, seed=seed))
    except ValueError as e:
        raise click.ClickException(str(e)) from e


@data.command("fetch")
@click.argument("name")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Folder to download and extract into.")
@click.option("--mirror", default=None, help="Base URL that serves the same files (URL/<file name>).")
@click.option("--delete-archives", is_flag=True, help="Delete each archive once extracted.")
def data_fetch(name: str, root: str, mirror: str | None, delete_archives: bool) -> None:
    """Download public data set NAME (imagenette, imagenette-320, voc2007, voc2012, coco2017, flowers102, sbd).

    sbd (VOC 2012 train_aug for voc_seg) needs voc2012 in the same --root first. Cityscapes needs a login:
    download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from cityscapes-dataset.com yourself.

    Resumes partial downloads (run the same command again), verifies the published MD5 of every file,
    and extracts the archives into the layouts the tasks read.
    """
    from mocobench.fetch import FetchError, fetch
    from mocobench.log import setup_logging

    setup_logging()
    try:
        fetch(name, root, mirror, keep_archives=not delete_archives)
    except FetchError as e:
        raise click.ClickException(str(e)) from e


@main.group()
def zoo() -> None:
    """The catalogue of published ResNet checkpoints (zoo:NAME wherever a checkpoint is taken)."""


@zoo.command("list")
def zoo_list() -> None:
    """Print every entry: URL, layout, architecture, checksum, licence and the numbers it should reproduce."""
    from mocobench.zoo import CATALOGUE, describe

    for entry in CATALOGUE:
        click.echo(describe(entry))


@zoo.command("fetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--root", default=None, type=click.Path(file_okay=False),
              help="Folder to download into (default: $MOCOBENCH_ZOO or ~/.cache/mocobench/zoo, where zoo:NAME looks).")
@click.option("--mirror", default=None, help="Base URL that serves the same files (URL/<file name>).")
def zoo_fetch(names: tuple[str, ...], root: str | None, mirror: str | None) -> None:
    """Download catalogue entries NAMES (resumable; checksum-verified, or pinned in zoo.lock.json when none
    is published)."""
    from mocobench.log import setup_logging
    from mocobench.zoo import ZooError, fetch_entry, get_entry, zoo_root

    setup_logging()
    try:
        for name in names:
            path, checked = fetch_entry(get_entry(name), root or zoo_root(), mirror)
            click.echo(f"{name}: {path} ({checked})")
    except ZooError as e:
        raise click.ClickException(str(e)) from e


if __name__ == "__main__":  # torchrun -m mocobench.cli ...
    sys.exit(main())
