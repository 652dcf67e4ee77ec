"""The seed project's LoRA recipe, re-implemented from its README as the benchmark peer.

Seed behaviour kept on purpose: targets shifted by the training minimum (not bounded), every
pair padded to 512 tokens, MSE on the raw logit (SigmoidRegressionTrainer), same LoRA config.
"""

from __future__ import annotations

import torch
from datasets import Dataset
from peft import LoraConfig, TaskType, get_peft_model
from transformers import Trainer, TrainingArguments

from jace.cross_encoder import load_sequence_regressor


class SeedSigmoidRegressionTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.get("logits")
        loss = torch.nn.MSELoss()(logits.squeeze(), labels.to(logits.dtype).squeeze())
        return (loss, outputs) if return_outputs else loss


def seed_dataset(tokenizer, firsts, seconds, targets) -> Dataset:
    encoded = tokenizer(list(firsts), list(seconds), padding="max_length", truncation=True, max_length=512)
    return Dataset.from_dict({**encoded, "labels": [float(t) for t in targets]})


def train_seed(base: str, tokenizer, firsts, seconds, scores, output_dir: str, *, learning_rate: float,
               batch_size: int = 16, epochs: float = 1.0, max_steps: int = -1, callbacks=None):  # fmt: skip
    """Train the seed's way; returns (peft model, train metrics)."""
    minimum = min(scores)
    data = seed_dataset(tokenizer, firsts, seconds, [s - minimum for s in scores])
    model = load_sequence_regressor(base)
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                      target_modules=["query", "key", "value", "dense"])  # fmt: skip
    model = get_peft_model(model, lora)
    args = TrainingArguments(
        output_dir=output_dir, learning_rate=learning_rate, per_device_train_batch_size=batch_size,
        num_train_epochs=epochs, max_steps=max_steps, max_grad_norm=1.0, save_strategy="no",
        report_to="none", use_cpu=True, logging_steps=50, seed=42,
    )  # fmt: skip
    trainer = SeedSigmoidRegressionTrainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
    output = trainer.train()
    return model.eval(), output.metrics
