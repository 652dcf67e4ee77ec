# Standalone modeling file for PruningEncoder models (query-dependent context pruning + reranking).
# It imports only the standard library, torch and transformers, so a saved folder loads with
# AutoModel* classes and trust_remote_code=True where jace is not installed.
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

MODES = ("reranking_pruning", "pruning_only")
SUBFOLDERS = {"reranking_pruning": "ranking_model", "pruning_only": "encoder_model"}
HEAD_FOLDER = "pruning_head"
WEIGHTS = "model.safetensors"


class PruningEncoderConfig(PretrainedConfig):
    """Config of a PruningEncoder: the mode, the full backbone config (embedded), and the pruning head."""

    model_type = "pruning_encoder"

    def __init__(self, mode="reranking_pruning", backbone_config=None, head_dropout=0.1, default_threshold=0.1,
                 keep_top_context=False, **kwargs):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if not 0.0 <= default_threshold <= 1.0:
            raise ValueError(f"default_threshold must be in [0, 1], got {default_threshold}.")
        self.mode = mode
        # The keep threshold prune() uses when none is given; `jace evaluate-pruner --save-threshold` sets it.
        self.default_threshold = default_threshold
        # Whether prune() keeps the best sentence of a query's top-ranked context when none passes the threshold.
        self.keep_top_context = bool(keep_top_context)
        if isinstance(backbone_config, PretrainedConfig):
            backbone_config = backbone_config.to_dict()
        self.backbone_config = backbone_config or {}
        self.head_dropout = head_dropout
        if "num_labels" not in kwargs and "id2label" not in kwargs:
            # One rerank logit, or keep/drop per token: what CrossEncoder and pipelines read.
            kwargs["num_labels"] = 1 if mode == "reranking_pruning" else 2
        super().__init__(**kwargs)

    def backbone(self) -> PretrainedConfig:
        data = dict(self.backbone_config)
        if "model_type" not in data:
            raise ValueError("backbone_config has no model_type; the folder's config.json is incomplete.")
        return AutoConfig.for_model(data.pop("model_type"), **data)


@dataclass
class PruningEncoderOutput(ModelOutput):
    """``logits``: rerank logits [B, 1] (sequence classification) or pruning logits [B, T, 2] (token
    classification). ``ranking_logits`` and ``pruning_logits`` are always both present where defined."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    ranking_logits: torch.FloatTensor | None = None
    pruning_logits: torch.FloatTensor | None = None


class PruningHead(nn.Module):
    """Per-token keep/drop classifier on the backbone's last hidden states."""

    def __init__(self, hidden_size, dropout):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, 2)

    def forward(self, hidden_states):
        return self.classifier(self.dropout(hidden_states))


