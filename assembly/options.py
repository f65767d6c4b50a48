"""Command-line options of the training scripts, generated from declarations, and the one precedence rule.

Who declares what: the toolkit's run options are below (RepDistiller's flag names and defaults first); every
method declares its own in its class (``Distiller.options``), milestone checking in its add-on, the teacher set
in ``engine/teacher.py``. The student parser is generated from all of them, a flag shared by several methods
(``--kd_T``, ``--feat_dim``) once.

Precedence, for every option (:func:`resolve`): the value given on the command line; else the ``--recipe`` chosen
(a method's named recipe, e.g. MLKD's 480-epoch one); else an enabled add-on's default for that method and
teacher/student pair (``--logit_stand``'s per-pair temperatures and weights); else the data set's reference recipe for
that method and pair (``--dataset imagenet``: mdistiller's ImageNet configs, ``dataset/recipes.py``; the CIFAR sets
have none); else the method's preset for the pair (``Distiller.defaults_for``: its authors' per-pair configs, CIFAR
ones); else the method's default (``Distiller.defaults``: its loss weights, learning rate and CIFAR recipe); else the
toolkit's default. ``train_teacher.py`` has the data set's recipe and the toolkit's defaults only.
Two toolkit defaults are rules rather than constants: ``--learning_rate`` is 0.05, or 0.01 for MobileNetV2 and
the ShuffleNets (RepDistiller), and ``--data_seed`` is ``--seed``. The loss weights apply as a set: when none of
``-r/-a/-b`` is given all three are the method's; when some are, a missing ``-r`` is RepDistiller's 1 and a
missing ``-a``/``-b`` the method's. The start of a run prints which values came from the method and from a rule.
The result is a frozen dataclass: nothing writes into it afterwards.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import distiller_zoo
from dataset import NORMALIZATIONS, FolderSettings, available_datasets, dataset_recipe, input_family, recipe_name
from dataset.folder import FORMATS, PIPELINES
from engine.teacher import TEACHER_OPTIONS, arch_from_path
from helper.distributed import launch_world_size
from helper.option import Option, str2bool
from helper.tracking import MODES as TRACKING_MODES, missing_wandb
from helper.util import CHECKPOINTKD_MULTISTEP, LR_SCHEDULES, SMALL_LR_MODELS, default_learning_rate, \
    unknown_device
from models import arch_options, model_dict
from models.ambb import normalize_block_type

REPDISTILLER = "RepDistiller options"
TOOLKIT = "toolkit options"
PROCESSES = "several processes (torchrun --nproc_per_node=K ...)"
ARCHITECTURE = "architecture options (rep*/my* models; ignored by the others)"
STUDENT = "distillation"
TRACKING = "experiment tracking (optional)"
METHODS = "method options (each read by the --distill methods that declare it)"

DEBUG = Option("debug", bool, False, "on an error, print the full traceback instead of one line (also: KD_DEBUG=1)",
               action="store_true", group=TOOLKIT)

RUN_OPTIONS: Tuple[Option, ...] = (
    Option("print_freq", int, 100, "accepted for compatibility (unused: the progress bar counts steps, and the loss "
           "is printed once per epoch, since reading it every few steps would stall the GPU)", group=REPDISTILLER),
    Option("tb_freq", int, 500, "accepted for compatibility (unused, as upstream)", group=REPDISTILLER),
    Option("save_freq", int, 40, "save ckpt_epoch_N.pth every N epochs", group=REPDISTILLER),
    Option("batch_size", int, 64, "per process (torchrun: the global batch is K times larger)", group=REPDISTILLER),
    Option("num_workers", int, 8, "DataLoader workers decoding the folder data sets (imagenet, tiny_imagenet); the "
           "in-memory ones need none", group=REPDISTILLER),
    Option("epochs", int, 240, group=REPDISTILLER),
    Option("learning_rate", float, None, "default 0.05, or 0.01 for MobileNetV2/ShuffleV1/ShuffleV2 (RepDistiller)",
           group=REPDISTILLER),
    Option("lr_decay_epochs", str, "150,180,210", group=REPDISTILLER),
    Option("lr_decay_rate", float, 0.1, group=REPDISTILLER),
    Option("lr_schedule", str, "step", "step: x --lr_decay_rate after each of --lr_decay_epochs (RepDistiller); "
           "cosine: CheckpointKD's --cos_lr, lr x (1 + cos(pi (e-1) / --epochs)) / 2 in epoch e (per epoch, "
           "eta_min 0); multistep: CheckpointKD's --multistep_lr, x --lr_decay_rate after epochs 149, 179, 209 and 239",
           choices=LR_SCHEDULES, group=TOOLKIT),
    Option("warm_up", bool, False, "lr 0.01 in the first epoch, then --lr_schedule (BYOT's --warm-up; under "
           "torchrun scaled as --learning_rate is)", flags=("--warm-up", "--warm_up"), action="store_true",
           group=TOOLKIT),
    Option("weight_decay", float, 5e-4, group=REPDISTILLER),
    Option("momentum", float, 0.9, group=REPDISTILLER),
    Option("nesterov", str2bool, False, "Nesterov momentum (CheckpointKD's SGD; RepDistiller uses plain momentum)",
           group=REPDISTILLER),
    Option("optimizer", str, "sgd", "sgd: RepDistiller's SGD; dot: DOT's two-momentum SGD (Zhao et al. 2023; "
           "momentum - delta for the task gradient, momentum + delta for the distillation gradient), for any "
           "--distill method", choices=["sgd", "dot"], group=TOOLKIT),
    Option("dot_delta", float, 0.075, "DOT's momentum offset delta (0.075 CIFAR/Tiny-ImageNet, 0.09 ImageNet)",
           group=TOOLKIT),
    Option("dataset", str, "cifar100", choices=available_datasets(), group=REPDISTILLER),
    Option("data_recipe", str, None, "the data set's named reference recipe (its defaults, below flags, --recipe "
           "and add-ons): mdistiller for imagenet and tiny_imagenet (their default), or none (the methods' and the "
           "toolkit's defaults); the CIFAR sets have none", group=TOOLKIT),
    Option("data_norm", str, "default", "input mean/std: the data set's own (default), or a preset such as 'byot' "
           "(the CIFAR-10 constants BYOT applies to CIFAR-100)", choices=sorted(NORMALIZATIONS), group=REPDISTILLER),
    Option("data_root", str, "./data", "folder holding cifar-100-python/ etc.; for imagenet its train/ and val/ "
           "(ImageFolder layout), for tiny_imagenet the unpacked tiny-imagenet-200", group=TOOLKIT),
    Option("data_format", str, "folder", "imagenet/tiny_imagenet: folder (class sub-folders of image files) or "
           "webdataset (train/ and val/ folders of .tar shards of <key>.jpg + <key>.cls samples)",
           choices=list(FORMATS), group=TOOLKIT),
    Option("data_pipeline", str, "auto", "folder data sets: dataloader (workers decode with PIL, the device "
           "normalises), dali (NVIDIA DALI decodes and crops on the GPU) or auto (dali on CUDA where installed)",
           choices=list(PIPELINES), group=TOOLKIT),
    Option("crop_size", int, None, "folder data sets: training/evaluation crop (default 224 imagenet, 64 "
           "tiny_imagenet)", group=TOOLKIT),
    Option("resize_size", int, None, "folder data sets: shorter side before the evaluation centre crop (default "
           "crop x 256/224 imagenet, the crop tiny_imagenet)", group=TOOLKIT),
    Option("global_batch_size", int, None, "the batch over all processes (each takes global / K; the learning rate "
           "is then the global batch's, not scaled); the ImageNet recipe sets 512. An explicit --batch_size (per "
           "process) replaces a recipe's global batch", group=PROCESSES),
    Option("save_steps", int, 0, "also write <model>_last.pth every N training steps, so that --resume continues "
           "within an epoch (an ImageNet epoch is long); 0: at epoch ends only", group=TOOLKIT),
    Option("save_dir", str, "./save", "root of the output folders", group=TOOLKIT),
    Option("seed", int, 0, "seeds every RNG (init, shuffling, augmentation)", group=TOOLKIT),
    Option("device", str, "auto", "cuda, cpu or auto (CUDA when available)", group=TOOLKIT),
    Option("data_seed", int, None, "seed of the shuffling and augmentation (default: --seed); --trials shares it",
           group=TOOLKIT),
    Option("amp", str2bool, False, "bf16 autocast of the forward passes (CUDA, or a CPU with bf16 support); off by "
           "default until its accuracy is measured on a GPU (docs/speed_and_scale.md)", group=TOOLKIT),
    Option("channels_last", str2bool, None, "channels-last memory format for networks and inputs (default: on CUDA "
           "only, so that the fp32 CPU path stays bit for bit the reference one; on a CPU it is ~10%% faster)",
           group=TOOLKIT),
    Option("tf32", str2bool, True, "on CUDA, let float32 matmuls and convolutions (networks and losses alike) use "
           "TF32 tensor cores: 10-bit mantissa products, float32 range and accumulation, several times faster on "
           "Ampere and newer GPUs (PyTorch allows it for convolutions only by default). --tf32 0: full float32 "
           "products everywhere. No effect on a CPU", group=TOOLKIT),
    Option("compile", str2bool, False, "torch.compile the networks (one static graph per batch shape: the last "
           "partial batch is compiled once, not every epoch)", group=TOOLKIT),
    Option("compile_mode", str, "auto", "torch.compile mode; auto: reduce-overhead (CUDA graphs) on one CUDA "
           "device, else default",
           choices=["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"], group=TOOLKIT),
    Option("sync_bn", str2bool, False, "BatchNorm statistics over the global batch (all processes) instead of each "
           "local batch", group=PROCESSES),
    Option("lr_scale", str, "linear", "--batch_size is per process; linear: lr x K for the K-times larger global "
           "batch (Goyal et al. 2017), none: lr as given", choices=["linear", "none"], group=PROCESSES),
    Option("resume", str, None, "checkpoint to continue from, or 'auto' for the run folder's latest", group=TOOLKIT),
    Option("test_batch_size", int, 256, "batch size for evaluation", group=TOOLKIT),
    DEBUG,
    Option("overwrite", bool, False, "start afresh in a run folder that already holds a run (its checkpoints, "
           "metrics and summary are removed first); without it such a folder is refused unless --resume is given",
           action="store_true", group=TOOLKIT),
    Option("wandb", bool, False, "also log every epoch's row (what metrics.jsonl holds) to Weights & Biases; needs "
           "the optional package wandb (pip install wandb)", action="store_true", group=TRACKING),
    Option("wandb_project", str, "kd-toolkit", "W&B project", group=TRACKING),
    Option("wandb_name", str, None, "W&B run name (default: the run folder's name; with several runs in one process "
           "the folder's name is appended)", group=TRACKING),
    Option("wandb_mode", str, "offline", "offline (default): written to the run folder's wandb/ without a network, "
           "uploaded later with 'wandb sync'; online: streamed (needs a network and 'wandb login')",
           choices=list(TRACKING_MODES), group=TRACKING),
    Option("keep_checkpoints", str, "all", "all: also keep ckpt_epoch_N.pth every --save_freq epochs; last: only "
           "<model>_last.pth and <model>_best.pth (saves disk in sweeps; a CRD checkpoint is ~50 MB)",
           choices=["all", "last"], group=TOOLKIT),
)


def architecture_options(short_blocktype: bool) -> Tuple[Option, ...]:
    """The rep* and my* families' options. ``-t`` is KDrefine's short form of ``--blocktype``; train_teacher.py
    keeps ``-t`` for ``--trial``."""
    return (
        Option("blocktype", str, "AMBB", "conv+BN block of the rep* models: AMBB (alias ACTDB, its older name) or base",
               flags=("-t", "--blocktype") if short_blocktype else (), group=ARCHITECTURE),
        Option("block_depth", str, None, "blocks per stage of a my* model, e.g. 3,7,2 (default: the nominal depth)",
               group=ARCHITECTURE),
    )


# CheckpointKD's --model_num: independently initialised models trained side by side
TRIALS = Option("trials", int, 1, "train N models in one process on the same batches (students share the teacher's "
                "forward): trial i has --seed seed+i and trial id trial+i (or trial_i), its own run folder, optimizer, "
                "checkpoints and metrics, and equals a run of its own with that --seed and --trial and --data_seed "
                "set to this run's", group=STUDENT)

TEACHER_SCRIPT_OPTIONS = (
    Option("model", str, "resnet110", group=STUDENT),
    Option("trial", str, "0", "the experiment id", flags=("-t", "--trial"), group=STUDENT),
    TRIALS,
)

STUDENT_SCRIPT_OPTIONS = (
    Option("init_epochs", int, 30, "init-stage epochs (abound, factor, fsp, pad; sskd: 60 by default)", group=STUDENT),
    Option("model_s", str, "resnet8", "student architecture; comma-separated ones train side by side (with every "
           "--distill value)", group=STUDENT),
    Option("path_t", str, None, "teacher checkpoint; several comma-separated ones average their logits "
           "(CheckpointKD); with --teacher_epochs, the teacher's run folder", group=STUDENT),
    Option("model_t", str, None, "teacher architecture (default: parsed from the --path_t folder name); "
           "comma-separated for one per --path_t checkpoint", group=STUDENT),
    Option("distill", str, "kd", "method; comma-separated ones train side by side in one process, sharing the "
           "teacher's forward (each run as it would alone)", group=STUDENT),
    Option("recipe", str, None, "a method's named reference recipe instead of its default one (its epochs, lr, ...; "
           "they beat every other default, a flag still wins), e.g. --distill mlkd --recipe long: MLKD's 480-epoch "
           "recipe; run folders end the method with _NAME", group=STUDENT),
    Option("trial", str, "1", "trial id", group=STUDENT),
    TRIALS,
    Option("gamma", float, None, "weight for classification (default 1)", flags=("-r", "--gamma"), group=STUDENT),
    Option("alpha", float, None, "weight balance for KD", flags=("-a", "--alpha"), group=STUDENT),
    Option("beta", float, None, "weight balance for other losses", flags=("-b", "--beta"), group=STUDENT),
    Option("test", int, 0, "1: only evaluate a trained student (--path_s, else --path_t as in EMKD) and exit",
           choices=[0, 1], group="EMKD milestone checking and evaluation"),
    Option("path_s", str, None, "student checkpoint for --test 1", group="EMKD milestone checking and evaluation"),
)

# the loss weights' toolkit defaults (RepDistiller: -r 1; -a/-b had none)
TOOLKIT_WEIGHTS = {"gamma": 1.0, "alpha": 0.0, "beta": 0.0}
WEIGHTS = ("gamma", "alpha", "beta")


def method_classes() -> List[type]:
    """Every registered method and add-on whose options the student parser offers."""
    return [distiller_zoo.REGISTRY[n] for n in distiller_zoo.available()] + list(distiller_zoo.ADDONS)


def collect(options: Sequence[Option]) -> List[Option]:
    """Declarations in order, each name once; one name declared two different ways is a programming error."""
    seen: Dict[str, Option] = {}
    out = []
    for o in options:
        if o.name in seen:
            if seen[o.name] != o:
                raise ValueError(f"option --{o.name} is declared twice with different settings; declare it once "
                                 "and share the declaration")
            continue
        seen[o.name] = o
        out.append(o)
    return out


def build_parser(description: str, options: Sequence[Option],
                 owners: Optional[Dict[str, str]] = None) -> argparse.ArgumentParser:
    """A parser of the declarations, in ``--help`` groups: the option's own, else the methods that read it."""
    parser = argparse.ArgumentParser(description)
    groups: Dict[str, Any] = {}
    for o in collect(options):
        group = o.group or (owners or {}).get(o.name, METHODS)
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        o.add_to(groups[group])
    return parser


