"""``jace prune``, ``jace train-pruner``, ``jace build-pruning-data`` and ``jace evaluate-pruner``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from jace.cli import DeviceOption, DtypeOption, app
from jace.cli.config_options import config_options
from jace.config import DEFAULT_RERANKER, PruningTrainingConfig

KeepTopContextOption = typer.Option(
    None, "--keep-top-context/--no-keep-top-context",
    help="Keep the best sentence of each query's top-ranked context even when none passes the threshold; "
    "default: the model's saved setting (set by evaluate-pruner --save-threshold).",
)  # fmt: skip


@app.command(
    "prune",
    epilog="Input rows: {\"query\": …, \"context\": \"…\"} or {\"query\": …, \"contexts\": [\"…\", …]}.\n\n"
    "Examples:\n\n  jace prune --model runs/pruner/final in.jsonl out.jsonl\n\n"
    "  jace prune --model runs/pruner/final in.jsonl out.jsonl --threshold 0.5 --batch-size 32\n\n"
    "  jace prune --model runs/pruner/final in.jsonl out.jsonl --dtype int8   # quantized CPU path",
)
def prune_command(
    input_path: Path = typer.Argument(..., help="JSONL with query and context(s) per line."),
    output_path: Path = typer.Argument(..., help="JSONL: each input row plus its pruning results."),
    model: str = typer.Option(..., "--model", help="PruningEncoder folder or hub id."),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="Keep a sentence when its mean keep-probability passes this (0..1); default: the model's saved threshold."
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Windows per forward pass."),
    chunk_size: int = typer.Option(256, "--chunk-size", min=1, help="Rows read and processed at a time."),
    keep_top_context: Optional[bool] = KeepTopContextOption,
    device: Optional[str] = DeviceOption,
    dtype: Optional[str] = DtypeOption,
) -> None:
    """Prune contexts by query (and rerank them) for every row of a JSONL file."""
    from tqdm.auto import tqdm

    from jace.atomic import atomic_file
    from jace.data import DataValidationError, iter_jsonl
    from jace.pruning.encoder import PruningEncoder

    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {threshold}.")
    rows = iter_jsonl(input_path)
    encoder = PruningEncoder.from_pretrained(model, device=device, dtype=dtype)
    written = 0
    with atomic_file(output_path, encoding="utf-8") as sink, tqdm(
        desc="Pruning rows", unit="row"
    ) as bar:
        chunk: list[dict] = []

        def flush() -> None:
            nonlocal written
            items = [(row["query"], row["context"] if "context" in row else row["contexts"]) for row in chunk]
            answers = encoder.prune_batch(items, threshold=threshold, batch_size=batch_size, show_progress_bar=False,
                                          keep_top_context=keep_top_context)  # fmt: skip
            for row, results in zip(chunk, answers):
                row["results"] = [{k: v for k, v in r.to_dict().items() if k not in ("query", "context")} for r in results]
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += len(chunk)
            bar.update(len(chunk))
            chunk.clear()

        for number, row in rows:
            if "query" not in row or ("context" not in row and "contexts" not in row):
                raise DataValidationError(f"{input_path} line {number}: needs 'query' and 'context' or 'contexts'.")
            chunk.append(row)
            if len(chunk) >= chunk_size:
                flush()
        if chunk:
            flush()
    typer.echo(f"wrote {written} rows to {output_path}")


@app.command(
    "build-pruning-data",
    epilog="Examples:\n\n  jace build-pruning-data jsquad_valid.json data/pruning_train.jsonl\n\n"
    "  jace build-pruning-data jsquad_valid.json data/train.jsonl --holdout data/heldout.jsonl --holdout-fraction 0.2\n\n"
    "  jace build-pruning-data jsquad_valid.json data/train.jsonl --holdout data/heldout.jsonl --teacher runs/ja-reranker/final"
    "   # + teacher_scores for --ranking-loss mse\n\n"
    "  jace build-pruning-data jsquad_valid.json data/train.jsonl --holdout data/heldout.jsonl --negatives 3 --negative-selection bm25"
    "   # hard negatives",
)
def build_pruning_data(
    squad_path: Path = typer.Argument(..., help="SQuAD-format JSON (e.g. JSQuAD)."),
    output: Path = typer.Argument(..., help="JSONL of pruning rows (the training split when --holdout is given)."),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="Also write a held-out split, by article, here."),
    holdout_fraction: float = typer.Option(0.2, "--holdout-fraction", help="Fraction of articles held out."),
    negatives: int = typer.Option(4, "--negatives", min=0, help="Other paragraphs of the same article per query."),
    negative_selection: str = typer.Option(
        "random", "--negative-selection",
        help="How the negatives are picked among the article's other paragraphs: random, or bm25 (the hard "
        "negatives: those BM25 over MeCab tokens ranks highest for the question).",
    ),  # fmt: skip
    seed: int = typer.Option(42, "--seed", help="Seed for negative sampling and the split."),
    teacher: Optional[str] = typer.Option(
        None, "--teacher", help="Reranker that scores the training rows' texts into teacher_scores (for train-pruner --ranking-loss mse)."
    ),
    teacher_max_length: int = typer.Option(512, "--teacher-max-length", min=8, help="Token limit of the teacher's pairs."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Teacher batch size."),
    device: Optional[str] = DeviceOption,
    dtype: Optional[str] = DtypeOption,
) -> None:
    """Turn SQuAD-format QA data into pruning rows: answer sentences relevant, other paragraphs negatives."""
    from jace.pruning.data import NEGATIVE_SELECTIONS, add_teacher_scores, build_from_squad, split_by_article, write_rows

    if not squad_path.is_file():
        raise FileNotFoundError(f"{squad_path}: no such file.")
    if negative_selection not in NEGATIVE_SELECTIONS:
        raise typer.BadParameter(f"{negative_selection!r}: use one of {', '.join(NEGATIVE_SELECTIONS)}.", param_hint="--negative-selection")
    pairs = list(build_from_squad(squad_path, negatives=negatives, seed=seed, negative_selection=negative_selection))
    client = None
    if teacher is not None:
        from jace.scoring import RerankerCrossEncoderClient

        client = RerankerCrossEncoderClient(teacher, device=device, dtype=dtype, max_length=teacher_max_length)
    if holdout is None:
        rows = [row for _, row in pairs]
        write_rows(add_teacher_scores(rows, client, batch_size=batch_size) if client else rows, output)
        typer.echo(f"wrote {len(pairs)} rows to {output}")
        return
    train, held = split_by_article(pairs, holdout_fraction, seed)
    if client is not None:  # only the training split: the held-out rows are for evaluation
        train = add_teacher_scores(list(train), client, batch_size=batch_size)
    write_rows(train, output)
    write_rows(held, holdout)
    typer.echo(f"wrote {len(train)} training rows to {output} and {len(held)} held-out rows to {holdout}")


@app.command(
    "train-pruner",
    epilog="Examples:\n\n  jace train-pruner --train data/train.jsonl --output-dir runs/pruner\n\n"
    "  jace train-pruner --train data/train.jsonl --backbone path/to/encoder --mode pruning_only --epochs 2",
)
@config_options(PruningTrainingConfig)
def train_pruner(
    train: Path = typer.Option(..., "--train", help="JSONL of pruning rows (see build-pruning-data)."),
    output_dir: Path = typer.Option(Path("runs/pruner"), "--output-dir", help="Run folder; the model goes to OUTPUT_DIR/final."),
    backbone: str = typer.Option(DEFAULT_RERANKER, "--backbone", help="Backbone (reranker or encoder): hub id or folder."),
    mode: str = typer.Option("reranking_pruning", "--mode", help="reranking_pruning or pruning_only."),
    device: Optional[str] = DeviceOption,
    *,
    config: PruningTrainingConfig,
) -> None:
    """Train a PruningEncoder on a backbone (Provence-style loss)."""
    from jace.pruning.data import read_rows
    from jace.pruning.encoder import PruningEncoder
    from jace.pruning.training import train_pruning_encoder

    rows = read_rows(train)
    encoder = PruningEncoder.from_backbone(backbone, mode=mode, device=device, max_length=config.max_length)
    final = train_pruning_encoder(encoder, rows, output_dir, config=config, training_data=f"{train} ({len(rows)} query rows)")
    typer.echo(f"model saved to {final}")


@app.command(
    "evaluate-pruner",
    epilog="Examples:\n\n  jace evaluate-pruner --model runs/pruner/final --data data/heldout.jsonl --report r.json --plot sweep.png\n\n"
    "  jace evaluate-pruner --model runs/pruner/final --data data/heldout.jsonl --target-has-answer 0.95 --save-threshold --baselines\n\n"
    "  jace evaluate-pruner --model runs/pruner/final --data data/heldout.jsonl --reranker runs/ja-reranker/final",
)
def evaluate_pruner(
    model: str = typer.Option(..., "--model", help="PruningEncoder folder."),
    data: Path = typer.Option(..., "--data", help="JSONL of pruning rows (held out)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the metrics as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Save the threshold sweep as PNG."),
    target_has_answer: Optional[float] = typer.Option(
        None, "--target-has-answer", help="Also find the highest threshold whose has-answer rate reaches this (e.g. 0.95)."
    ),
    save_threshold: bool = typer.Option(False, "--save-threshold", help="Write that threshold into the model's config.json as its default."),
    baselines: bool = typer.Option(
        False, "--baselines", help="Also report, on the same rows and under 'baselines' in the report, a random pruner (random "
        "keep probabilities and rerank scores; threshold 0 = keep all) and the label oracle (keeps exactly the labelled "
        "sentences: the most compression any pruner can reach while keeping them)."
    ),
    reranker: Optional[str] = typer.Option(
        None, "--reranker", help="Also report the MRR and nDCG of this plain reranker (hub id or folder; e.g. the one the pruner "
        "was trained from) on the same rows, through the pruner's windows and precision, under 'baselines' in the report."
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    keep_top_context: Optional[bool] = KeepTopContextOption,
    device: Optional[str] = DeviceOption,
    dtype: Optional[str] = DtypeOption,
) -> None:
    """Has-answer rate, compression, sentence F2 over a threshold sweep, and MRR/nDCG for reranking."""
    from jace.metrics import save_report
    from jace.pruning.data import read_rows
    from jace.pruning.encoder import PruningEncoder
    from jace.pruning.evaluation import (
        DEFAULT_THRESHOLDS, evaluate_rows, format_sweep, label_oracle, plot_sweep, random_baseline, reranker_baseline, save_default_threshold,
    )  # fmt: skip

    if target_has_answer is not None and not 0.0 < target_has_answer <= 1.0:
        raise ValueError(f"--target-has-answer must be in (0, 1], got {target_has_answer}.")
    if save_threshold and target_has_answer is None:
        raise ValueError("--save-threshold needs --target-has-answer (the rate the saved threshold must reach).")
    encoder = PruningEncoder.from_pretrained(model, device=device, dtype=dtype)
    rows = read_rows(data)
    thresholds = sorted({*DEFAULT_THRESHOLDS, encoder.default_threshold})  # the sweep always shows the model's own default
    result = evaluate_rows(encoder, rows, thresholds, batch_size=batch_size, target_has_answer=target_has_answer,
                           keep_top_context=keep_top_context)  # fmt: skip
    result["default_threshold"] = encoder.default_threshold
    keep_top_context = result["keep_top_context"]  # the flag, or the model's saved setting
    typer.echo(format_sweep(result))
    if baselines:
        result["baselines"] = {
            "random": random_baseline(rows, thresholds, target_has_answer=target_has_answer, keep_top_context=keep_top_context),
            "label_oracle": label_oracle(rows),
        }
        typer.echo("\nrandom pruner (baseline, same rows):\n" + format_sweep(result["baselines"]["random"]))
        oracle = result["baselines"]["label_oracle"]["sweep"][0]
        typer.echo(
            f"\nlabel oracle (keeps exactly the labelled sentences): has-answer {oracle['has_answer_rate']:.3f}, "
            f"compression {oracle['compression_relevant']:.3f} / {oracle['compression_irrelevant']:.3f}"
        )
    if reranker:
        ranking = result.setdefault("baselines", {})["reranker"] = reranker_baseline(reranker, rows, like=encoder, batch_size=batch_size)
        typer.echo("\n" + "  ".join(f"{key} {ranking[key]:.3f} (pruner {result[key]:.3f})" for key in ranking
                                     if key.startswith(("mrr", "ndcg")) and ranking[key] is not None)
                   + f"  <- reranker {reranker}, same rows, windows and precision")  # fmt: skip
    if report:
        save_report(result, report)
    if plot:
        plot_sweep(result, plot)
    if save_threshold:
        folder = save_default_threshold(encoder, model, result, str(data))
        typer.echo(f"saved default threshold {result['threshold_for_target']['threshold']:g} (keep_top_context "
                   f"{'on' if keep_top_context else 'off'}) and the held-out metrics to {folder}")  # fmt: skip
