"""The ``transformers.Trainer`` base that jace's trainers share.

* Training batches are length-grouped (rows of similar length together, groups shuffled), which
  removes most padding. Evaluation stays sequential: transformers 5 also length-groups the
  *evaluation* sampler when ``train_sampling_strategy="group_by_length"``, which reorders
  predictions; jace never sets that flag and groups only the training sampler itself.
* ``compute_loss`` in subclasses returns a mean over the micro-batch, so the Trainer divides it by
  the gradient-accumulation steps (``loss_is_scaled_for_ga = False``): 4 steps of 4 rows make the
  same update as one step of 16 rows. (Left to ``None``, transformers 5 skips that division for
  models whose ``forward`` takes ``**kwargs``, multiplying the gradient by the step count.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

logger = logging.getLogger(__name__)


class LengthGroupedTrainer(Trainer):
    """A Trainer with length-grouped training batches, sequential evaluation and per-batch-mean losses.

    Row lengths come from the dataset's ``lengths`` attribute, or from its ``input_ids`` column
    (``datasets.Dataset``); other datasets are sampled at random.

    Example:
        >>> trainer = LengthGroupedTrainer(model=model, args=args, train_dataset=data)  # doctest: +SKIP
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bind_time_budget(self)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = _lengths(dataset)
        if lengths is None:
            return super()._get_train_sampler(train_dataset)
        generator = torch.Generator().manual_seed(self.args.data_seed if self.args.data_seed is not None else self.args.seed)
        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    lengths=lengths, generator=generator)  # fmt: skip


def _lengths(dataset) -> Sequence[int] | None:
    lengths = getattr(dataset, "lengths", None)
    if lengths is not None:
        return list(lengths)
    names = getattr(dataset, "column_names", None)
    if names is not None and "input_ids" in names:
        return [len(ids) for ids in dataset["input_ids"]]
    return None


class TimeBudget(TrainerCallback):
    """Stop training once ``minutes`` of wall-clock time are spent; the epoch in progress is still evaluated and saved.

    At a tenth of the budget, and again at 30% and 60%, the steps that fit are estimated from the
    pace since the last estimate (the first step, with its one-off start-up cost, is left out). If
    fewer than planned fit, the learning-rate schedule is compressed in time to end at that step
    (warm-up and decay keep their shape; a later estimate re-aims the rest of the schedule without a
    jump), and training stops there. A budget-stopped run thus ends with the learning rate decayed,
    as a run of that length would, not cut off mid-schedule.

    Example:
        >>> Trainer(..., callbacks=[TimeBudget(30)])  # doctest: +SKIP
    """

    #: Shares of the budget at which the steps that fit are (re-)estimated.
    FIT_AT = (0.1, 0.3, 0.6)

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60
        self.start = time.perf_counter()
        self.fitted_steps: int | None = None
        self.last_fit: tuple[int, float] | None = None  # (global step, seconds since the start) of the last estimate
        self.fits_done = 0
        self.schedules: list[_Compressed] = []
        self.trainer: Trainer | None = None  # set by bind_time_budget: callbacks are not handed the scheduler

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: D102
        self.start = time.perf_counter()
        self.fitted_steps, self.last_fit, self.fits_done, self.schedules = None, None, 0, []

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):  # noqa: D102
        elapsed = time.perf_counter() - self.start
        step = state.global_step
        if self.last_fit is None:  # the first step's end: the pace is measured from here
            self.last_fit = (step, elapsed)
        if elapsed > self.seconds or (self.fitted_steps is not None and step >= self.fitted_steps):
            control.should_training_stop = True
        elif (
            self.fits_done < len(self.FIT_AT) and elapsed >= self.FIT_AT[self.fits_done] * self.seconds and step > self.last_fit[0]
        ):
            self.fits_done += 1
            pace = (elapsed - self.last_fit[1]) / (step - self.last_fit[0])  # seconds a step, recently
            self.last_fit = (step, elapsed)
            fit = min(state.max_steps, max(step + 1, step + int((self.seconds - elapsed) / max(pace, 1e-9))))
            # Stop early at ``fit`` only when the schedule is compressed to end there; otherwise the
            # time limit alone stops training (no scheduler to compress: run until the budget is spent).
            self.fitted_steps = state.max_steps
            if fit < state.max_steps or self.schedules:
                scheduler = lr_scheduler or getattr(self.trainer, "lr_scheduler", None)
                scheduler = getattr(scheduler, "scheduler", scheduler)  # accelerate may wrap it
                if not self.schedules and hasattr(scheduler, "lr_lambdas"):
                    self.schedules = [_Compressed(f, state.max_steps) for f in scheduler.lr_lambdas]
                    scheduler.lr_lambdas = list(self.schedules)
                for schedule in self.schedules:
                    schedule.aim(step, fit)
                if self.schedules:
                    self.fitted_steps = fit
                    logger.info("time budget: %d of %d steps fit; learning-rate schedule compressed to end there", fit, state.max_steps)
        return control


