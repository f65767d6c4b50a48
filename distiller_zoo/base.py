"""The method contract: one `Distiller` subclass per ``--distill`` value, registered by name.

The engine (``engine/``) only talks to this interface:

* ``options``: the method's own command-line options (:class:`helper.option.Option`; the parser is generated
  from them, a flag shared by several methods is one declaration). ``Distiller(ctx)`` receives them typed in
  ``ctx.options`` (an instance of ``cls.options_type()``, holding exactly those), never the whole namespace.
* ``defaults``: option values the method's reference used (loss weights ``gamma``/``alpha``/``beta`` for
  ``-r``/``-a``/``-b``, ``learning_rate``, its recipe: epochs, schedule, batch size, temperature, ...);
  ``defaults_for(teacher, student)``: its per-pair configs, which beat them; ``recipes``: named alternative recipes
  (``--recipe NAME``). One precedence rule applies them (``assembly/options.py``).
* ``Distiller(ctx)`` builds the method's extra modules from a :class:`DistillContext` (typed options,
  student/teacher and the features of one dummy forward). Invalid combinations raise ``ValueError`` here, i.e.
  before any training step.
* ``student_features`` / ``teacher_features``: which feature list the method reads from each network, declared
  independently: None (logits only), ``POST`` (post-activation maps, RepDistiller's ``is_feat=True``) or
  ``PRE`` (pre-activation maps, ``preact=True``).
* ``loss(out_s, out_t, batch, epoch)`` returns named terms; the loop weights ``ce`` with ``-r``, ``kl`` with
  ``-a`` and ``kd`` with ``-b`` (RepDistiller's composition). The loop calls it through ``float32_loss``
  (``init_loss`` through ``float32_init_loss``): float32 outputs, autocast off, whatever precision the
  networks ran in.
* ``strong_view = True``: every batch also carries a strongly augmented view of its images (``Batch.x_strong``,
  RandAugment + Cutout, MLKD); the student and the teacher each run on it too, and ``out_s.strong`` /
  ``out_t.strong`` hold those outputs.
* ``batch_expansion`` (a :class:`helper.types.BatchExpansion`, None by default): both networks run on an expansion
  of every training batch instead of the batch (SSKD: four rotations of each image, one forward), in the main and
  the init stage; ``loss`` gets their outputs on all expanded rows and the batch's labels as they are.
* ``trainable_modules()`` go into the optimizer next to the student.
* ``deployed(student)``: the network evaluation scores and a run deploys (the student, or with SimKD the student
  plus the method's projector and the teacher's classifier); ``deploy_state()`` is saved as the checkpoint's
  ``deploy`` entry and ``deployed_from(student, entry)`` rebuilds that network (``validation.py``).
* two-stage methods (AB, FT, FSP, PAD, SSKD) override ``init_modules`` / ``init_loss`` (and ``init_lr``,
  ``init_lr_factor`` for a schedule within the init stage).
* ``needs_teacher = False`` (self-distillation, e.g. BYOT): no teacher is built and the loop passes
  ``out_t=None``.
* ``epoch_metrics()``: extra per-epoch numbers (e.g. the accuracy of every exit of a multi-exit student) that
  the loop adds to the epoch's metrics row; called once at the end of each epoch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.option import Option, str2bool
from helper.types import Batch, BatchExpansion, Outputs, float32_outputs  # noqa: F401 (the contract's types)
from helper.util import at_least_float32

REGISTRY: Dict[str, type] = {}

# what a method reads from a network besides its logits
POST = "post"  # post-activation feature list (RepDistiller's is_feat=True)
PRE = "pre"  # pre-activation feature list (is_feat=True, preact=True)


def register(name: str):
    """Class decorator: make a Distiller selectable as ``--distill name``."""

    def wrap(cls):
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"distiller '{name}' registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


def available() -> List[str]:
    return sorted(REGISTRY)


# add-ons that compose with any method whose contract they fit (--logit_stand, --mc), in the order they attach
ADDONS: List[type] = []


def register_addon(cls):
    """Class decorator for an add-on. It declares ``options`` and answers, as classmethods:
    ``enabled(values)`` (from a run's options), ``refusal(method_cls)`` (why it cannot serve that method, or None),
    ``defaults_for(method_cls, teacher, student)`` (its defaults for that method and pair, which take precedence over
    the method's), ``flag`` (its switch), ``run_suffix`` (appended to the method in run-folder names) and ``attach(distiller, ctx)``
    (the distiller it makes of a built one; ``ctx.options`` holds the add-on's typed options). ``attach_order``:
    add-ons that change a method's computation attach before those that wrap it."""
    ADDONS.append(cls)
    ADDONS.sort(key=lambda c: c.attach_order)
    return cls


# Options several methods read, declared once (RepDistiller's names, defaults and help texts).
KD_T = Option("kd_T", float, 4, "temperature for KD distillation")
TEACHER_SCALE = Option("teacher_scale", str2bool, False,
                       "CheckpointKD's teacher_scale KL: T * KL(softmax(z_t/T) || softmax(z_s)) instead of "
                       "T^2 * KL at temperature T on both sides",
                       group="CheckpointKD teachers (snapshots and logit ensembles; any --distill method)")
FEAT_DIM = Option("feat_dim", int, 128, "feature dimension (CRD, CC)")

_OPTION_TYPES: Dict[Tuple[str, Tuple[str, ...]], type] = {}


def options_type(name: str, options: Tuple[Option, ...]) -> type:
    """A frozen dataclass with one typed field per option (cached, so equal declarations share a type)."""
    key = (name, tuple(o.name for o in options))
    if key not in _OPTION_TYPES:
        fields = [(o.name, o.type if isinstance(o.type, type) else Any, field(default=o.default)) for o in options]
        _OPTION_TYPES[key] = dataclasses.make_dataclass(name, fields, frozen=True)
    return _OPTION_TYPES[key]


@dataclass
class DistillContext:
    """Everything a method may look at while building its extra modules.

    ``teacher`` is the network whose features the method reads (for an ensemble teacher, that member).
    """

    options: Any  # the method's typed options (cls.options_type()), see Distiller.options
    student: nn.Module
    teacher: Optional[nn.Module]
    feat_s: Optional[List[torch.Tensor]] = None  # features of a dummy forward (eval mode)
    feat_t: Optional[List[torch.Tensor]] = None
    train_targets: Optional[torch.Tensor] = None  # labels of the training set, on the device
    num_classes: int = 100
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    student_name: str = ""  # the --model_s name
    batch_size: int = 64  # --batch_size, the rows of a training step per process (SemCKD sizes modules by it)

    @property
    def n_data(self) -> int:
        return 0 if self.train_targets is None else int(self.train_targets.numel())


def kd_kl(logit_s: torch.Tensor, logit_t: torch.Tensor, T: float) -> torch.Tensor:
    """RepDistiller's KL: summed over classes and batch, divided by the batch size, times T^2."""
    logit_s, logit_t = at_least_float32(logit_s), at_least_float32(logit_t)
    p_s = F.log_softmax(logit_s / T, dim=1)
    p_t = F.softmax(logit_t / T, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * (T ** 2) / logit_s.shape[0]


def kd_kl_teacher_scale(logit_s: torch.Tensor, logit_t: torch.Tensor, T: float) -> torch.Tensor:
    """CheckpointKD's ``teacher_scale`` variant: only the teacher is softened and the factor is T.

    ``T * KL(softmax(z_t / T) || softmax(z_s))`` summed over classes, averaged over the batch
    (``F.kl_div(..., reduction='batchmean') * T`` in the reference).
    """
    logit_s, logit_t = at_least_float32(logit_s), at_least_float32(logit_t)
    p_s = F.log_softmax(logit_s, dim=1)
    p_t = F.softmax(logit_t / T, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * T / logit_s.shape[0]


class Distiller(nn.Module):
    """Base class. Subclasses declare ``options``, ``defaults`` and their feature needs and override
    ``method_loss`` (or ``loss``)."""

    name: str = ""
    # the options this method reads (its ctx.options); a subclass lists the base's too when it uses them
    options: Tuple[Option, ...] = (KD_T, TEACHER_SCALE)
    # option values of the method's reference, applied where no flag is given (assembly/options.py)
    defaults: Dict[str, Any] = {}
    # named reference recipes besides the default one, selected with --recipe NAME: name -> f(teacher, student)
    # giving option values (epochs, learning rate, ...) that beat every other default
    recipes: Dict[str, Callable[[Optional[str], str], Dict[str, Any]]] = {}
    student_features: Optional[str] = None
    teacher_features: Optional[str] = None
    # its distillation terms soften logits with a temperature (what --logit_stand changes)
    softens_logits: bool = False
    # those terms share the one temperature --kd_T (what --ctkd learns); MLKD's several temperatures do not
    one_temperature: bool = False
    # it reads the networks' outputs on a second, strongly augmented view of each batch as well (Batch.x_strong)
    strong_view: bool = False
    needs_teacher: bool = True
    # the networks run on this expansion of every training batch instead of the batch (None: the batch itself)
    batch_expansion: Optional[BatchExpansion] = None
    # the method's reference runs cuDNN deterministically (ICKD); the assembly applies it on CUDA
    deterministic_cudnn: bool = False
    # its modules are sized by --batch_size (SemCKD): the loop skips a last batch smaller than that, as its
    # reference does
    full_batches_only: bool = False

    @classmethod
    def options_type(cls) -> type:
        return options_type(f"{cls.__name__}Options", tuple(cls.options))

    @classmethod
    def defaults_for(cls, teacher: Optional[str], student: str) -> Dict[str, Any]:
        """Presets of the method's reference for one teacher/student pair (its per-pair configs), which beat
        ``defaults``; ``teacher`` is None when the run names no teacher architecture."""
        return {}

    @classmethod
    def select_options(cls, values) -> Any:
        """This method's typed options out of a run's resolved options (any object with those attributes)."""
        return cls.options_type()(**{o.name: getattr(values, o.name) for o in cls.options})

    def __init__(self, ctx: DistillContext):
        super().__init__()
        # the typed values (``options`` on the class are the declarations)
        self.method_options = ctx.options
        # what the distillation terms see of the logits: None, the logits themselves; an add-on may set a map
        # (--logit_stand), which every softening term of a method applies through distill_logits
        self.logit_transform = None
        # where the softening temperature comes from: None, the fixed --kd_T; an add-on may set a callable
        # (--ctkd's learnable one), which every softening term then reads through T at call time
        self.temperature = None

    @property
    def T(self):
        """The softening temperature: ``float(--kd_T)``, or a 0-d tensor when an add-on set ``temperature``."""
        if self.temperature is None:
            return float(self.method_options.kd_T)
        return self.temperature()

    @property
    def teacher_scale(self) -> bool:
        return bool(self.method_options.teacher_scale)

    def distill_logits(self, logit_s: torch.Tensor, logit_t: torch.Tensor):
        """The logits as the distillation terms use them (the cross-entropy term keeps the raw ones)."""
        if self.logit_transform is None:
            return logit_s, logit_t
        return self.logit_transform(logit_s), self.logit_transform(logit_t)

    def kl_term(self, logit_s: torch.Tensor, logit_t: torch.Tensor) -> torch.Tensor:
        """The ``-a`` term: RepDistiller's KL, or CheckpointKD's ``--teacher_scale`` form."""
        logit_s, logit_t = self.distill_logits(logit_s, logit_t)
        if self.teacher_scale:
            return kd_kl_teacher_scale(logit_s, logit_t, self.T)
        return kd_kl(logit_s, logit_t, self.T)

    def epoch_metrics(self) -> Dict[str, float]:
        """Extra numbers for this epoch's metrics row; implementations reset their accumulators here."""
        return {}

    # --- main stage -------------------------------------------------------------------
    def method_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch, epoch: int) -> torch.Tensor:
        return out_s.logits.new_zeros(())

    def loss(self, out_s: Outputs, out_t: Optional[Outputs], batch: Batch, epoch: int) -> Dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(out_s.logits, batch.y)}
        if out_t is not None:
            terms["kl"] = self.kl_term(out_s.logits, out_t.logits)
            terms["kd"] = self.method_loss(out_s, out_t, batch, epoch)
        return terms

    def float32_loss(self, out_s: Outputs, out_t: Optional[Outputs], batch: Batch,
                     epoch: int) -> Dict[str, torch.Tensor]:
        """``loss`` computed in float32 whatever precision the networks ran in (what the training loop calls).

        Under bf16 autocast the losses would otherwise run partly in bf16: CUDA autocast does not promote
        ``linalg_svd`` (KD-SVD raises) and casts ``bmm``/``matmul`` down (ICKD's Gram matrices, RKD's
        distances), so the outputs are upcast and autocast is off inside; the method's own modules
        (regressors, embeddings) run in float32 too. Without autocast and with float32 outputs this is the
        plain ``loss`` call.
        """
        with torch.autocast(out_s.logits.device.type, enabled=False):
            return self.loss(float32_outputs(out_s), float32_outputs(out_t), batch, epoch)

    def step_loss(self, out_s: Outputs, out_t: Optional[Outputs], batch: Batch,
                  epoch: int) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """What the training step calls: ``float32_loss``'s terms and the logits its training accuracy counts
        (the student's; a method whose deployed network predicts through its own modules returns those)."""
        return self.float32_loss(out_s, out_t, batch, epoch), out_s.logits

    def trainable_modules(self) -> List[nn.Module]:
        """Extra modules whose parameters the main-stage optimizer updates (default: all children)."""
        return list(self.children())

    # --- what a run deploys ------------------------------------------------------------
    def deployed(self, student: nn.Module) -> nn.Module:
        """The network this method's run deploys, which evaluation scores: the student itself, or (SimKD) the
        student with some of the method's modules, sharing them."""
        return student

    def deploy_state(self) -> Optional[Dict[str, Any]]:
        """What a checkpoint needs, next to the student's ``model`` state, to rebuild the deployed network with
        :meth:`deployed_from` (``{'method': name, ...}``, tensors and plain values); None: the student is it."""
        return None

    @classmethod
    def deployed_from(cls, student: nn.Module, state: Dict[str, Any]) -> nn.Module:
        """The deployed network around a loaded ``student``, from a checkpoint's ``deploy`` entry."""
        raise ValueError(f"--distill {cls.name} deploys the student alone; its checkpoints have no 'deploy' entry")

    # --- optional init stage (AB, FT, FSP) ---------------------------------------------
    def init_modules(self, student: nn.Module) -> Optional[List[nn.Module]]:
        """Modules trained during ``--init_epochs`` before distillation; None: no init stage."""
        return None

    def init_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def float32_init_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch) -> torch.Tensor:
        """``init_loss`` in float32, autocast off (see :meth:`float32_loss`)."""
        with torch.autocast(out_s.logits.device.type, enabled=False):
            return self.init_loss(float32_outputs(out_s), float32_outputs(out_t), batch)

    def init_lr(self, learning_rate: float) -> float:
        """The init stage's lr, given the run's ``--learning_rate``."""
        return float(learning_rate)

    def init_lr_factor(self, epoch: int, epochs: int) -> float:
        """The factor on ``init_lr`` in init epoch ``epoch`` (1-indexed) of ``epochs``: 1, a constant lr."""
        return 1.0


class MethodWrapper(Distiller):
    """A Distiller around a built one (an add-on such as milestone checking or CTKD): the wrapped method's
    modules, init stage, per-epoch numbers and state stay its own (under ``inner.`` in the state dict); a subclass
    changes ``loss`` and adds its own modules."""

    def __init__(self, inner: Distiller, ctx: DistillContext):
        super().__init__(ctx)
        self.inner = inner
        # what the engine asks of a method stays the wrapped method's
        self.student_features = inner.student_features
        self.teacher_features = inner.teacher_features
        self.needs_teacher = inner.needs_teacher
        self.strong_view = inner.strong_view
        self.full_batches_only = inner.full_batches_only
        self.batch_expansion = inner.batch_expansion

    def trainable_modules(self):
        return self.inner.trainable_modules()

    def init_modules(self, student):
        return self.inner.init_modules(student)

    def init_loss(self, out_s, out_t, batch):
        return self.inner.init_loss(out_s, out_t, batch)

    def init_lr(self, learning_rate):
        return self.inner.init_lr(learning_rate)

    def init_lr_factor(self, epoch, epochs):
        return self.inner.init_lr_factor(epoch, epochs)

    def epoch_metrics(self):
        return self.inner.epoch_metrics()

    def deployed(self, student):
        return self.inner.deployed(student)

    def deploy_state(self):
        return self.inner.deploy_state()


def softening_refusal(flag: str, purpose: str, method_cls, capability: str = "softens_logits",
                      lacking: str = "has no such term") -> Optional[str]:
    """Why an add-on that changes how logits are softened cannot serve ``method_cls`` (None: it can): the methods
    that have ``capability`` (a class attribute such as ``softens_logits``) are named."""
    if getattr(method_cls, capability):
        return None
    fitting = ", ".join(sorted(name for name, cls in REGISTRY.items() if getattr(cls, capability)))
    return f"{flag} {purpose} ({fitting}); --distill {method_cls.name} {lacking}"


@register("ce")
class CrossEntropyOnly(Distiller):
    """Plain supervised training (teachers, students from scratch): only the ``ce`` term."""

    options = ()

    def loss(self, out_s, out_t, batch, epoch):
        return {"ce": F.cross_entropy(out_s.logits, batch.y)}


def build_distiller(name: str, ctx: DistillContext) -> Distiller:
    if name not in REGISTRY:
        raise ValueError(f"unknown --distill '{name}'; choose one of: {', '.join(available())}")
    return REGISTRY[name](ctx)
