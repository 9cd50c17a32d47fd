"""``tgnn``: the command line over :mod:`tgnn_transformers.train`."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

from .models import MODELS, OPTIONS, TASKS, Option, models_table
from .models.registry import preset_names
from .train.config import RECIPE_OPTIONS, resolve_config

EPILOG = """examples:
  tgnn train --task node --dataset cora --model gin-attention --seeds 0 1 2 \\
      --out runs/cora-gin
  tgnn train --task graph --dataset mutag --model mha --folds 10
  tgnn train --task link --dataset cora --model mha
  tgnn train --task text --dataset trec --model gin-attention --preset paper
  tgnn train --task lm --dataset shakespeare-char --model mha --out runs/gpt
  tgnn generate runs/gpt --prompt "ROMEO:" --max-new-tokens 300

data: raw files are read from --root (or $TGNN_DATA_ROOT); with --mirror
(or $TGNN_DATA_MIRROR) they are copied from that offline mirror instead of
downloaded.  Defaults per task and data set live in
tgnn_transformers/train/defaults.json; every flag below overrides them."""

RUN_EPILOG = """run folder (--out): one run at a time.  A run holds the folder with a
lock file (run.lock: process, host, start, command); a second run into it
is refused while the first lives, and the lock of a run that is gone is
replaced with a warning.  A folder that already holds a run is refused
unless you pass
  --resume     continue it: finished seeds/folds are read back, an
               interrupted one continues from its checkpoint and ends
               exactly where an uninterrupted run ends (same settings only;
               a folder without a run starts one), or
  --overwrite  replace it: the earlier run's files (run.json, metrics.json,
               history.csv, curves.png, error.json, checkpoints/) are
               deleted first; other files are left alone.
Every checkpoint read back must belong to this configuration and run.
history.csv is rewritten after every epoch; progress (a bar on a terminal,
else a log line at least every --log-every seconds) shows batches within
long epochs.