def method_owners() -> Dict[str, str]:
    """Option name -> a help-group title naming the methods that declare it (``--kd_T``: every method)."""
    readers: Dict[str, List[str]] = {}
    classes = method_classes()
    for cls in classes:
        for o in cls.options:
            readers.setdefault(o.name, []).append(cls.name or cls.flag)
    everyone = len(classes) - 1  # all but ce, which reads nothing
    return {name: METHODS if len(who) >= everyone else f"--distill {', '.join(who)}"
            for name, who in readers.items()}


def teacher_option_list() -> List[Option]:
    return collect(RUN_OPTIONS + TEACHER_SCRIPT_OPTIONS + architecture_options(short_blocktype=False))


def student_option_list() -> List[Option]:
    declared = [o for cls in method_classes() for o in cls.options]
    return collect(RUN_OPTIONS + STUDENT_SCRIPT_OPTIONS + architecture_options(short_blocktype=True)
                   + tuple(declared) + TEACHER_OPTIONS)


def teacher_parser() -> argparse.ArgumentParser:
    return build_parser("train a model from scratch (teacher or vanilla student)", teacher_option_list())


def student_parser() -> argparse.ArgumentParser:
    return build_parser("distill a student from a teacher", student_option_list(), method_owners())


def explicit_dests(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> Set[str]:
    """The ``dest`` of every option that ``argv`` (default ``sys.argv[1:]``) sets explicitly."""
    argv = list(sys.argv[1:] if argv is None else argv)
    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=parser.allow_abbrev)
    for action in parser._actions:  # noqa: SLF001 - argparse has no public accessor
        if not action.option_strings or isinstance(action, argparse._HelpAction):  # noqa: SLF001
            continue
        kwargs = dict(dest=action.dest, default=argparse.SUPPRESS)
        if action.nargs == 0:
            kwargs["action"] = "store_true"
        else:
            kwargs["nargs"] = action.nargs
        probe.add_argument(*action.option_strings, **kwargs)
    seen, _ = probe.parse_known_args(argv)
    return set(vars(seen))


