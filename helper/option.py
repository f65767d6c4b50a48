"""A declared command-line option: what a method, a model family or the toolkit owns.

Methods list theirs in ``options`` (see ``distiller_zoo/base.py``); the parser of the entry scripts is generated
from these declarations (``assembly/options.py``), so a new method's flags live in its own file.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple


def str2bool(text) -> bool:
    """A real boolean for flags written ``--flag True``/``--flag False`` (argparse's bool() is truthy)."""
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got '{text}'")


@dataclass(frozen=True)
class Option:
    """One option: its ``name`` (the attribute it is read as), type, default and help.

    ``flags`` are the command-line spellings (default ``--name``; RepDistiller's short forms such as ``-r``
    go first). A ``str2bool`` option also accepts the bare flag as True. The same name may be declared by
    several methods only as the same declaration (e.g. ``--feat_dim`` of CRD and CC).
    """

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str = ""
    flags: Tuple[str, ...] = ()
    choices: Optional[Sequence[Any]] = None
    group: str = ""
    action: Optional[str] = None  # "store_true" for a bare switch such as --overwrite (type is then ignored)

    @property
    def spellings(self) -> Tuple[str, ...]:
        return self.flags or (f"--{self.name}",)

    def add_to(self, parser) -> None:
        if self.action is not None:
            parser.add_argument(*self.spellings, dest=self.name, action=self.action, default=self.default,
                                help=self.help)
            return
        kwargs = dict(dest=self.name, type=self.type, default=self.default, help=self.help)
        if self.type is str2bool:
            kwargs.update(nargs="?", const=True)
        if self.choices is not None:
            kwargs["choices"] = list(self.choices)
        parser.add_argument(*self.spellings, **kwargs)
