"""Command-line options generated from a config dataclass: one option per field, with its help and default.

Like ``HfArgumentParser`` does for argparse, but for typer commands: the decorated command gets
one ``--flag`` per field of the config (the field's ``flags`` metadata, else ``--field-name``),
and receives the built config as its ``config`` argument. The config checks its own values, so a
bad one is reported with the field's name.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, List

import typer

from jace.config import field_help

_PREFIX = "config__"


def _annotation(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return type(typing.get_args(hint)[0])
    if origin in (tuple, list):
        return List[typing.get_args(hint)[0]]
    return hint


def config_options(config_class: type, *, exclude: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the fields of ``config_class`` as options of a typer command; the command gets ``config=``.

    Example:
        >>> @app.command()  # doctest: +SKIP
        ... @config_options(LoraTrainingConfig)
        ... def train(data: str, config: LoraTrainingConfig) -> None: ...
    """
    hints = typing.get_type_hints(config_class)
    fields = [field for field in dataclasses.fields(config_class) if field.name not in exclude]
    help_texts = field_help(config_class)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        own = [parameter for name, parameter in signature.parameters.items() if name != "config"]
        added = []
        for field in fields:
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
            if isinstance(default, tuple):
                default = list(default)
            flags = field.metadata.get("flags") or (f"--{field.name.replace('_', '-')}",)
            help_text = help_texts[field.name]
            added.append(inspect.Parameter(
                _PREFIX + field.name, inspect.Parameter.KEYWORD_ONLY, annotation=_annotation(hints[field.name]),
                default=typer.Option(default, *flags, help=help_text, rich_help_panel=f"{config_class.__name__} options"),
            ))  # fmt: skip

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {name[len(_PREFIX) :]: kwargs.pop(name) for name in list(kwargs) if name.startswith(_PREFIX)}
            return command(config=config_class(**values), **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        return wrapper

    return decorate
