"""Crash-safe writes: a model folder or a file is never left half-written, and nothing else is touched.

:func:`atomic_directory` stages a save in a temporary folder beside the target. A new target is
created by one rename. An existing folder keeps every file the save does not write (a user's
notes, data, other models' subfolders); the staged files replace their namesakes one by one, with
the config files that make a folder loadable removed first and put back last, and a marker file
present meanwhile, so a crash mid-way leaves a folder that refuses to load rather than a mix of two
models. A folder that holds a *different* model is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Present in a model folder only while a save into it is in progress (or was killed mid-way).
INCOMPLETE_MARKER = ".jace-incomplete"
#: Files that make a folder loadable; they are placed last. Their identity keys tell two models apart.
IDENTITY_FILES = {
    "config.json": ("model_type", "architectures"),
    "adapter_config.json": ("peft_type", "base_model_name_or_path"),
}
#: Weight files a transformers/PEFT save writes; stale ones (e.g. old shards) are removed on replace.
_WEIGHTS = re.compile(r"^(model|adapter_model|pytorch_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)(\.index\.json)?$")


def check_complete(folder: str | Path) -> None:
    """Raise if ``folder`` is a model folder whose save was interrupted.

    Example:
        >>> import tempfile
        >>> check_complete(tempfile.mkdtemp())
    """
    if (Path(folder) / INCOMPLETE_MARKER).exists():
        raise ValueError(
            f"{folder}: a save into this folder was interrupted (found {INCOMPLETE_MARKER}), so its model files "
            "may be a mix of two models. Save or export the model into it again."
        )


def _identity(folder: Path) -> dict[str, object]:
    identity: dict[str, object] = {}
    for name, keys in IDENTITY_FILES.items():
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                data = {}
            identity[name] = tuple(str(data.get(key)) for key in keys)
    return identity


def _check_same_model(staged: Path, target: Path) -> None:
    old, new = _identity(target), _identity(staged)
    if old and old != new:
        described = lambda ident: "; ".join(f"{name} {values}" for name, values in ident.items()) or "no model"  # noqa: E731
        raise FileExistsError(
            f"{target} already holds a different model ({described(old)}), and this save writes {described(new)}. "
            "Choose another folder, or pass overwrite=True (CLI: --overwrite) to replace that model's files "
            "(other files in the folder are kept)."
        )


def _remove_stale(pid_prefix: Path) -> None:
    """Remove temporary siblings ``.NAME.tmp-PID-…`` left by processes that no longer run."""
    for path in pid_prefix.parent.glob(f"{pid_prefix.name}*"):
        match = re.search(r"\.tmp-(\d+)", path.name)
        if not match:
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # still running: not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _default_mode(directory: bool) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _merge_into(staged: Path, target: Path) -> None:
    """Move staged files into ``target``: identity files removed first, placed last; other files kept."""
    staged_files = {p.relative_to(staged) for p in staged.rglob("*") if p.is_file()}
    identity = sorted(p for p in staged_files if p.name in IDENTITY_FILES)
    marker = target / INCOMPLETE_MARKER
    marker.write_text("a save into this folder is in progress\n")
    for relative in identity:
        (target / relative).unlink(missing_ok=True)
    for relative in sorted(staged_files - set(identity)):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged / relative, destination)
    for folder in {target / r.parent for r in staged_files}:
        for stale in folder.iterdir():
            if _WEIGHTS.match(stale.name) and stale.relative_to(target) not in staged_files:
                stale.unlink()
    for relative in identity:
        os.replace(staged / relative, target / relative)
    marker.unlink()


@contextmanager
def atomic_directory(target: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; when the block succeeds, its files land in ``target``.

    A new ``target`` appears in one rename. In an existing folder only the files the save wrote
    are replaced, and nothing else is removed. A folder holding a different model (its
    ``config.json`` or ``adapter_config.json`` names another model type, architecture or base)
    is refused unless ``overwrite=True``. If the block raises, ``target`` is left as it was.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "model").mkdir(); _ = (root / "model" / "notes.txt").write_text("mine")
        >>> with atomic_directory(root / "model") as tmp:
        ...     _ = (tmp / "config.json").write_text("{}")
        >>> sorted(p.name for p in (root / "model").iterdir())
        ['config.json', 'notes.txt']
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is a file; a model is saved into a folder. Choose another path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = target.with_name(f".{target.name}.tmp-")
    _remove_stale(prefix)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix.name}{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            if not overwrite:
                _check_same_model(tmp, target)
            _merge_into(tmp, target)
        else:
            os.chmod(tmp, _default_mode(directory=True))
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(target: str | Path, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temporary file beside ``target``; on success it replaces ``target`` in one rename.

    An interrupted write never leaves a truncated file under the final name.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_file(path, encoding="utf-8") as handle:
        ...     _ = handle.write("done")
        >>> path.read_text()
        'done'
    """
    target = Path(target)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder; give a file path to write.")
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = target.with_name(f".{target.name}.tmp-")
    _remove_stale(prefix)
    tmp = prefix.with_name(f"{prefix.name}{os.getpid()}")
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