class _Compressed:
    """``schedule`` (a LambdaLR multiplier of the step) run faster so that it ends at a chosen step, then held.

    ``aim(step, end)`` re-aims it from ``step`` on: the position reached at ``step`` is kept (no jump
    in the learning rate) and the rest of the schedule is spread over the steps up to ``end``.
    """

    def __init__(self, schedule, total: int) -> None:
        self.schedule, self.total = schedule, total
        self.anchor_step, self.anchor_position, self.stretch = 0, 0.0, 1.0

    def position(self, step: int) -> float:
        return self.anchor_position + (step - self.anchor_step) * self.stretch

    def aim(self, step: int, end: int) -> None:
        position = self.position(step)
        self.anchor_step, self.anchor_position = step, position
        self.stretch = (self.total - position) / max(end - step, 1)

    def __call__(self, step: int) -> float:
        return self.schedule(min(round(self.position(step)), self.total))


def bind_time_budget(trainer: Trainer) -> Trainer:
    """Let ``trainer``'s :class:`TimeBudget` reach its learning-rate scheduler (transformers 5 hands
    callbacks ``lr_scheduler=None``). Every jace trainer calls it once built.

    Example:
        >>> trainer = bind_time_budget(CrossEncoderTrainer(..., callbacks=with_budget(None, 30)))  # doctest: +SKIP
    """
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TimeBudget):
            callback.trainer = trainer
    return trainer


def run_training(trainer: Trainer) -> Any:
    """``trainer.train()``, then the trained model without the mixed-precision wrapper accelerate put on it.

    With bf16/fp16 training, accelerate wraps the model's ``forward`` in autocast and leaves it there,
    so a model scored in memory after training ran in half precision, unlike the same model saved and
    reloaded. Every jace trainer trains through this, so the model it hands back (or restores after a
    failure) scores in its own dtype.

    Example:
        >>> output = run_training(trainer)  # doctest: +SKIP
    """
    try:
        return trainer.train()
    finally:
        trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)  # in place: restores the forward


def with_budget(callbacks: Sequence[TrainerCallback] | None, minutes: float | None) -> list[TrainerCallback]:
    """``callbacks`` plus a :class:`TimeBudget` when ``minutes`` is set."""
    return [*(callbacks or []), *([TimeBudget(minutes)] if minutes else [])]


def common_arguments(config: Any, output_dir: str | Path, device: torch.device) -> dict[str, Any]:
    """The ``TrainingArguments`` every jace trainer shares, from a training config's common fields.

    Example:
        >>> TrainingArguments(**common_arguments(config, "runs/x", torch.device("cpu")), save_strategy="no")  # doctest: +SKIP
    """
    from jace.device import mixed_precision_flags

    return {
        "output_dir": str(Path(output_dir) / "checkpoints"),
        "learning_rate": getattr(config, "lr", None) or config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "warmup_steps": config.warmup_ratio,  # a float below 1 is a fraction of the steps
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "logging_steps": config.logging_steps,
        "report_to": "none",
        "seed": config.seed,
        "use_cpu": device.type == "cpu",
        "dataloader_num_workers": 0,
        **mixed_precision_flags(device),
    }


def freeze_embeddings(model: torch.nn.Module, setting: bool | None, device: torch.device) -> bool:
    """Freeze (or not) the word-embedding matrix; ``None`` freezes on CPU only. Returns whether it is frozen.

    A multilingual backbone's 250k-row embedding matrix is most of its parameters and of the
    optimizer's state; on CPU, training it costs more than it gives (see docs/benchmarks.md).
    """
    frozen = setting if setting is not None else device.type == "cpu"
    model.get_input_embeddings().weight.requires_grad_(not frozen)
    return frozen


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer blocks of ``model``: its ``ModuleList`` of ``config.num_hidden_layers`` modules."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and count and len(module) == count:
            return module
    raise ValueError(
        f"found no stack of num_hidden_layers={count} encoder layers in {type(model).__name__}, so freeze_layers cannot "
        "apply to it; train it with freeze_layers=0."
    )


def check_freeze_layers(model: torch.nn.Module, count: int) -> torch.nn.ModuleList:
    """The encoder layers of ``model``, after checking that ``freeze_layers=count`` leaves one to train."""
    layers = encoder_layers(model)
    if count >= len(layers):
        raise ValueError(f"freeze_layers={count} leaves no encoder layer to train: the model has {len(layers)}; use at most {len(layers) - 1}.")
    return layers


def freeze_bottom_layers(model: torch.nn.Module, count: int) -> list[torch.nn.Parameter]:
    """Freeze the embeddings and the first ``count`` encoder layers; returns the parameters it froze (to restore later).

    Nothing below layer ``count`` then needs a gradient, so autograd stops there: the backward pass,
    about two thirds of a training step, shrinks by the frozen share of the layers.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64))
        >>> frozen = freeze_bottom_layers(model, 2)
        >>> [any(p.requires_grad for p in layer.parameters()) for layer in model.encoder.layer]
        [False, False, True]
    """
    if count == 0:
        return []
    layers = check_freeze_layers(model, count)
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    if embeddings is None:  # no embeddings block (word, position, LayerNorm): freeze the word embeddings alone
        embeddings = model.get_input_embeddings()
    frozen = [p for module in (embeddings, *layers[:count]) for p in module.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    return frozen