_TYPES: Dict[Tuple[str, Tuple[str, ...]], type] = {}


def options_type(name: str, names: Sequence[str]) -> type:
    """A frozen dataclass with one field per option name (cached per name list)."""
    key = (name, tuple(names))
    if key not in _TYPES:
        _TYPES[key] = dataclasses.make_dataclass(name, [(n, Any) for n in names], frozen=True)
    return _TYPES[key]


@dataclass(frozen=True)
class Configuration:
    """One run's resolved options and where each value came from that was not a flag or a constant default."""

    options: Any
    sources: Dict[str, str]

    def describe(self) -> str:
        """The line the start of a run prints: the values a method or a toolkit rule chose."""
        by_source: Dict[str, List[str]] = {}
        for name, source in self.sources.items():
            by_source.setdefault(source, []).append(f"{name}={getattr(self.options, name)}")
        parts = [f"{source}: {', '.join(items)}" for source, items in by_source.items()]
        return "defaults not given as flags: " + ("; ".join(parts) if parts else "none")


def check_method_defaults(label: str, defaults: Dict[str, Any], names: Set[str]) -> None:
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise ValueError(f"{label}: its defaults name unknown options {', '.join(unknown)}")


def method_defaults(cls, raw: argparse.Namespace, teacher: Optional[str], model_s: str,
                    names: Set[str]) -> Dict[str, Tuple[Any, str]]:
    """Every default of one method for one pair, labelled with its source, later ones beating earlier ones: the
    method's, its per-pair presets, the enabled add-ons' (per pair), then the ``--recipe`` chosen."""
    method = cls.name
    pair = f" ({teacher} -> {model_s})" if teacher else ""
    layers = [(f"--distill {method}", cls.defaults),
              (f"--distill {method}{pair}", cls.defaults_for(teacher, model_s)),
              (f"{data_recipe_label(raw)} {method}{pair}",
               dataset_recipe(raw.dataset, method, teacher, model_s, raw.data_recipe))]
    for addon in distiller_zoo.ADDONS:
        if not addon.enabled(raw):
            continue
        problem = addon.refusal(cls)
        if problem:
            raise SystemExit(f"error: {problem}")
        layers.append((f"{addon.flag}{pair}", addon.defaults_for(cls, teacher, model_s)))
    if raw.recipe is not None:
        if raw.recipe not in cls.recipes:
            known = ", ".join(sorted(cls.recipes)) or "none besides its default"
            raise SystemExit(f"error: --recipe {raw.recipe}: --distill {method} has no recipe of that name (its "
                             f"recipes: {known}); leave --recipe out for its default one")
        layers.append((f"--recipe {raw.recipe}{pair}", cls.recipes[raw.recipe](teacher, model_s)))
    defaults: Dict[str, Tuple[Any, str]] = {}
    for label, values in layers:
        check_method_defaults(label, values, names)
        defaults.update(labelled(values, label))
    return defaults


