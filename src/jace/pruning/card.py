"""The generated README.md model card of a saved PruningEncoder folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_model_card(
    folder: Path, mode: str, backbone_type: str, metadata: dict[str, Any], default_threshold: float = 0.1,
    keep_top_context: bool = False,
) -> Path:  # fmt: skip
    """Write README.md: how to load the folder each way, its mode, backbone, threshold, training data and metrics."""
    auto = "AutoModelForSequenceClassification" if mode == "reranking_pruning" else "AutoModelForTokenClassification"
    lines = [
        "---",
        "library_name: transformers",
        "tags: [jace, pruning-encoder, context-pruning, reranker, cross-encoder]",
        "---",
        "# PruningEncoder",
        "",
        "Query-dependent context pruning"
        + (" and reranking in one forward pass." if mode == "reranking_pruning" else " (pruning only)."),
        "",
        f"- mode: `{mode}`",
        f"- backbone: `{metadata.get('backbone', backbone_type)}` (model_type `{backbone_type}`)",
    ]
    lines.append(f"- default threshold: {default_threshold:g} (used by `prune()` when none is given)")
    if keep_top_context:
        lines.append("- keep_top_context: on (the top-ranked context of a query keeps at least its best sentence)")
    if metadata.get("training_data"):
        lines.append(f"- training data: {metadata['training_data']}")
    if metadata.get("metrics"):
        lines += ["", "## Metrics", "", "```json", json.dumps(metadata["metrics"], indent=2, ensure_ascii=False), "```"]
    if metadata.get("evaluation"):
        lines += ["", "## Held-out evaluation (`jace evaluate-pruner`)", "", "```json",
                  json.dumps(metadata["evaluation"], indent=2, ensure_ascii=False), "```"]  # fmt: skip
    lines += [
        "",
        "## Load with plain transformers (no jace needed)",
        "",
        "```python",
        "import torch",
        f"from transformers import AutoTokenizer, {auto}",
        f'model = {auto}.from_pretrained("PATH", trust_remote_code=True)',
        'tokenizer = AutoTokenizer.from_pretrained("PATH", trust_remote_code=True)  # it reads config.json',
        'inputs = tokenizer("query", "passage", return_tensors="pt")',
        "out = model(**inputs)",
    ]
    if mode == "reranking_pruning":
        lines += ["score = torch.sigmoid(out.logits)[0, 0]          # rerank score", "keep = out.pruning_logits.softmax(-1)[0, :, 1]   # per-token keep probability"]
    else:
        lines += ["keep = out.logits.softmax(-1)[0, :, 1]           # per-token keep probability"]
    lines += ["```", "", "## Load with jace", "", "```python", "from jace.pruning import PruningEncoder",
              'encoder = PruningEncoder.from_pretrained("PATH")',
              'result = encoder.prune("query", "context")  # the default threshold above (pass threshold= to override)',
              "result.pruned_context, result.reranking_score, result.compression_rate", "```"]  # fmt: skip
    if mode == "reranking_pruning":
        lines += ["", "## Load with sentence-transformers", "", "```python", "from sentence_transformers import CrossEncoder",
                  'model = CrossEncoder("PATH", trust_remote_code=True)   # or `import jace.pruning` first',
                  'model.predict([("query", "passage")])', "```"]  # fmt: skip
    path = folder / "README.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
