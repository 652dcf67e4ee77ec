import json

import numpy as np
import pandas as pd
from types import SimpleNamespace

import pytest
import torch
from sentence_transformers import CrossEncoder
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

from jace.data import PairColumns
from jace.export import export_merged_model
from jace.scoring import RerankerCrossEncoderClient
from jace.training import LoraTrainingConfig

class Boom(TrainerCallback):
    """Fails the first training step, as a full disk would."""

    def on_step_end(self, args, state, control, **kwargs):
        raise RuntimeError("disk full")


class StepCounter(TrainerCallback):
    """Counts optimizer steps."""

    steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


FAST = LoraTrainingConfig(num_train_epochs=2, learning_rate=5e-3, per_device_train_batch_size=8, logging_steps=1)


@pytest.fixture(scope="module")
def trained(tiny_bert_dir, humor_frame, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-run")
    train, valid = humor_frame.iloc[:32], humor_frame.iloc[32:]
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    head_before = client.model.classifier.weight.detach().clone()
    result = client.train_with_lora(train, valid, out, config=FAST)
    return client, result, valid, head_before


def test_final_folder_holds_adapter_head_tokenizer_scaler_and_summary(trained):
    _, result, _, _ = trained
    files = {p.name for p in result.final_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "target_scaler.json", "training_summary.json"} <= files
    assert any(name.startswith("tokenizer") or name == "vocab.txt" for name in files)
    config = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16 and config["lora_dropout"] == 0.1
    assert "classifier" in config["modules_to_save"]
    summary = json.loads((result.final_dir / "training_summary.json").read_text())
    assert summary["hyperparameters"]["loss"] == "bce"
    assert summary["data"]["train"]["rows"] == 32
    assert summary["target_scaler"] == {"minimum": 0.0, "maximum": 4.0}
    assert "eval_spearman" in summary["metrics"]["eval_best"]


def test_classification_head_is_trained(trained):
    client, _, _, head_before = trained
    head_after = client.model.base_model.model.classifier.modules_to_save["default"].weight
    assert not torch.allclose(head_before, head_after)


def test_reloaded_adapter_gives_same_scores_as_model_in_memory(trained):
    client, result, valid, _ = trained
    pairs = list(zip(valid.odai, valid.response))
    in_memory = client.run(pairs)
    reloaded = RerankerCrossEncoderClient(str(result.final_dir), device="cpu")
    assert reloaded.run(pairs) == pytest.approx(in_memory, abs=1e-5)
    assert reloaded.run(pairs, original_scale=True) == pytest.approx(
        [s * 4.0 for s in in_memory], abs=1e-4
    )


@pytest.mark.parametrize("method", ["lora", "full"])
def test_after_mixed_precision_training_the_model_in_memory_scores_in_its_own_dtype(method, tiny_bert_dir, humor_frame, tmp_path, monkeypatch):
    # bf16 autocast training (the default on CPUs with native bf16, forced here on any CPU): accelerate wraps the
    # model's forward in autocast; left there, the client kept scoring in bf16 after training, unlike the saved model.
    monkeypatch.setenv("JACE_CPU_DTYPE", "bfloat16")
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu", dtype="float32")
    config = LoraTrainingConfig(num_train_epochs=1, per_device_train_batch_size=8, method=method, logging_steps=1)
    result = client.train_with_lora(humor_frame.iloc[:16], None, tmp_path / "run", config=config)
    monkeypatch.setenv("JACE_CPU_DTYPE", "float32")
    pairs = list(zip(humor_frame.odai[16:32], humor_frame.response[16:32]))
    reloaded = RerankerCrossEncoderClient(str(result.final_dir), device="cpu", dtype="float32")
    assert client.run(pairs) == pytest.approx(reloaded.run(pairs), abs=1e-6)


def test_load_lora_adapter_twice_does_not_stack(trained, tiny_bert_dir):
    client, result, valid, _ = trained
    pairs = list(zip(valid.odai, valid.response))
    other = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    other.load_lora_adapter(result.final_dir)
    once = other.run(pairs)
    other.load_lora_adapter(result.final_dir)
    assert other.run(pairs) == pytest.approx(once, abs=1e-6)


def test_merged_export_loads_in_transformers_and_cross_encoder_with_same_scores(trained, tmp_path):
    client, result, valid, _ = trained
    pairs = list(zip(valid.odai, valid.response))
    expected = client.run(pairs)
    merged = export_merged_model(result.final_dir, tmp_path / "merged")
    assert not (merged / "adapter_config.json").exists()
    ce = CrossEncoder(str(merged), device="cpu")
    assert ce.predict(pairs).tolist() == pytest.approx(expected, abs=1e-5)
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    with torch.no_grad():
        logits = model(**tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")).logits
    assert torch.sigmoid(logits).squeeze(-1).tolist() == pytest.approx(expected, abs=1e-5)
    assert (merged / "target_scaler.json").is_file()


def test_training_learns_a_simple_signal(tiny_bert_dir, tmp_path):
    # Score is 4 when the answer mentions 猫, else 0: a tiny model must pick this up.
    rows = []
    for i in range(48):
        cat = i % 2 == 0
        rows.append({"odai": f"お題{i % 6}", "response": ("猫" if cat else "犬") * 8, "score": 4.0 if cat else 0.0})
    frame = pd.DataFrame(rows)
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    config = LoraTrainingConfig(num_train_epochs=8, learning_rate=1e-2, per_device_train_batch_size=8, warmup_ratio=0.0)
    client.train_with_lora(frame, frame, tmp_path, config=config, columns=PairColumns(group=None))
    scores = np.array(client.run(list(zip(frame.odai, frame.response)), original_scale=True))
    assert scores[::2].mean() > scores[1::2].mean() + 1.0


def test_training_with_other_columns_and_no_eval(tiny_mecab_bert_dir, tmp_path):
    frame = pd.DataFrame(
        {"sentence1": ["猫が好き", "犬が好き", "晴れです", "雨です"] * 3, "sentence2": ["猫", "犬", "晴れ", "雨"] * 3, "label": [5.0, 4.0, 1.0, 0.0] * 3}
    )
    columns = PairColumns(first="sentence1", second="sentence2", label="label", group=None)
    client = RerankerCrossEncoderClient(str(tiny_mecab_bert_dir), device="cpu")
    result = client.train_with_lora(frame, None, tmp_path, config=LoraTrainingConfig(max_steps=2), columns=columns)
    assert (result.final_dir / "adapter_model.safetensors").is_file()
    assert not list(tmp_path.glob(".final.tmp-*"))


def test_bad_training_data_is_rejected_with_row_and_column(tiny_bert_dir, humor_frame, tmp_path):
    bad = humor_frame.copy()
    bad.loc[5, "score"] = float("nan")
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    with pytest.raises(ValueError, match=r"row 6.*'score'"):
        client.train_with_lora(bad, None, tmp_path)


def test_invalid_config_values_are_rejected():
    with pytest.raises(ValueError, match="loss"):
        LoraTrainingConfig(loss="hinge")
    with pytest.raises(ValueError):
        LoraTrainingConfig(r=0)


def test_xlmr_backbone_with_dense_classification_head_trains_and_reloads(tiny_xlmr_dir, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(tiny_xlmr_dir), device="cpu")
    result = client.train_with_lora(humor_frame.iloc[:16], None, tmp_path, config=LoraTrainingConfig(max_steps=2))
    pairs = list(zip(humor_frame.odai[:8], humor_frame.response[:8]))
    assert RerankerCrossEncoderClient(str(result.final_dir), device="cpu").run(pairs) == pytest.approx(client.run(pairs), abs=1e-5)


def test_training_on_top_of_an_adapter_is_refused_with_a_way_out(tiny_bert_dir, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    result = client.train_with_lora(humor_frame.iloc[:16], None, tmp_path / "a", config=LoraTrainingConfig(max_steps=1))
    with pytest.raises(ValueError, match="already holds an adapter"):
        client.train_with_lora(humor_frame.iloc[:16], None, tmp_path / "b", config=LoraTrainingConfig(max_steps=1))
    loaded = RerankerCrossEncoderClient(str(result.final_dir), device="cpu")
    with pytest.raises(ValueError, match="jace export"):
        loaded.train_with_lora(humor_frame.iloc[:16], None, tmp_path / "c")


# ---- reliability: metrics, gradient accumulation, failure, config, LoRA targets ------------------


def _varied_lengths(humor_frame):
    frame = humor_frame.copy()
    frame["response"] = [text * (1 + i % 5) for i, text in enumerate(frame["response"])]  # lengths 6..~75
    return frame


def _learnable(n=48):
    """Score = number of 猫 in the answer (0-4), answers of varied length: a signal a tiny model picks up."""
    rows = []
    for i in range(n):
        cats = (i * 7) % 5
        rows.append({"odai_id": f"p{i % 8}", "odai_type": "text", "odai": f"お題{i % 8}",
                     "response": "猫" * cats + "犬" * (1 + (i * 3) % 11), "score": float(cats)})  # fmt: skip
    return pd.DataFrame(rows)


def test_training_metrics_of_best_checkpoint_equal_evaluate_on_the_saved_model(tiny_bert_dir, humor_frame, tmp_path):
    from typer.testing import CliRunner

    from jace.cli import app

    frame = _learnable(64)
    train, valid = frame.iloc[:40], frame.iloc[40:].reset_index(drop=True)
    valid_path = tmp_path / "valid.csv"
    valid.to_csv(valid_path, index=False)
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    # A learnable signal spreads the predictions, so correlations are not computed on near-constant scores.
    config = LoraTrainingConfig(num_train_epochs=4, learning_rate=2e-2, per_device_train_batch_size=8,
                                per_device_eval_batch_size=3, metric_for_best_model="ndcg@3", warmup_ratio=0.0)  # fmt: skip
    result = client.train_with_lora(train, valid, tmp_path / "run", config=config)
    report = tmp_path / "report.json"
    out = CliRunner().invoke(app, ["evaluate", "--model", str(result.final_dir), "--data", str(valid_path),
                                   "--report", str(report), "--device", "cpu"])  # fmt: skip
    assert out.exit_code == 0, out.output
    evaluated = json.loads(report.read_text())["overall"]
    for name in ("mse", "rmse", "pearson", "spearman", "ndcg@3", "ndcg@5", "ndcg@10"):
        assert result.metrics[f"eval_{name.replace('@', '_at_')}"] == pytest.approx(evaluated[name], abs=1e-6), name


def test_gradient_accumulation_gives_the_same_first_gradient_as_one_big_batch(tiny_bert_no_dropout_dir, tmp_path, humor_frame):
    folder = tiny_bert_no_dropout_dir
    frame = _varied_lengths(humor_frame).iloc[:16]

    def first_gradient(batch, steps):
        from conftest import FirstGradient

        client = RerankerCrossEncoderClient(str(folder), device="cpu")
        config = LoraTrainingConfig(max_steps=1, per_device_train_batch_size=batch, gradient_accumulation_steps=steps,
                                    warmup_ratio=0.0, lora_dropout=0.0, max_grad_norm=1e9)  # fmt: skip
        spy = FirstGradient()
        client.train_with_lora(frame, None, tmp_path / f"b{batch}", config=config, callbacks=[spy])
        return spy.gradients

    # The gradient, not the update: Adam's first step is blind to a constant factor on the gradient.
    big, accumulated = first_gradient(16, 1), first_gradient(4, 4)
    assert big.keys() == accumulated.keys() and any(g.abs().max() > 0 for g in big.values())
    for name in big:
        assert torch.allclose(big[name], accumulated[name], atol=1e-7, rtol=1e-4), name


def test_failed_training_leaves_the_client_scoring_as_before(tiny_bert_dir, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    pairs = list(zip(humor_frame.odai, humor_frame.response))
    before = client.run(pairs)
    with pytest.raises(RuntimeError, match="disk full"):
        client.train_with_lora(humor_frame, None, tmp_path, config=LoraTrainingConfig(max_steps=3), callbacks=[Boom()])
    assert not client.model.training and client.adapter_path is None
    assert not any("lora" in name for name, _ in client.model.named_parameters())
    assert client.run(pairs) == pytest.approx(before, abs=1e-7)
    assert not (tmp_path / "final").exists()


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("metric_for_best_model", "ndcg@0", "ndcg@K"),
        ("metric_for_best_model", "accuracy", "spearman"),
        ("learning_rate", 0.0, "learning_rate"),
        ("num_train_epochs", -1.0, "num_train_epochs"),
        ("per_device_train_batch_size", 0, "per_device_train_batch_size"),
        ("gradient_accumulation_steps", 0, "gradient_accumulation_steps"),
        ("warmup_ratio", 1.5, "warmup_ratio"),
        ("max_length", 2, "max_length"),
        ("target_modules", (), "target_modules"),
        ("max_steps", 0, "max_steps"),
        ("freeze_layers", -1, "freeze_layers"),
    ],
)
def test_every_config_field_is_validated_when_the_config_is_built(field, value, match):
    with pytest.raises(ValueError, match=match):
        LoraTrainingConfig(**{field: value})


def test_any_ndcg_cutoff_can_pick_the_best_epoch(tiny_bert_dir, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    config = LoraTrainingConfig(num_train_epochs=1, metric_for_best_model="ndcg@3", per_device_train_batch_size=8)
    result = client.train_with_lora(humor_frame.iloc[:32], humor_frame.iloc[32:], tmp_path, config=config)
    assert "eval_ndcg_at_3" in result.metrics


@pytest.mark.parametrize("fixture", ["tiny_modernbert_dir", "tiny_xlmr_dir"])
def test_default_lora_targets_adapt_the_encoder_of_non_bert_backbones(fixture, request, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(request.getfixturevalue(fixture)), device="cpu")
    client.train_with_lora(humor_frame.iloc[:8], None, tmp_path, config=LoraTrainingConfig(max_steps=1))
    adapted = [name for name, _ in client.model.named_parameters() if "lora_A" in name]
    assert any(".layers." in name or ".layer." in name for name in adapted), adapted


def test_lora_targets_matching_only_the_head_are_a_clear_error(tiny_modernbert_dir, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(tiny_modernbert_dir), device="cpu")
    config = LoraTrainingConfig(max_steps=1, target_modules=("query", "key", "value", "dense"))
    with pytest.raises(ValueError, match="match no layer of the encoder"):
        client.train_with_lora(humor_frame.iloc[:8], None, tmp_path, config=config)


def test_full_fine_tuning_saves_a_standalone_model_that_reloads_with_the_same_scores(tiny_bert_dir, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    embeddings_before = client.model.get_input_embeddings().weight.detach().clone()
    classifier_before = client.model.classifier.weight.detach().clone()
    config = LoraTrainingConfig(method="full", num_train_epochs=1, learning_rate=1e-3, per_device_train_batch_size=8)
    result = client.train_with_lora(humor_frame.iloc[:32], humor_frame.iloc[32:], tmp_path, config=config)
    files = {p.name for p in result.final_dir.iterdir()}
    assert {"config.json", "model.safetensors", "target_scaler.json", "training_summary.json"} <= files
    assert "adapter_config.json" not in files
    # Word embeddings stay frozen on CPU by default; the rest is trained.
    assert torch.equal(client.model.get_input_embeddings().weight, embeddings_before)
    assert not torch.allclose(client.model.classifier.weight, classifier_before)
    pairs = list(zip(humor_frame.odai, humor_frame.response))
    reloaded = RerankerCrossEncoderClient(str(result.final_dir), device="cpu")
    assert reloaded.run(pairs, original_scale=True) == pytest.approx(client.run(pairs, original_scale=True), abs=1e-6)
    assert CrossEncoder(str(result.final_dir), device="cpu").predict(pairs) == pytest.approx(reloaded.run(pairs), abs=1e-6)
    merged = export_merged_model(result.final_dir, tmp_path / "merged")
    assert RerankerCrossEncoderClient(str(merged), device="cpu").run(pairs) == pytest.approx(reloaded.run(pairs), abs=1e-6)


def test_failed_full_fine_tuning_restores_every_weight(tiny_bert_dir, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    pairs = list(zip(humor_frame.odai, humor_frame.response))
    before = client.run(pairs)
    config = LoraTrainingConfig(method="full", max_steps=3, learning_rate=1e-2)
    with pytest.raises(RuntimeError, match="disk full"):
        client.train_with_lora(humor_frame, None, tmp_path, config=config, callbacks=[Boom()])
    assert client.run(pairs) == pytest.approx(before, abs=1e-7)
    assert all(p.requires_grad for p in client.model.parameters())


def test_lora_trains_the_whole_pooler_unless_told_to_leave_it_to_lora(tiny_bert_dir, humor_frame, tmp_path):
    for train_pooler in (True, False):
        client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
        config = LoraTrainingConfig(max_steps=4, learning_rate=1e-2, per_device_train_batch_size=8, train_pooler=train_pooler)
        result = client.train_with_lora(humor_frame, None, tmp_path / str(train_pooler), config=config)
        saved = json.loads((result.final_dir / "adapter_config.json").read_text())["modules_to_save"]
        assert ("pooler" in saved) is train_pooler
        pooler = client.model.base_model.model.bert.pooler
        assert hasattr(pooler, "modules_to_save") is train_pooler


def test_time_budget_stops_training_after_the_first_step_and_still_saves(tiny_bert_dir, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    config = LoraTrainingConfig(num_train_epochs=50, per_device_train_batch_size=4, budget_minutes=1e-6)
    result = client.train_with_lora(humor_frame.iloc[:32], humor_frame.iloc[32:], tmp_path, config=config)
    assert result.summary["metrics"]["train"]["epoch"] < 1
    assert (result.final_dir / "adapter_config.json").is_file() and "eval_spearman" in result.metrics


@pytest.mark.parametrize(
    "step_seconds,stop_at,budget_share",
    [
        (lambda step: 1.5, 40, 0.95),  # 40 of 100 steps fit in 60 s
        (lambda step: 0.5, None, None),  # all 100 fit: the schedule is left alone
        (lambda step: 10.0 if step == 1 else 1.5, 34, 0.95),  # a slow first step (start-up) is left out of the pace: 34, not 10
        (lambda step: 3.0 if step <= 10 else 1.0, 29, 0.8),  # faster after the first tenth: re-estimated at 60%: 29, not 20
    ],
)
def test_time_budget_compresses_the_lr_schedule_to_end_on_the_steps_that_fit(monkeypatch, step_seconds, stop_at, budget_share):
    from transformers import TrainerControl, TrainerState, get_linear_schedule_with_warmup

    from jace import trainer as trainer_module

    clock = [0.0]
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=10, num_training_steps=100)
    budget, state, control = trainer_module.TimeBudget(minutes=1.0), TrainerState(max_steps=100), TrainerControl()
    budget.trainer = SimpleNamespace(lr_scheduler=scheduler)  # what bind_time_budget sets
    budget.on_train_begin(None, state, control)
    rates = []
    for step in range(1, 101):
        clock[0] += step_seconds(step)
        optimizer.step()
        scheduler.step()
        state.global_step = step
        budget.on_step_end(None, state, control, lr_scheduler=scheduler if step % 2 else None)  # None: as transformers 5 passes it
        rates.append(scheduler.get_last_lr()[0])
        if control.should_training_stop:
            break
    if stop_at is None:  # 100 steps fit in 60 s: the schedule is left alone
        assert len(rates) == 100 and rates == pytest.approx([min(s / 10, (100 - s) / 90) for s in range(1, 101)])
    else:  # the schedule is compressed to end (lr 0) on the last step that fits, then training stops, the budget spent
        assert budget_share * 60 <= clock[0] <= 60
        assert len(rates) == stop_at and rates[-1] == pytest.approx(0.0, abs=1e-12) and max(rates) > 0.9
        peak = rates.index(max(rates))  # warm-up rises to one peak, then the rate only falls
        assert all(a <= b for a, b in zip(rates[:peak], rates[1 : peak + 1])) and all(a >= b for a, b in zip(rates[peak:], rates[peak + 1 :]))


def test_swap_pairs_trains_on_both_orders_and_keeps_the_evaluation_data_as_given(tiny_bert_dir, humor_frame, tmp_path):
    steps = {}
    for swap in (False, True):
        client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
        config = LoraTrainingConfig(num_train_epochs=1, per_device_train_batch_size=8, swap_pairs=swap)
        seen = StepCounter()
        result = client.train_with_lora(
            humor_frame.iloc[:32], humor_frame.iloc[32:], tmp_path / str(swap), config=config, callbacks=[seen]
        )
        steps[swap] = seen.steps
        assert result.summary["data"]["train"]["rows"] == 32 and result.summary["hyperparameters"]["swap_pairs"] is swap
        assert result.summary["data"]["eval"]["rows"] == len(humor_frame) - 32
    assert steps == {False: 4, True: 8}  # 32 rows, batch 8: both orders double the steps of an epoch
    from jace.training import swapped_pairs

    swapped = swapped_pairs(humor_frame.iloc[:3], PairColumns())
    assert swapped["odai"].tolist()[3:] == humor_frame["response"].tolist()[:3]
    assert swapped["response"].tolist()[3:] == humor_frame["odai"].tolist()[:3]
    assert swapped["score"].tolist() == humor_frame["score"].tolist()[:3] * 2


def test_an_adapter_trained_from_a_relative_base_folder_loads_from_any_working_directory(
    tiny_bert_dir, humor_frame, tmp_path, monkeypatch
):
    monkeypatch.chdir(tiny_bert_dir.parent)
    client = RerankerCrossEncoderClient(tiny_bert_dir.name, device="cpu")
    config = LoraTrainingConfig(max_steps=2, per_device_train_batch_size=8)
    result = client.train_with_lora(humor_frame.iloc[:16], None, tmp_path / "run", config=config)
    recorded = json.loads((result.final_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == str(tiny_bert_dir.resolve())
    pairs = list(zip(humor_frame["odai"][:4], humor_frame["response"][:4]))
    expected = client.run(pairs)
    monkeypatch.chdir(tmp_path)
    np.testing.assert_allclose(RerankerCrossEncoderClient(str(result.final_dir), device="cpu").run(pairs), expected, atol=1e-5)


def test_only_a_named_local_folder_is_recorded_as_an_absolute_base(tmp_path, monkeypatch):
    from jace.cross_encoder import portable_base_name

    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    assert portable_base_name("base") == str((tmp_path / "base").resolve())
    assert portable_base_name("org/not-here") == "org/not-here"
    assert portable_base_name("") == ""  # not the working directory


def test_freeze_layers_keeps_the_embeddings_and_bottom_layers_and_trains_the_layers_above(tiny_bert_dir, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    before = {name: p.detach().clone() for name, p in client.model.named_parameters()}
    config = LoraTrainingConfig(method="full", freeze_layers=1, max_steps=3, learning_rate=1e-2, per_device_train_batch_size=8)
    result = client.train_with_lora(humor_frame, None, tmp_path / "full", config=config)
    changed = {name for name, p in client.model.named_parameters() if not torch.equal(p, before[name])}
    assert not any(name.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for name in changed)
    assert any(name.startswith("bert.encoder.layer.1.") for name in changed) and "classifier.weight" in changed
    assert all(p.requires_grad for p in client.model.parameters())  # the caller's model is left trainable
    assert json.loads((result.final_dir / "training_summary.json").read_text())["hyperparameters"]["freeze_layers"] == 1

    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    config = LoraTrainingConfig(freeze_layers=1, max_steps=2, per_device_train_batch_size=8)
    result = client.train_with_lora(humor_frame, None, tmp_path / "lora", config=config)
    assert json.loads((result.final_dir / "adapter_config.json").read_text())["layers_to_transform"] == [1]
    adapted = [name for name, module in client.model.named_modules() if hasattr(module, "lora_A")]
    assert adapted and all(".layer.1." in name for name in adapted)


def test_freeze_layers_that_leave_no_layer_to_train_is_a_clear_error(tiny_bert_dir, humor_frame, tmp_path):
    for method in ("full", "lora"):
        client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
        config = LoraTrainingConfig(method=method, freeze_layers=2, max_steps=1)
        with pytest.raises(ValueError, match="freeze_layers=2 leaves no encoder layer to train: the model has 2; use at most 1"):
            client.train_with_lora(humor_frame, None, tmp_path / method, config=config)


def test_after_lora_training_only_the_adapters_head_and_pooler_stay_trainable(tiny_bert_dir, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    config = LoraTrainingConfig(max_steps=2, per_device_train_batch_size=8)
    client.train_with_lora(humor_frame, None, tmp_path, config=config)
    trainable = [name for name, p in client.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or "modules_to_save" in name for name in trainable), trainable