def data_recipe_label(raw) -> str:
    """How the start of a run names the data set's recipe, e.g. ``--dataset imagenet (mdistiller)``; checks
    ``--data_recipe``."""
    try:
        which = recipe_name(raw.dataset, raw.data_recipe)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    return f"--dataset {raw.dataset}" + (f" ({which})" if which else "")


def labelled(defaults: Dict[str, Any], label: str) -> Dict[str, Tuple[Any, str]]:
    return {name: (value, label) for name, value in defaults.items()}


def resolve(raw: argparse.Namespace, explicit: Set[str], defaults: Dict[str, Tuple[Any, str]],
            model_name: str) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The precedence rule (module docstring): values and the source of every value a default or a rule set.

    ``defaults``: option name -> (value, where it comes from), the method's with its add-ons' on top."""
    values = dict(vars(raw))
    sources: Dict[str, str] = {}
    for name, (value, label) in defaults.items():
        if name in WEIGHTS or name in explicit:
            continue
        values[name] = value
        sources[name] = label
    if "gamma" in values:
        given = [w for w in WEIGHTS if w in explicit]
        for w in WEIGHTS:
            if w in explicit:
                continue
            if w in defaults and (given == [] or w != "gamma"):
                values[w], sources[w] = float(defaults[w][0]), defaults[w][1]
            else:
                values[w] = TOOLKIT_WEIGHTS[w]
                if w in defaults:
                    sources[w] = "RepDistiller's -r 1 (some of -r/-a/-b given)"
    if values["learning_rate"] is None:
        values["learning_rate"] = default_learning_rate(model_name)
        small = "MobileNetV2/ShuffleV1/ShuffleV2" if model_name in SMALL_LR_MODELS else "every other student"
        sources["learning_rate"] = f"RepDistiller's rule ({small})"
    if values["data_seed"] is None:
        values["data_seed"] = values["seed"]
        sources["data_seed"] = "--seed"
    values["blocktype"] = normalize_block_type(values["blocktype"])
    values["block_depth"] = parse_block_depth(values["block_depth"])
    resolve_global_batch(values, sources, explicit)
    return values, sources


def resolve_global_batch(values: Dict[str, Any], sources: Dict[str, str], explicit: Set[str]) -> None:
    """``--global_batch_size N``: each of the K processes torchrun starts takes N / K and the learning rate is the
    global batch's (``--lr_scale none``). A global batch from a recipe gives way to an explicit ``--batch_size``."""
    total = values.get("global_batch_size")
    if total is None:
        return
    if "batch_size" in explicit:
        if "global_batch_size" in explicit:
            raise SystemExit("error: --batch_size (per process) and --global_batch_size (over all processes) both "
                             "set the batch; give one of them")
        values["global_batch_size"], sources["global_batch_size"] = None, "--batch_size given (per process)"
        return
    world = launch_world_size()
    if total < 1 or total % world:
        raise SystemExit(f"error: --global_batch_size {total} does not split over {world} processes; give a multiple "
                         f"of {world} or --batch_size (per process)")
    values["batch_size"] = total // world
    sources["batch_size"] = f"--global_batch_size {total} / {world} process{'es' if world > 1 else ''}"
    if "lr_scale" not in explicit:
        values["lr_scale"], sources["lr_scale"] = "none", "--global_batch_size (the lr is the global batch's)"


