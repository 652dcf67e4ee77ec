"""Export a trained LoRA adapter as a standalone model folder.

The adapter is merged into the base weights, so the folder loads with plain
``AutoModelForSequenceClassification`` and with ``sentence_transformers.CrossEncoder`` and gives
the same scores as jace: the sigmoid it was trained with is recorded in ``config.json``
(``sentence_transformers.activation_fn``), and the target scaler is kept beside it.
"""

from __future__ import annotations

from pathlib import Path

from jace.atomic import atomic_directory
from jace.scaling import TargetScaler

SIGMOID = "torch.nn.modules.activation.Sigmoid"


def export_merged_model(
    adapter_dir: str | Path, output_dir: str | Path, *, device: str | None = "cpu", overwrite: bool = False
) -> Path:
    """Merge ``adapter_dir`` (a ``…/final`` folder from training) into its base and save it to ``output_dir``.

    ``output_dir`` may exist: its other files are kept. If it holds a different model, the export
    is refused unless ``overwrite=True``.

    Example:
        >>> export_merged_model("runs/humor/final", "runs/humor/merged")  # doctest: +SKIP
        >>> from sentence_transformers import CrossEncoder  # doctest: +SKIP
        >>> CrossEncoder("runs/humor/merged").predict([("お題", "回答")])  # doctest: +SKIP
    """
    import torch

    from jace.cross_encoder import ADAPTER_CONFIG
    from jace.scoring import RerankerCrossEncoderClient

    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise NotADirectoryError(f"{output_dir} is a file; a model is saved into a folder. Choose another path.")
    if not (Path(adapter_dir) / ADAPTER_CONFIG).is_file() and not (Path(adapter_dir) / "config.json").is_file():
        raise FileNotFoundError(
            f"{adapter_dir}: no {ADAPTER_CONFIG} or config.json; export takes the folder a training run wrote (…/final)."
        )
    client = RerankerCrossEncoderClient(adapter_dir, device=device, dtype=torch.float32)
    model = client.model
    model.config.sentence_transformers = {"activation_fn": SIGMOID}
    output_dir = Path(output_dir)
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        client.tokenizer.save_pretrained(tmp)
        scaler = TargetScaler.load(adapter_dir)
        if scaler is not None:
            scaler.save(tmp)
    return output_dir
