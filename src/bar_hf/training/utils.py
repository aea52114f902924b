"""Helpers shared by the training scripts (schedules, JSON-lines tracker, flag validation, accelerator setup).

Everything random in training runs on the main process from generators whose state is checkpointed, so a run
resumed from a checkpoint continues bit-for-bit like an uninterrupted one (CPU, fixed seeds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int, min_lr: float = 0.0):
    """Linear warmup from 0, then cosine decay to `min_lr` at `total_steps` (the authors' schedule)."""
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    def factor(step: int, base: float) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        floor = min_lr / base if base > 0 else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda s, b=b: factor(s, b) for b in base_lrs])


class JSONLinesTracker:
    """Minimal accelerate tracker writing one JSON object per `log` call to `<logging_dir>/<run>/metrics.jsonl`."""

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike, **kwargs):
        self.run_name = run_name
        self.path = Path(logging_dir) / run_name / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values: dict) -> None:
        (self.path.parent / "config.json").write_text(json.dumps(values, indent=2, default=str))

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        record = {"step": step, **{k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def finish(self) -> None:
        pass


def _make_jsonl_tracker_class():
    from accelerate.tracking import GeneralTracker

    class _Tracker(JSONLinesTracker, GeneralTracker):
        def __init__(self, run_name: str, logging_dir: str | os.PathLike, **kwargs):
            JSONLinesTracker.__init__(self, run_name, logging_dir)
            GeneralTracker.__init__(self, _blank=True)

    return _Tracker


def make_jsonl_tracker(run_name: str, logging_dir: str | os.PathLike):
    """An accelerate `GeneralTracker` instance of [`JSONLinesTracker`]."""
    return _make_jsonl_tracker_class()(run_name, logging_dir)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: Rules for [`check_flags`]: name → (predicate, description).
AT_LEAST_0 = (lambda v: _is_number(v) and v >= 0, "a finite number >= 0")
AT_LEAST_1 = (lambda v: _is_number(v) and v >= 1, "an integer >= 1")
POSITIVE = (lambda v: _is_number(v) and v > 0, "a finite number > 0")
UNIT_INTERVAL = (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
BETA = (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")


#: Flags every training script has (optimizer, schedule, checkpointing, logging) and their rules; each script adds
#: its own to these in its `FLAG_RULES`.
TRAINING_FLAG_RULES = {
    "train_batch_size": AT_LEAST_1,
    "max_train_steps": AT_LEAST_0,
    "gradient_accumulation_steps": AT_LEAST_1,
    "learning_rate": POSITIVE,
    "min_learning_rate": AT_LEAST_0,
    "lr_warmup_steps": AT_LEAST_0,
    "adam_beta1": BETA,
    "adam_beta2": BETA,
    "adam_weight_decay": AT_LEAST_0,
    "max_grad_norm": AT_LEAST_0,
    "checkpointing_steps": AT_LEAST_1,
    "checkpoints_total_limit": AT_LEAST_1,
    "logging_steps": AT_LEAST_1,
}


def parse_and_validate(parser: argparse.ArgumentParser, argv, validate) -> argparse.Namespace:
    """`parser.parse_args(argv)`, then `validate(args)`; a `ValueError` becomes argparse's `error:` line and rc 2."""
    args = parser.parse_args(argv)
    try:
        validate(args)
    except ValueError as error:
        parser.error(str(error))
    return args


def check_flags(args, rules: dict[str, tuple]) -> None:
    """Raise a `ValueError` naming the flag, the rule and the value for the first `args.<name>` (not None) that breaks
    its rule; `rules` maps attribute names to `(predicate, description)` pairs such as [`AT_LEAST_1`]."""
    for name, (predicate, description) in rules.items():
        value = getattr(args, name)
        if value is not None and not predicate(value):
            raise ValueError(f"`--{name}` must be {description}, got {value!r}.")


def check_columns(dataset, columns: dict[str, str | None]) -> None:
    """Raise a `ValueError` when a column the run needs is missing: `columns` maps the flag that names it (e.g.
    `"--label_column"`) to the column name (None: not needed)."""
    names = getattr(dataset, "column_names", None)
    if names is None and getattr(dataset, "features", None) is not None:
        names = list(dataset.features)
    if names is None:  # a stream without known features: nothing to check up front
        return
    for flag, column in columns.items():
        if column is not None and column not in names:
            raise ValueError(
                f"the dataset has no column {column!r} (its columns: {sorted(names)}); name the right one with "
                f"`{flag}`."
            )


def read_json_flag(path: str, flag: str) -> dict:
    """A JSON object file given on the command line; `ValueError` naming `flag` when it is missing or malformed."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"`{flag}` must be a readable JSON file, got {path!r}: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"`{flag}` must hold a JSON object of config arguments, got {type(value).__name__}.")
    return value


def tokenizer_fingerprint(vq) -> str:
    """SHA-256 of a tokenizer's weights and grid/bit layout: pretokenized data stores it, `train_bar.py` checks it."""
    digest = hashlib.sha256()
    layout = {k: vq.config.get(k) for k in ("sample_size", "patch_size", "in_channels", "num_bits")}
    digest.update(json.dumps(layout, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vq.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tensor.numel()}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- script plumbing
def create_accelerator(args, run_name: str):
    """The training scripts' `Accelerator`: JSON-lines tracker (+ `--report_to`), seedable sampler (exact resume),
    logging, `set_seed`, the output folder and, with `--push_to_hub`, the Hub repo.

    Returns `(accelerator, output_dir, repo_id)` (`repo_id` is None unless pushing, on the main process).
    """

    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    output_dir = Path(args.output_dir)
    trackers = [make_jsonl_tracker(run_name, output_dir / "logs")]
    if args.report_to:
        trackers.append(args.report_to)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=trackers,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    set_seed(args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    repo_id = None
    if args.push_to_hub and accelerator.is_main_process:
        from huggingface_hub import create_repo

        repo_id = create_repo(args.hub_model_id or output_dir.name, exist_ok=True, token=args.hub_token).repo_id
    return accelerator, output_dir, repo_id


def upload_to_hub(repo_id: str | None, folder: Path, token: str | None) -> None:
    if repo_id is not None:
        from huggingface_hub import upload_folder

        upload_folder(repo_id=repo_id, folder_path=folder, token=token)