def parse_block_depth(text) -> Optional[list]:
    if text is None or isinstance(text, list):
        return text
    try:
        depth = [int(p) for p in str(text).replace(" ", "").split(",") if p]
    except ValueError:
        raise ValueError(f"--block_depth expects comma-separated block counts such as 3,7,2, got '{text}'") from None
    if not depth or any(d < 1 for d in depth):
        raise ValueError(f"--block_depth needs positive block counts, got '{text}'")
    return depth


def check_device_name(name: str) -> None:
    problem = unknown_device(name)
    if problem:
        raise SystemExit(f"error: {problem}")


def check_decay_epochs(text: str) -> None:
    """--lr_decay_epochs is a comma-separated list of epochs (RepDistiller's '150,180,210'); empty: no decay."""
    parts = [p.strip() for p in str(text).split(",")]
    if parts == [""]:
        return
    if not all(re.fullmatch(r"\d+", p) for p in parts):
        raise SystemExit(f"error: --lr_decay_epochs '{text}' must be comma-separated non-negative epochs, "
                         "e.g. 150,180,210")


def check_schedule_flags(schedule: str, explicit: Set[str]) -> None:
    """Refuse the step schedule's flags with a schedule that does not read them (they would be silently unused)."""
    if schedule == "cosine":
        given = [f"--{name}" for name in ("lr_decay_epochs", "lr_decay_rate") if name in explicit]
        if given:
            raise SystemExit(f"error: --lr_schedule cosine does not read {' or '.join(given)} (it anneals from "
                             f"--learning_rate to 0 over --epochs); drop {'them' if len(given) > 1 else 'it'} or "
                             "give --lr_schedule step")
    elif schedule == "multistep" and "lr_decay_epochs" in explicit:
        epochs = ",".join(map(str, CHECKPOINTKD_MULTISTEP))
        raise SystemExit(f"error: --lr_schedule multistep does not read --lr_decay_epochs (it decays after "
                         f"CheckpointKD's epochs {epochs}); for other epochs give --lr_schedule step --lr_decay_epochs")


