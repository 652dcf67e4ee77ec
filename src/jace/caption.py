"""Captioning image お題 into Japanese text with Qwen2.5-VL, at dataset scale.

Identical images are captioned once (content hash), captions are cached on disk keyed by image,
model, prompt and generation settings, and a bad image becomes an error result for that item
only: it never stops the batch and is never returned as if it were a caption.

No ``AutoProcessor`` is used: in transformers 5 it builds a video processor that needs
torchvision, which does not install beside the CPU torch wheel here. The tokenizer and the PIL
backend of the image processor are loaded separately, and ``<|image_pad|>`` is expanded to the
image's token count the same way the processor does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from jace.batching import run_batched
from jace.device import resolve_device, resolve_dtype
from jace.config import DEFAULT_CAPTION_MODEL

DEFAULT_PROMPT = "大喜利のお題の画像が与えられます。この画像から、大喜利のお題のようなキャプションを日本語で作成してください。"
IMAGE_PAD = "<|image_pad|>"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

ImageInput = Union[Image.Image, np.ndarray, str, Path, bytes, bytearray]


class CaptionError(RuntimeError):
    """Some images could not be captioned; ``results`` holds every item's outcome, in input order."""

    def __init__(self, results: list["CaptionResult"]) -> None:
        self.results = results
        failed = [(i, r.error) for i, r in enumerate(results) if r.error]
        listed = "; ".join(f"item {i}: {error}" for i, error in failed[:5])
        more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(f"{len(failed)} of {len(results)} image(s) failed: {listed}{more}")


@dataclass
class _Prepared:
    """One image ready for the model: its pixel patches and patch grid, from the image processor."""

    digest: str
    pixel_values: torch.Tensor
    grid: torch.Tensor  # (1, 3): t, h, w

    @property
    def tokens(self) -> int:
        return int(self.grid.prod())


@dataclass(frozen=True)
class CaptionResult:
    """One item's outcome: a caption, or an error message (never both)."""

    caption: str | None
    error: str | None = None
    image_hash: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def load_image(item: ImageInput) -> Image.Image:
    """Turn a PIL image, a uint8 array (HxW, HxWx3, HxWx4), a path or raw bytes into an RGB image.

    Raises ValueError (or FileNotFoundError) with what was wrong and how to fix it.
    """
    if isinstance(item, Image.Image):
        image = item
    elif isinstance(item, np.ndarray):
        if item.dtype != np.uint8:
            raise ValueError(f"unsupported array dtype {item.dtype}; pass uint8 pixels (0-255).")
        if item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (3, 4)):
            if min(item.shape[:2]) == 0:
                raise ValueError(f"empty image array of shape {item.shape}.")
            image = Image.fromarray(item)
        else:
            raise ValueError(f"unsupported array shape {item.shape}; use HxW, HxWx3 or HxWx4.")
    elif isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file.")
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: empty (zero-byte) image file.")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
            raise ValueError(f"{path}: not a readable image ({error}).") from None
    elif isinstance(item, (bytes, bytearray)):
        if not item:
            raise ValueError("empty image bytes.")
        try:
            image = Image.open(io.BytesIO(item))
            image.load()
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
            raise ValueError(f"image bytes are not a readable image ({error}).") from None
    else:
        raise ValueError(f"unsupported image type {type(item).__name__}; pass a PIL image, uint8 array, path or bytes.")
    return image.convert("RGB") if image.mode != "RGB" else image


