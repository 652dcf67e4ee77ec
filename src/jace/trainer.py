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

from collections.abc import Sequence

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler


class LengthGroupedTrainer(Trainer):
    """A Trainer with length-grouped training batches, sequential evaluation and per-batch-mean losses.

    Row lengths come from the dataset's ``lengths`` attribute, or from its ``input_ids`` column
    (``datasets.Dataset``); other datasets are sampled at random.

    Example:
        >>> trainer = LengthGroupedTrainer(model=model, args=args, train_dataset=data)  # doctest: +SKIP
    """

    loss_is_scaled_for_ga = False

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