def check_positive(flag: str, value: float) -> None:
    # written so that nan (which passes any '<= 0' test) and inf are refused too
    if not (value > 0 and math.isfinite(value)):
        raise SystemExit(f"error: {flag} must be a positive number, got {value}")


def check_run_options(o, trials: int = 1) -> None:
    """The checks every training run's resolved options pass (SystemExit with the flag's name)."""
    if o.epochs < 1:
        raise SystemExit("error: --epochs must be at least 1")
    if o.batch_size < 1:
        raise SystemExit("error: --batch_size must be at least 1")
    check_positive("--learning_rate", o.learning_rate)
    if o.test_batch_size < 1:
        raise SystemExit(f"error: --test_batch_size must be at least 1, got {o.test_batch_size}")
    check_decay_epochs(o.lr_decay_epochs)
    check_device_name(o.device)
    check_data_reading(o)
    if o.save_steps < 0:
        raise SystemExit(f"error: --save_steps must be 0 (epoch ends only) or a number of steps, got {o.save_steps}")
    if o.overwrite and o.resume:
        raise SystemExit("error: --overwrite starts the run afresh and --resume continues it; give one of them")
    if trials < 1:
        raise SystemExit("error: --trials must be at least 1")
    check_dot_options(o)
    if o.wandb and missing_wandb():
        raise SystemExit(f"error: {missing_wandb()}")
    if trials > 1 and o.resume not in (None, "auto"):
        raise SystemExit("error: with --trials, resume with --resume auto (each trial continues from its own run "
                         "folder); a single checkpoint path names one trial only")