class PruningEncoderPreTrainedModel(PreTrainedModel):
    config_class = PruningEncoderConfig
    base_model_prefix = "pruning_encoder"
    required_mode = None

    def __init__(self, config):
        if self.required_mode is not None and config.mode != self.required_mode:
            raise ValueError(
                f"{type(self).__name__} needs a '{self.required_mode}' PruningEncoder, but this one is "
                f"'{config.mode}'. Load it with "
                + ("AutoModelForSequenceClassification." if config.mode == "reranking_pruning" else "AutoModelForTokenClassification.")
            )
        super().__init__(config)
        backbone = config.backbone()
        if config.mode == "reranking_pruning":
            backbone.num_labels = 1
            self.ranking_model = AutoModelForSequenceClassification.from_config(backbone)
        else:
            self.encoder_model = AutoModel.from_config(backbone)
        self.pruning_head = PruningHead(backbone.hidden_size, config.head_dropout)
        self.post_init()

    @property
    def backbone_model(self):
        return self.ranking_model if self.config.mode == "reranking_pruning" else self.encoder_model

    def _init_weights(self, module):
        if isinstance(module, PruningHead):
            module.classifier.weight.data.normal_(0.0, 0.02)
            module.classifier.bias.data.zero_()

    def _run(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        # Inputs follow the model to its device (the seed's fix for CPU tensors on a GPU model).
        device = next(self.parameters()).device
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        inputs = {k: v.to(device) for k, v in inputs.items() if v is not None}
        for fixed in ("return_dict", "output_hidden_states", "labels"):
            kwargs.pop(fixed, None)
        inputs.update({k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()})
        outputs = self.backbone_model(**inputs, output_hidden_states=True, return_dict=True)
        hidden = outputs.hidden_states[-1]
        ranking = outputs.logits if self.config.mode == "reranking_pruning" else None
        return ranking, self.pruning_head(hidden)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        """Build from the embedded backbone config (no download), then load the sub-folder weights."""
        from safetensors.torch import load_file

        folder = str(pretrained_model_name_or_path)
        if not os.path.isdir(folder):
            from huggingface_hub import snapshot_download

            folder = snapshot_download(folder, token=kwargs.get("token"), revision=kwargs.get("revision"))
        if not isinstance(config, PruningEncoderConfig):
            config = PruningEncoderConfig.from_pretrained(folder)
        sub = SUBFOLDERS[config.mode]
        missing = [p for p in (os.path.join(sub, WEIGHTS), os.path.join(HEAD_FOLDER, WEIGHTS)) if not os.path.isfile(os.path.join(folder, p))]
        if missing:
            raise OSError(f"{folder} is not a complete PruningEncoder folder: missing {missing}.")
        model = cls(config)
        backbone = model.backbone_model
        state = load_file(os.path.join(folder, sub, WEIGHTS))
        result = backbone.load_state_dict(state, strict=False)
        tied = set(getattr(backbone, "_tied_weights_keys", None) or [])
        unexpected = list(result.unexpected_keys)
        missing_keys = [k for k in result.missing_keys if k not in tied and "position_ids" not in k]
        if unexpected or missing_keys:
            raise OSError(f"{folder}/{sub}: weights do not match the backbone (missing {missing_keys[:5]}, unexpected {unexpected[:5]}).")
        model.pruning_head.load_state_dict(load_file(os.path.join(folder, HEAD_FOLDER, WEIGHTS)))
        dtype = kwargs.get("dtype") or kwargs.get("torch_dtype")
        if dtype is not None and dtype != "auto":
            model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        return model.eval()

    def save_pretrained(self, save_directory, **kwargs):
        """Write config.json, pruning_encoder_config.json, the backbone sub-folder and pruning_head/."""
        from safetensors.torch import save_file

        os.makedirs(save_directory, exist_ok=True)
        self.config.save_pretrained(save_directory)
        sub = SUBFOLDERS[self.config.mode]
        self.backbone_model.save_pretrained(os.path.join(save_directory, sub))
        os.makedirs(os.path.join(save_directory, HEAD_FOLDER), exist_ok=True)
        head_state = {k: v.detach().contiguous().cpu() for k, v in self.pruning_head.state_dict().items()}
        save_file(head_state, os.path.join(save_directory, HEAD_FOLDER, WEIGHTS))
        with open(os.path.join(save_directory, HEAD_FOLDER, "config.json"), "w") as handle:
            json.dump({"hidden_size": self.config.backbone().hidden_size, "num_labels": 2, "labels": ["drop", "keep"]}, handle, indent=2)
        with open(os.path.join(save_directory, "pruning_encoder_config.json"), "w") as handle:
            json.dump({"mode": self.config.mode, "backbone_model_type": self.config.backbone_config.get("model_type"),
                       "head_dropout": self.config.head_dropout, "subfolder": sub}, handle, indent=2)  # fmt: skip


class PruningEncoderModel(PruningEncoderPreTrainedModel):
    """AutoModel entry: both outputs, whatever the mode."""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        ranking, pruning = self._run(input_ids, attention_mask, token_type_ids, **kwargs)
        return PruningEncoderOutput(logits=ranking if ranking is not None else pruning, ranking_logits=ranking, pruning_logits=pruning)


class PruningEncoderForSequenceClassification(PruningEncoderPreTrainedModel):
    """reranking_pruning: ``logits`` are the rerank logits [B, 1]; sigmoid gives the score."""

    required_mode = "reranking_pruning"

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        ranking, pruning = self._run(input_ids, attention_mask, token_type_ids, **kwargs)
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(ranking.squeeze(-1).float(), labels.to(ranking.device).float())
        return PruningEncoderOutput(loss=loss, logits=ranking, ranking_logits=ranking, pruning_logits=pruning)


class PruningEncoderForTokenClassification(PruningEncoderPreTrainedModel):
    """pruning_only: ``logits`` are the per-token keep/drop logits [B, T, 2]."""

    required_mode = "pruning_only"

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        _, pruning = self._run(input_ids, attention_mask, token_type_ids, **kwargs)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(pruning.view(-1, 2).float(), labels.to(pruning.device).view(-1), ignore_index=-100)
        return PruningEncoderOutput(loss=loss, logits=pruning, pruning_logits=pruning)