def image_hash(image: Image.Image) -> str:
    """Content hash of the decoded RGB pixels: identical images hash alike whatever their source."""
    digest = hashlib.sha256(f"{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class CaptionCache:
    """An append-only JSONL cache of captions that survives a crash mid-write.

    Each entry is one line written with a single ``write`` and flushed to disk. On open, a torn
    last line (from a crash) is cut off, so the file is always valid JSONL.

    Example:
        >>> cache = CaptionCache("/tmp/captions.jsonl")  # doctest: +SKIP
        >>> cache.put("key", "お題", image_hash="ab…")  # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, str] = {}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good_end = raw.rfind(b"\n") + 1
        for line in raw[:good_end].splitlines():
            try:
                record = json.loads(line)
                self.entries[record["key"]] = record["caption"]
            except (ValueError, KeyError, TypeError):
                continue  # a line damaged some other way is skipped, never trusted
        if good_end != len(raw):
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, caption: str, **fields: Any) -> None:
        self.entries[key] = caption
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "caption": caption, **fields}, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def __len__(self) -> int:
        return len(self.entries)


class QwenCaptionClient:
    """Caption images into 大喜利-style Japanese お題 with a Qwen2.5-VL checkpoint.

    Example:
        >>> client = QwenCaptionClient(batch_size=8, cache_path="captions.jsonl")  # doctest: +SKIP
        >>> client.run(["cat.jpg", "dog.png"])  # doctest: +SKIP
        ['猫が急に敬語を使い始めた。何があった？', '…']
    """

    def __init__(
        self,
        model_name: str | Path = DEFAULT_CAPTION_MODEL,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        *,
        dtype: str | torch.dtype | None = None,
        prompt: str = DEFAULT_PROMPT,
        max_new_tokens: int = 128,
        min_pixels: int = 256 * 28 * 28,
        max_pixels: int = 1280 * 28 * 28,
        cache_path: str | Path | None = None,
    ) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if not prompt.strip():
            raise ValueError("prompt must not be empty.")
        self.model_name = str(model_name)
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, cpu_bf16=False)  # bf16 captions were not measured on CPU
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if IMAGE_PAD not in self.tokenizer.get_vocab():
            raise ValueError(f"{self.model_name}: tokenizer has no {IMAGE_PAD} token; is this a Qwen2.5-VL checkpoint?")
        self.image_processor = AutoImageProcessor.from_pretrained(
            self.model_name, backend="pil", min_pixels=min_pixels, max_pixels=max_pixels
        )
        self.model = AutoModelForImageTextToText.from_pretrained(self.model_name, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.cache = CaptionCache(cache_path) if cache_path else None
        self._template = self._chat_text()
        identity = Path(self.model_name).resolve() if Path(self.model_name).exists() else self.model_name
        self._key_prefix = f"{identity}|{prompt}|{max_new_tokens}|{min_pixels}|{max_pixels}|"

    def _chat_text(self) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if text.count(IMAGE_PAD) != 1:
            raise ValueError(f"{self.model_name}: the chat template must render one {IMAGE_PAD} per image.")
        return text

    def cache_key(self, content_hash: str) -> str:
        """The cache key of an image under this model, prompt and generation settings."""
        return hashlib.sha256((self._key_prefix + content_hash).encode()).hexdigest()

    def _prepare(self, image: Image.Image, digest: str) -> _Prepared:
        """Run the image processor on one image (so a bad one fails alone, e.g. an extreme aspect ratio)."""
        vision = self.image_processor(images=[image], return_tensors="pt")
        return _Prepared(digest, vision["pixel_values"], vision["image_grid_thw"])

    @torch.inference_mode()
    def _generate(self, items: list[_Prepared]) -> list[str]:
        grid = torch.cat([item.grid for item in items])
        merge = self.image_processor.merge_size**2
        texts = [self._template.replace(IMAGE_PAD, IMAGE_PAD * int(g.prod() // merge)) for g in grid]
        inputs = self.tokenizer(texts, padding=True, return_tensors="pt")
        output = self.model.generate(
            input_ids=inputs["input_ids"].to(self.device),
            attention_mask=inputs["attention_mask"].to(self.device),
            pixel_values=torch.cat([item.pixel_values for item in items]).to(self.device, self.dtype),
            image_grid_thw=grid.to(self.device),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def caption(
        self, images: Iterable[ImageInput], *, show_progress_bar: bool | None = None, chunk_size: int | None = None
    ) -> list[CaptionResult]:
        """Caption every image; one :class:`CaptionResult` per input, in input order.

        Images are read, decoded, captioned and cached ``chunk_size`` at a time (default: 8
        batches), so memory stays flat however long ``images`` is; it may be a generator. Any
        failure of one image (unreadable, a decompression bomb, an aspect ratio the model cannot
        take) becomes that item's error result.
        """
        chunk_size = chunk_size or self.batch_size * 8
        total = len(images) if isinstance(images, Sequence) else None
        if show_progress_bar is None:
            show_progress_bar = total is not None and total >= 64
        results: list[CaptionResult] = []
        done: dict[str, CaptionResult] = {}  # captions made in this call, by image hash
        from tqdm.auto import tqdm

        with tqdm(total=total, desc="Captioning", unit="image", disable=not show_progress_bar) as bar:
            for chunk in _chunks(iter(images), chunk_size):
                results.extend(self._caption_chunk(chunk, done))
                bar.update(len(chunk))
        return results

    def _caption_chunk(self, images: list[ImageInput], done: dict[str, CaptionResult]) -> list[CaptionResult]:
        results: list[CaptionResult | None] = [None] * len(images)
        pending: dict[str, tuple[_Prepared, list[int]]] = {}
        for index, item in enumerate(images):
            try:
                image = load_image(item)
                digest = image_hash(image)
            except Exception as error:  # one image's failure, whatever its kind, is that item's result
                results[index] = CaptionResult(None, error=_describe(error))
                continue
            cached = self.cache.get(self.cache_key(digest)) if self.cache else None
            if cached is not None:
                results[index] = CaptionResult(cached, image_hash=digest, cached=True)
            elif digest in done:
                results[index] = done[digest]
            elif digest in pending:
                pending[digest][1].append(index)
            else:
                try:
                    pending[digest] = (self._prepare(image, digest), [index])
                except Exception as error:
                    results[index] = done[digest] = CaptionResult(None, error=_describe(error), image_hash=digest)
        unique = list(pending.values())
        if unique:

            def forward(batch: list[int]) -> list[str]:
                captions = self._generate([unique[i][0] for i in batch])
                for i, caption in zip(batch, captions):
                    if caption and self.cache is not None:
                        digest = unique[i][0].digest
                        self.cache.put(self.cache_key(digest), caption, image_hash=digest, model=self.model_name)
                return captions

            captions = run_batched([item.tokens for item, _ in unique], forward, batch_size=self.batch_size,
                                   device=self.device, show_progress_bar=False)  # fmt: skip
            for (item, indices), caption in zip(unique, captions):
                result = (
                    CaptionResult(caption, image_hash=item.digest)
                    if caption
                    else CaptionResult(None, error="the model produced an empty caption", image_hash=item.digest)
                )
                done[item.digest] = result
                for index in indices:
                    results[index] = result
        return results  # type: ignore[return-value]

    def run(self, images: Iterable[ImageInput], *, on_error: str = "raise", show_progress_bar: bool | None = None) -> list[Any]:
        """Caption images; return the captions in input order.

        Every good image is captioned (and cached) even when some fail. Then, with
        ``on_error="raise"`` a :class:`CaptionError` lists the failed items (its ``results`` keep
        all outcomes); with ``on_error="none"`` failed items come back as ``None``.
        """
        if on_error not in ("raise", "none"):
            raise ValueError(f"on_error must be 'raise' or 'none', got {on_error!r}.")
        results = self.caption(images, show_progress_bar=show_progress_bar)
        if on_error == "raise" and any(not r.ok for r in results):
            raise CaptionError(results)
        return [r.caption for r in results]


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(islice(items, size)):
        yield chunk


def _describe(error: Exception) -> str:
    return str(error) if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {error}"