exit status: 0 done; 1 the training failed (a NaN or infinite loss, or no
finite test metric); 2 bad input (flags, data files, run folder, missing
optional packages), before any training where it can be known; 130
interrupted (Ctrl-C: the last checkpoint is kept, continue with
--resume)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tgnn", description="Transformers as graph neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    plot = sub.add_parser(
        "plot", help="draw a run's curves or a capture's attention",
        description="RUN_DIR (a tgnn train output folder): curves.png from "
        "its history.csv, the mean with a ± std band over seeds/folds and "
        "the best epoch marked.  CAPTURE (a file from "
        "tgnn_transformers.inspect.save_capture): one attention heatmap "
        "per recorded layer call.")
    plot.add_argument("path", help="RUN_DIR or CAPTURE file")
    plot.add_argument("--out", default=None,
                      help="folder for the PNG files (default: RUN_DIR, or "
                      "the capture's folder)")
    sub.add_parser("models", help="list the models and their options",
                   description="Every model of the registry: its layer, "
                   "what it is, and the options it takes beyond hidden, "
                   "num_layers and dropout (with defaults).")
    train = sub.add_parser(
        "train", help="train and evaluate a model",
        description="Train a model on a data set over several seeds (node, "
        "link) or folds (graph) and write metrics.json, history.csv and "
        "curves.png into --out.", epilog=EPILOG + "\n\n" + RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--task", choices=list(TASKS), default="node",
                       help="; ".join(f"{t.name}: {t.summary}"
                                      for t in TASKS.values())
                       + " (default: node)")
    train.add_argument("--dataset", default="cora",
                       help="; ".join(f"{t.name}: {', '.join(t.datasets())}"
                                      for t in TASKS.values())
                       + ", or text:PATH (any UTF-8 text file) (default: "
                       "cora)")
    train.add_argument("--model", choices=list(MODELS), default="mha",
                       help="attention model or PyG baseline (default: mha;"
                       " `tgnn models` lists them)")
    _add_run_arguments(train)
    finetune = sub.add_parser(
        "finetune", help="fine-tune a pretrained encoder on a text data set",
        description="tgnn train --task finetune: a pretrained encoder "
        "(--pretrained) with a classification head, trained through "
        "--adapter (sparse-gin, lora at the same trainable budget, head, "
        "full); the trainable-parameter count is printed and recorded in "
        "metrics.json.", epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    finetune.add_argument("--dataset", default="trec",
                          help="sst2, trec or r8 (default: trec)")
    finetune.add_argument("--pretrained", dest="model", default="minilm",
                          choices=[n for n, s in MODELS.items()
                                   if "finetune" in s.tasks],
                          help="the pretrained encoder (default: minilm)")
    finetune.set_defaults(task="finetune")
    _add_run_arguments(finetune)
    generate = sub.add_parser(
        "generate", help="continue a prompt with a trained language model",
        description="Continue --prompt with the language model a tgnn "
        "train --task lm run left in RUN_DIR (its best weights; with several"
        " seeds, the one of the lowest validation loss) and print the "
        "prompt and its continuation.  With the key/value cache (default) "
        "each new character is one new node attending to the cached keys "
        "and values of the context; --no-cache recomputes the context at "
        "every step (same characters, slower).")
    generate.add_argument("run_dir", metavar="RUN_DIR",
                          help="output folder of tgnn train --task lm")
    generate.add_argument("--prompt", default="\n",
                          help="text to continue (default: a newline)")
    generate.add_argument("--max-new-tokens", type=int, default=500,
                          metavar="N", help="characters to generate "
                          "(default: 500)")
    generate.add_argument("--temperature", type=float, default=0.8,
                          metavar="T", help="sampling temperature, 0: "
                          "greedy (default: 0.8, as nanoGPT's sample.py)")
    generate.add_argument("--top-k", type=_none_or(int), default=200,
                          metavar="K", help="sample among the K most likely "
                          "characters; none: all (default: 200)")
    generate.add_argument("--seed", type=int, default=0,
                          help="seed of the sampling (default: 0)")
    generate.add_argument("--no-cache", dest="cache", action="store_false",
                          help="recompute the context at every step")
    generate.add_argument("--device", default="cpu",
                          help="cpu (default), cuda, cuda:N or auto")
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Output, data, option and run-control flags of train and finetune."""
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/<task>-<dataset>-"
                        "<model>)")
    parser.add_argument("--root", default=None,
                        help="data root (default: $TGNN_DATA_ROOT or "
                        "~/.cache/tgnn_transformers/data)")
    parser.add_argument("--mirror", default=None,
                        help="offline data mirror (default: "
                        "$TGNN_DATA_MIRROR)")
    parser.add_argument("--config", default=None,
                        help="a JSON file replacing the packaged defaults")
    parser.add_argument("--preset", default=None, choices=preset_names(),
                        help="a named configuration of the model from the "
                        "registry (paper: the published code's "
                        "GIN-/PNA-Attention, see `tgnn models`); explicit "
                        "flags override it")
    group = parser.add_argument_group(
        "model options (override the defaults; `tgnn models` shows which "
        "model takes which)")
    for option in OPTIONS.values():
        if option.user:
            _add_flag(group, option)
    group = parser.add_argument_group("training options (override the "
                                      "defaults)")
    for option in RECIPE_OPTIONS.values():
        _add_flag(group, option)
    run = parser.add_argument_group("run control (see 'run folder' below)")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out (same settings)")
    again.add_argument("--overwrite", action="store_true",
                       help="delete the run in --out first, then start anew")
    run.add_argument("--quiet", action="store_true",
                     help="no progress output")
    run.add_argument("--log-every", type=_positive_seconds, default=30.0,
                     metavar="SECONDS",
                     help="without a terminal: a progress line at least "
                     "this often (default: 30)")


def _add_flag(group, option: Option) -> None:
    """One ``--flag`` from a registry or recipe option; the value is
    checked later, with the model known, by :func:`resolve_config`."""
    kwargs = dict(dest=option.name, default=None, help=option.help)
    if option.kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = _none_or(option.kind) if option.choices and \
            None in option.choices else option.kind
        kwargs["metavar"] = option.name.upper()
        if option.choices is not None:
            kwargs["choices"] = option.choices
            kwargs["metavar"] = "{" + ",".join(
                "none" if c is None else str(c) for c in option.choices) + "}"
        if option.many:
            kwargs["nargs"] = "+"
    group.add_argument(option.flag, **kwargs)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds > 0, got {text!r}")
    return value


def _none_or(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__
    return parse


def _overrides(args: argparse.Namespace):
    names = [o.name for o in OPTIONS.values() if o.user]
    names += list(RECIPE_OPTIONS)
    return {name: getattr(args, name) for name in names}


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "models":
        print(models_table())
        return 0
    if args.command == "generate":
        return generate_command(args)
    if args.command == "plot":
        from .extras import MissingExtraError
        try:
            written = plot_path(Path(args.path), args.out)
        except (ValueError, OSError, MissingExtraError) as exc:
            print(f"tgnn: error: {exc}", file=sys.stderr)
            return 2
        for path in written:
            print(path)
        return 0
    # Under torchrun only rank 0 reports (the others train quietly).
    rank = os.environ.get("RANK", "0")
    quiet = args.quiet or rank != "0"
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from .extras import MissingExtraError, check_features
    out = args.out or default_out(args.task, args.dataset, args.model)
    # Every option is checked, with the model known, before data is loaded.
    try:
        check_locations(args.mirror, args.config, out)
        config = resolve_config(args.task, args.dataset, args.model,
                                _overrides(args), args.config,
                                preset=args.preset)
    except (ValueError, TypeError, OSError, MissingExtraError) as exc:
        print(f"tgnn: error: {exc}", file=sys.stderr)
        return 2
    for warning in check_features(config):
        logging.getLogger("tgnn_transformers").warning(warning)
    from .data import DataSourceError
    from .train import NonFiniteLossError, RunFolderError
    from .train.config import ConfigurationError
    from .train.io import CheckpointError
    from .train.runner import run_experiment
    try:
        metrics = run_experiment(config, out, resume=args.resume,
                                 overwrite=args.overwrite, quiet=args.quiet,
                                 root=args.root, mirror=args.mirror,
                                 log_every=args.log_every)
    except KeyboardInterrupt:
        print(f"tgnn: interrupted; the last checkpoint is kept in {out}/"
              "checkpoints: continue with the same command and --resume",
              file=sys.stderr)
        return 130
    except NonFiniteLossError as exc:
        print(f"tgnn: error: {exc} (details in {out}/error.json)",
              file=sys.stderr)
        return 1
    except (DataSourceError, RunFolderError, CheckpointError,
            ConfigurationError, MissingExtraError) as exc:
        print(f"tgnn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a folder made read-only meanwhile
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"tgnn: error: {exc.strerror or exc}{where}; check that "
              f"--out {out} is a writable folder with free space",
              file=sys.stderr)
        return 2
    if rank != "0":
        return 0
    split = "test"
    if metrics["test"]["mean"] is None and metrics["val"]["mean"] is not None \
            and metrics["metric"] == "loss":
        split = "val"  # a corpus has no test split: the best val loss
    summary = metrics[split]
    if summary["mean"] is None:
        print(f"tgnn: error: {config['dataset']} / {config['model']}: no "
              f"finite {split} {metrics['metric']} ({summary['reason']}); "
              f"see {out}/metrics.json", file=sys.stderr)
        return 1
    if metrics["metric"] == "loss":
        score = f"{summary['mean']:.4f} ± {summary['std']:.4f}"
    else:
        score = f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f}"
    print(f"{config['dataset']} / {config['model']}: {split} "
          f"{metrics['metric']} {score} over {summary['n']} run(s); results "
          f"in {out}/metrics.json")
    return 0


def default_out(task: str, dataset: str, model: str) -> str:
    """``runs/<task>-<dataset>-<model>``; a ``text:PATH`` corpus is named
    by its file's stem."""
    from .data import TEXT_FILE_PREFIX
    if dataset.startswith(TEXT_FILE_PREFIX):
        dataset = "text-" + Path(dataset[len(TEXT_FILE_PREFIX):]).stem
    return f"runs/{task}-{dataset}-{model}"


def generate_command(args: argparse.Namespace) -> int:
    """``tgnn generate``: arguments checked, then the model loaded and
    sampled; every error is one line and exit status 2."""
    def fail(message: str) -> int:
        print(f"tgnn: error: {message}", file=sys.stderr)
        return 2
    if args.max_new_tokens < 0:
        return fail(f"--max-new-tokens must be >= 0, got "
                    f"{args.max_new_tokens}")
    if not args.temperature >= 0 or args.temperature == float("inf"):
        return fail(f"--temperature must be a finite number >= 0 (0: "
                    f"greedy), got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        return fail(f"--top-k must be >= 1 or none, got {args.top_k}")
    if args.seed < 0:
        return fail(f"--seed must be >= 0, got {args.seed}")
    if not args.prompt:
        return fail("--prompt must hold at least one character")
    from .train.device import resolve_device
    from .train.generation import (ModelFileError, find_model_file,
                                   generate_text, load_language_model)
    from .train.io import CheckpointError
    try:
        device = resolve_device(args.device)
        path = find_model_file(args.run_dir)
        model, vocab, _ = load_language_model(path, device)
        missing = [c for c in dict.fromkeys(args.prompt) if c not in vocab]
        if missing:
            raise ValueError(
                f"--prompt: character {missing[0]!r} (at position "
                f"{args.prompt.index(missing[0])}) is not in the model's "
                f"vocabulary of {len(vocab)} characters")
        text = generate_text(model, vocab, args.prompt,
                             args.max_new_tokens, args.temperature,
                             args.top_k, args.seed, args.cache)
    except (ModelFileError, CheckpointError, ValueError, OSError) as exc:
        return fail(str(exc))
    print(text)
    return 0


def plot_path(path: Path, out: Optional[str]) -> List[Path]:
    """``tgnn plot``: the PNG files written for a run folder or capture."""
    from .extras import require
    require("curves.png")
    import matplotlib.pyplot as plt
    from .inspect import (load_capture, plot_attention_heatmap,
                          plot_training_curves, read_history)
    if path.is_dir():
        history = path / "history.csv"
        if not history.is_file():
            raise ValueError(f"{path} has no history.csv (is it a tgnn "
                             "train output folder?)")
        target = Path(out or path)
        target.mkdir(parents=True, exist_ok=True)
        metric, higher_is_better = "accuracy", True
        if (path / "metrics.json").is_file():
            import json
            recorded = json.loads((path / "metrics.json").read_text())
            metric = recorded.get("metric", metric)
            higher_is_better = recorded.get("higher_is_better", True)
        plt.close(plot_training_curves(read_history(history),
                                       target / "curves.png", metric,
                                       higher_is_better))
        return [target / "curves.png"]
    if not path.is_file():
        raise ValueError(f"{path}: no such run folder or capture file")
    records, tokens = load_capture(path)
    target = Path(out or path.parent)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for index, record in enumerate(records):
        name = target / (f"{path.stem}-{index:02d}-"
                         f"{record.layer.replace('.', '_') or 'conv'}.png")
        plt.close(plot_attention_heatmap(
            record, tokens if tokens and len(tokens) == record.num_nodes
            else None, name))
        written.append(name)
    return written


def check_locations(mirror: Optional[str], config: Optional[str],
                    out: Optional[str] = None) -> None:
    """Paths given on the command line exist, and ``out`` is or can be a
    writable folder (checked before any work)."""
    if out is not None:
        from .train.folder import check_folder
        check_folder(Path(out))
    if mirror is not None and not Path(mirror).expanduser().is_dir():
        raise ValueError(f"--mirror {mirror}: no such folder (the offline "
                         "data mirror must be a folder laid out like "
                         "planetoid/Cora/raw/...)")
    if config is not None and not Path(config).expanduser().is_file():
        raise ValueError(f"--config {config}: no such file")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
