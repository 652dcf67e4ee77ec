"""What jace's training configs share: fields that carry their own help text and checks.

A config is a dataclass whose fields are made with :func:`option`. The help text feeds the
command line (its options are generated from the fields), and the check runs when the config is
built, so a bad value fails at once with every problem listed, not after an hour of training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]


def option(default: Any, help: str, check: Check | None = None, rule: str = "", flags: tuple[str, ...] = ()) -> Any:
    """A config field with help text, an optional check (``rule`` says what it wants), and CLI flag names.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class C:
        ...     r: int = option(8, "LoRA rank.", lambda v: v >= 1, "must be >= 1", flags=("--lora-r",))
        >>> validate(C(r=0))
        Traceback (most recent call last):
        ...
        ValueError: invalid C: r must be >= 1, got 0.
    """
    metadata = {"help": help, "check": check, "rule": rule, "flags": flags}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def validate(config: Any, *extra: tuple[str, bool, str]) -> None:
    """Check every field of ``config`` (and ``extra`` cross-field rules: name, bad, rule); raise one ValueError listing all problems."""
    problems = []
    for field in dataclasses.fields(config):
        check = field.metadata.get("check")
        value = getattr(config, field.name)
        try:
            ok = check is None or bool(check(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            problems.append(f"{field.name} {field.metadata['rule']}, got {value!r}")
    problems += [f"{name} {rule}" for name, bad, rule in extra if bad]
    if problems:
        raise ValueError(f"invalid {type(config).__name__}: " + "; ".join(problems) + ".")


def field_help(config_class: type) -> dict[str, str]:
    """Help text per field, as the CLI shows it.

    Example:
        >>> from jace.training import LoraTrainingConfig
        >>> field_help(LoraTrainingConfig)["r"]
        'LoRA rank.'
    """
    return {field.name: field.metadata.get("help", "") for field in dataclasses.fields(config_class)}


def positive(value: Any) -> bool:
    return value > 0


def at_least_one(value: Any) -> bool:
    return value >= 1


def fraction(value: Any) -> bool:
    """In [0, 1)."""
    return 0 <= value < 1