def check_data_reading(o) -> None:
    """--crop_size/--resize_size/--num_workers: sizes and counts a folder data set can use."""
    for flag in ("crop_size", "resize_size"):
        value = getattr(o, flag)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{flag} must be a positive number of pixels, got {value}")
    if o.num_workers < 0:
        raise SystemExit(f"error: --num_workers must be 0 (read in the training process) or more, got {o.num_workers}")


def check_dot_options(o) -> None:
    """--optimizer dot: a momentum split that keeps both momenta in [0, 1); its own SGD, without Nesterov."""
    if o.optimizer != "dot":
        return
    if not (math.isfinite(o.dot_delta) and 0 <= o.dot_delta <= o.momentum and o.momentum + o.dot_delta < 1):
        raise SystemExit(f"error: --dot_delta must lie in [0, --momentum] with --momentum + --dot_delta < 1, got "
                         f"{o.dot_delta} with --momentum {o.momentum}")
    if o.nesterov:
        raise SystemExit("error: --optimizer dot has no Nesterov variant; drop --nesterov")


def check_block_depth_applies(model_name: str, depth) -> None:
    # build_model drops block_depth for architectures without it; a given one would be silently unused.
    if depth is not None and model_name in model_dict and "block_depth" not in arch_options(model_name):
        raise ValueError(f"--block_depth applies to the self-defined my* models only, not '{model_name}'")


def parse_teacher_options(argv=None):
    """train_teacher.py's resolved options."""
    parser = teacher_parser()
    raw = parser.parse_args(argv)
    explicit = explicit_dests(parser, argv)
    label = data_recipe_label(raw)
    recipe = labelled(dataset_recipe(raw.dataset, None, None, raw.model, raw.data_recipe), label)
    values, _ = resolve(raw, explicit, recipe, raw.model)
    check_schedule_flags(values["lr_schedule"], explicit)
    # a teacher (or vanilla student) trains with the cross-entropy term alone
    values.update(TOOLKIT_WEIGHTS)
    opt = options_type("TeacherOptions", list(values))(**values)
    if opt.optimizer == "dot":
        raise SystemExit("error: --optimizer dot splits a distillation loss from the task loss; a model trained "
                         "from scratch has none (use it with train_student.py)")
    check_run_options(opt, opt.trials)
    check_block_depth_applies(opt.model, opt.block_depth)
    return opt


def data_settings(opt) -> FolderSettings:
    """How a folder data set (imagenet, tiny_imagenet) is read, from a run's options."""
    return FolderSettings(data_format=opt.data_format, pipeline=opt.data_pipeline, crop_size=opt.crop_size,
                          resize_size=opt.resize_size, num_workers=opt.num_workers)


def split_list(text) -> list:
    return [v.strip() for v in str(text).split(",") if v.strip()]


def distiller_class(name: str):
    if name not in distiller_zoo.REGISTRY or name == "ce":
        names = [n for n in distiller_zoo.available() if n != "ce"]
        raise ValueError(f"unknown --distill '{name}'; choose one of: {', '.join(names)}")
    return distiller_zoo.REGISTRY[name]


def parse_configurations(argv=None, parser=None) -> List[Configuration]:
    """One configuration per student x method of comma-separated ``--model_s``/``--distill`` values.

    They train side by side in one process (the teacher's forward and the batches shared), so the options that
    are shared must agree; a method's own defaults (learning rate, schedule, temperature) stay its run's.
    """
    parser = parser or student_parser()
    raw = parser.parse_args(argv)
    explicit = explicit_dests(parser, argv)
    pairs = [(m, d) for m in split_list(raw.model_s) for d in split_list(raw.distill)]
    if not pairs:
        raise SystemExit("error: --model_s and --distill need at least one value each")
    names = set(vars(raw))
    teacher = arch_from_path(raw.path_t, raw.model_t, input_family(raw.dataset))
    configs = []
    for model_s, method in pairs:
        cls = distiller_zoo.REGISTRY.get(method)
        defaults = {} if cls is None else method_defaults(cls, raw, teacher, model_s, names)
        own = argparse.Namespace(**{**vars(raw), "model_s": model_s, "distill": method})
        values, sources = resolve(own, explicit, defaults, model_s)
        if values["optimizer"] == "dot" and values["nesterov"] and "nesterov" not in explicit:
            # a method's recipe with Nesterov (checkpointkd) under DOT, which has no such variant
            values["nesterov"], sources["nesterov"] = False, "--optimizer dot (no Nesterov variant)"
        check_schedule_flags(values["lr_schedule"], explicit)
        opt = options_type("StudentOptions", list(values))(**values)
        check_run_options(opt, opt.trials)
        check_positive("--kd_T", opt.kd_T)
        check_block_depth_applies(opt.model_s, opt.block_depth)
        configs.append(Configuration(opt, sources))
    if len(configs) > 1:
        check_side_by_side(configs)
    return configs


def parse_student_options(argv=None):
    """The options of one run (the first configuration when --model_s/--distill list several)."""
    return parse_configurations(argv)[0].options


# what runs side by side share: the batches, the schedule's length, the evaluation and the teacher's BN mode
SHARED_BY_SIDE_BY_SIDE = ("epochs", "batch_size", "data_seed", "dataset", "data_norm", "test_batch_size",
                          "teacher_bn")


def check_side_by_side(configs: List[Configuration]) -> None:
    """Several configurations share batches, schedule length and teacher; refuse what cannot be shared."""
    names = ", ".join(f"{c.options.model_s}/{c.options.distill}" for c in configs)
    first = configs[0].options
    for key in SHARED_BY_SIDE_BY_SIDE:
        values = {getattr(c.options, key) for c in configs}
        if len(values) > 1:
            who = ", ".join(f"{c.options.distill} {getattr(c.options, key)}" for c in configs
                            if key in c.sources) or names
            raise SystemExit(f"error: {names}: side-by-side runs share --{key}, but a method's own recipe sets "
                             f"another ({who}); give --{key} explicitly or run them apart")
    known = [c.options for c in configs if c.options.distill in distiller_zoo.REGISTRY]
    if len({distiller_zoo.REGISTRY[o.distill].needs_teacher for o in known}) > 1:
        raise SystemExit(f"error: {names}: methods with and without a teacher cannot share a run; run them apart")
    if first.test:
        raise SystemExit("error: --test 1 evaluates one student; give one --model_s and one --distill")
    if first.resume not in (None, "auto"):
        raise SystemExit("error: several configurations resume with --resume auto (each from its own run folder); "
                         "a single checkpoint path names one run only")


def trial_id(base: str, i: int) -> str:
    """Trial ``i`` (0-based) of a run started with ``--trial base``: 1 -> 1, 2, 3...; 'a' -> a_0, a_1..."""
    if i == 0:
        return base
    try:
        return str(int(base) + i)
    except ValueError:
        return f"{base}_{i}"


def trial_options(opt, i: int):
    """Options of trial ``i``: the seed and trial id move on, the data order stays the shared one."""
    return dataclasses.replace(opt, seed=opt.seed + i, trial=trial_id(str(opt.trial), i), trials=1)


def student_run_name(opt, teacher_label: str, depth=None) -> str:
    """RepDistiller's ``S_..._T_...`` name (``_`` for its colons, which break on some file systems); my*
    students add their block depth and milestone-checking runs end the method with ``_mc`` (EMKD)."""
    model_s = opt.model_s if depth is None else f"{opt.model_s}_{'-'.join(str(d) for d in depth)}"
    distill = opt.distill + (f"_{opt.recipe}" if opt.recipe else "")
    distill += "".join(addon.run_suffix for addon in distiller_zoo.ADDONS if addon.enabled(opt))
    if opt.optimizer == "dot":
        distill += "_dot"  # a KD+DOT run next to its plain-SGD KD run, not in the same folder
    distill += schedule_suffix(opt)
    return (f"S_{model_s}_T_{teacher_label}_{opt.dataset}_{distill}_r_{opt.gamma}_a_{opt.alpha}"
            f"_b_{opt.beta}_{opt.trial}")


def teacher_run_name(opt, depth=None) -> str:
    """RepDistiller's teacher folder name; my* models carry their block depth (``myresnet20_3-7-2_...``)."""
    model = opt.model if depth is None else f"{opt.model}_{'-'.join(str(d) for d in depth)}"
    return (f"{model}_{opt.dataset}_lr_{opt.learning_rate}{schedule_suffix(opt)}_decay_{opt.weight_decay}"
            f"_trial_{opt.trial}")


def schedule_suffix(opt) -> str:
    """``_cosine``/``_multistep`` in run-folder names, so that such a run does not share the folder of (or resume)
    the step-schedule run it is compared with; RepDistiller's step schedule adds nothing."""
    return "" if opt.lr_schedule == "step" else f"_{opt.lr_schedule}"
