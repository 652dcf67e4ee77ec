"""CPU inference: jace's paths (fp32, bf16, int8) against sentence-transformers' CPU backends.

Every method scores the same pairs with the same model, in one process, round-robin (so machine
noise hits all alike), at each thread count given. Peers:

* ``CrossEncoder.predict`` (PyTorch fp32), sentence-transformers' default backend.
* ONNX Runtime fp32 and int8: what ``CrossEncoder(..., backend="onnx")`` and
  ``export_dynamic_quantized_onnx_model(..., "avx512_vnni")`` (``"avx2"`` on CPUs without VNNI) run. Their helper (optimum-onnx)
  cannot be installed beside the pinned transformers, so the same graph is built directly: a
  ``torch.onnx`` export of the model, ONNX Runtime's ``quantize_dynamic`` with the avx512_vnni
  (or avx2) settings (int8 symmetric per-channel weights, uint8 activations, MatMul), fed as
  ``CrossEncoder.predict`` feeds a backend: sorted longest first by characters, batches of 32.
* OpenVINO fp32 (precision hint f32), OpenVINO at its default precision hint (bf16 on CPUs with
  native bf16), and OpenVINO int8 (NNCF static quantization, 300 calibration pairs from the humor
  *train* split): what ``backend="openvino"`` and ``export_static_quantized_openvino_model`` run
  (optimum-intel pulls a different torch, so again the same graph directly).

Reported per method: pairs/s, the ratio to the fastest peer, Spearman and max |Δ| of its scores
against jace fp32 (fidelity), useful GFLOP/s and its share of the matching matmul peak (fp32, bf16
or int8, measured in the same run), and 1 → 2 thread scaling efficiency.

Run:  .venv/bin/python benchmarks/bench_inference.py --threads 1 2 --e5 runs/bench_japanese/jsts/full_fine-tuning_lr_8e-5/final
      .venv/bin/python benchmarks/bench_inference.py --models e5 --threads 2 --profile
Needs the benchmark extras: make bench-deps (onnxruntime, onnx, openvino, nncf).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from scipy.stats import spearmanr

from common import data_file, interleaved, machine, matmul_peak, minilm_path


def large_random_model(base: str) -> str:
    """A random model shaped like the default reranker (24 layers, hidden 1024), MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tempfile.mkdtemp(prefix="bench-large-")
    config = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, num_labels=1)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def with_fixed_head(base: str) -> str:
    """MiniLM with one random 1-logit head saved to a folder, so every method scores the same model."""
    from transformers import AutoTokenizer

    from jace.cross_encoder import load_sequence_regressor

    folder = tempfile.mkdtemp(prefix="bench-minilm-")
    torch.manual_seed(0)
    load_sequence_regressor(base).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def flops(model, lengths) -> float:
    """Useful forward FLOPs: 2·(non-embedding params)·tokens + attention (4·L²·hidden per layer)."""
    cfg = model.config
    params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    lengths = np.asarray(lengths, dtype=float)
    return float(2 * params * lengths.sum() + 4 * cfg.num_hidden_layers * cfg.hidden_size * (lengths**2).sum())


# ---- peers -------------------------------------------------------------------------------------


def onnx_export(folder: str, out_dir: Path) -> tuple[Path, list[str]]:
    """torch.onnx export of the sequence classifier (eager attention, dynamic batch and length)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
    sample = tokenizer(["テスト query"], ["passage text"], return_tensors="pt")
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample]

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits

    path = out_dir / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(
            Logits(), tuple(sample[n] for n in names), str(path), dynamo=False, input_names=names, output_names=["logits"],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}}, opset_version=17,
        )  # fmt: skip
    return path, names


def ort_int8(path: Path) -> tuple[Path, str]:
    """ONNX Runtime dynamic int8 with the settings of optimum's AutoQuantizationConfig for this CPU.

    ``avx512_vnni`` (int8 weights) where the CPU has VNNI, else ``avx2`` (uint8 weights), as a user
    of ``export_dynamic_quantized_onnx_model(model, config)`` would pick; both symmetric per-channel
    weights, uint8 activations, MatMul, full range.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from jace.quantization import int8_kernel

    config = "avx512_vnni" if int8_kernel() in ("amx", "avx512_vnni", "avx_vnni") else "avx2"
    weights = QuantType.QInt8 if config == "avx512_vnni" else QuantType.QUInt8
    out = path.with_name(f"model_qint8_{config}.onnx")
    quantize_dynamic(str(path), str(out), weight_type=weights, per_channel=True, reduce_range=False, op_types_to_quantize=["MatMul"],
                     extra_options={"WeightSymmetric": True})  # fmt: skip
    return out, config


def predict_like_cross_encoder(run, tokenizer, names, pairs, batch_size: int = 32) -> list[float]:
    """What ``CrossEncoder.predict`` (sentence-transformers 6) does around a backend.

    Pairs sorted longest first by character count, batches of 32 padded to their longest, scores
    put back in input order.
    """
    order = np.argsort([-(len(q) + len(p)) for q, p in pairs], kind="stable")
    scores = np.empty(len(pairs))
    for start in range(0, len(pairs), batch_size):
        index = order[start : start + batch_size]
        batch = [pairs[i] for i in index]
        features = tokenizer([q for q, _ in batch], [p for _, p in batch], padding=True, truncation=True, max_length=512, return_tensors="np")
        logits = run({n: features[n].astype(np.int64) for n in names})
        scores[index] = expit(np.asarray(logits, dtype=np.float64).reshape(-1))
    return scores.tolist()


def ort_runner(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)[0]


def openvino_model(path: Path, int8_calibration: list[dict] | None = None):
    import openvino as ov

    model = ov.Core().read_model(str(path))
    if int8_calibration is not None:
        import nncf

        model = nncf.quantize(model, nncf.Dataset(int8_calibration), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(int8_calibration))
    return model


def openvino_runner(model, threads: int, hint: str | None):
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    compiled = ov.Core().compile_model(model, "CPU", config)
    # The element type the CPU plugin computes in, e.g. "bf16" or "f32" (str() gives "<Type: 'bfloat16'>").
    precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    output = compiled.output(0)
    return (lambda feeds: compiled(feeds)[output]), precision


# ---- one model ---------------------------------------------------------------------------------


def bench(name: str, folder: str, pairs, calibration, thread_counts: list[int], repeats: int, peaks: dict, profile: bool) -> list[dict]:
    from sentence_transformers import CrossEncoder

    from jace.cross_encoder import encode_pairs
    from jace.device import cpu_has_native_bf16
    from jace.scoring import RerankerCrossEncoderClient

    work = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    ours = RerankerCrossEncoderClient(folder, device="cpu", dtype="float32")
    tokenizer = ours.tokenizer
    reference = np.asarray(ours.run(pairs, show_progress_bar=False))
    clients = {"jace fp32": ours, "jace int8": RerankerCrossEncoderClient(folder, device="cpu", dtype="int8")}
    if cpu_has_native_bf16():
        clients["jace bf16"] = RerankerCrossEncoderClient(folder, device="cpu", dtype="bfloat16")
    ce = CrossEncoder(folder, device="cpu", max_length=512)
    onnx_path, names = onnx_export(folder, work)
    int8_path, int8_config = ort_int8(onnx_path)
    calib = [{n: v.astype(np.int64) for n, v in tokenizer([q], [p], truncation=True, max_length=512, return_tensors="np").items() if n in names}
             for q, p in calibration]  # fmt: skip
    ov_fp32, ov_int8 = openvino_model(onnx_path), openvino_model(onnx_path, calib)
    lengths = [len(ids) for ids in encode_pairs(tokenizer, pairs, 512)["input_ids"]]
    useful = flops(ours.model, lengths)
    print(f"\n## {name}: {len(pairs)} pairs, mean {np.mean(lengths):.1f} tokens/pair, {useful / len(pairs) / 1e9:.2f} GFLOP/pair")
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        methods = {label: (lambda c=c: c.run(pairs, show_progress_bar=False)) for label, c in clients.items()}
        methods["ST CrossEncoder (torch fp32)"] = lambda: ce.predict(pairs, batch_size=32, show_progress_bar=False)
        for label, runner in (("ST onnx fp32 (ORT)", ort_runner(onnx_path, threads)), (f"ST onnx int8 {int8_config} (ORT)", ort_runner(int8_path, threads))):
            methods[label] = lambda r=runner: predict_like_cross_encoder(r, tokenizer, names, pairs)
        for label, model, hint in (("ST openvino fp32", ov_fp32, "f32"), ("ST openvino default hint", ov_fp32, None), ("ST openvino int8 (NNCF)", ov_int8, None)):
            runner, precision = openvino_runner(model, threads, hint)
            methods[f"{label} [{precision}]"] = lambda r=runner: predict_like_cross_encoder(r, tokenizer, names, pairs)
        outputs = {label: np.asarray(fn()) for label, fn in methods.items()}
        times = interleaved(methods, repeats, warm=False)
        for label, seconds in times.items():
            kind = "int8" if "int8" in label else "bf16" if ("bf16" in label or "[bf16]" in label) else "fp32"
            rows.append({
                "model": name, "threads": threads, "method": label, "pairs/s": len(pairs) / seconds,
                "spearman vs jace fp32": spearmanr(outputs[label], reference).statistic,
                "max |Δ score|": float(np.abs(outputs[label] - reference).max()),
                "GFLOP/s": useful / seconds / 1e9, "% of peak": 100 * useful / seconds / peaks[(kind, threads)], "peak": kind,
            })  # fmt: skip
        if profile:
            where_time_goes(clients, pairs, tokenizer, threads)
    return rows


def where_time_goes(clients: dict, pairs, tokenizer, threads: int) -> None:
    """Split one run of each jace path into int8/float matmul, attention, other ops, tokenization and Python."""
    from torch.profiler import ProfilerActivity, profile

    from jace.cross_encoder import encode_pairs

    start = time.perf_counter()
    encode_pairs(tokenizer, pairs, 512)
    tokenize_s = time.perf_counter() - start
    groups = {"int8 matmul": ("aten::_int_mm", "quantized::linear_dynamic"), "float matmul": ("aten::addmm", "aten::mm", "aten::bmm"),
              "attention": ("aten::_scaled_dot_product", "aten::softmax", "aten::_softmax")}  # fmt: skip
    for label, client in clients.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            client.run(pairs, show_progress_bar=False)
            total = time.perf_counter() - start
        spent = dict.fromkeys(groups, 0.0)
        ops = 0.0
        for event in prof.key_averages():
            own = event.self_cpu_time_total / 1e6
            ops += own
            for group, prefixes in groups.items():
                if event.key.startswith(prefixes):
                    spent[group] += own
        other = ops - sum(spent.values())
        parts = {**spent, "other ops": other, "tokenization": tokenize_s, "python/batching": max(total - ops, 0.0)}
        print(f"profile {label} ({threads} thread(s), {total:.2f} s under the profiler): "
              + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in parts.items()))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=512, help="humor validation pairs for MiniLM and e5")
    parser.add_argument("--large-pairs", type=int, default=48, help="pairs for the 24-layer model")
    parser.add_argument("--models", nargs="+", default=["minilm", "e5", "large"], choices=["minilm", "e5", "large"])
    parser.add_argument("--e5", default="runs/bench_japanese/jsts/full_fine-tuning_lr_8e-5/final",
                        help="A Japanese model on the converted e5 backbone (a full fine-tuned folder).")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="Also split jace's time into matmul, attention, tokenization, Python.")
    parser.add_argument("--output", type=Path, default=None, help="Also write the table as CSV.")
    args = parser.parse_args()
    os.environ.setdefault("JACE_CACHE_DIR", tempfile.mkdtemp(prefix="bench-int8-"))
    frame = pd.read_csv(data_file("humor_validation.csv"))
    pairs = list(zip(frame.odai, frame.response))
    train = pd.read_csv(data_file("humor_train.csv")).sample(300, random_state=0)
    calibration = list(zip(train.odai, train.response))
    from jace.device import cpu_has_native_bf16
    from jace.quantization import int8_gemm, int8_kernel

    print(machine(), f"| int8 kernel family: {int8_kernel()}, GEMM: {int8_gemm()}")
    peaks = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        # Without native bf16 no method computes in bf16 (jace skips it, OpenVINO picks f32), and an emulated peak takes minutes.
        bf16 = matmul_peak(torch.bfloat16) if cpu_has_native_bf16() else float("nan")
        peaks |= {("fp32", threads): matmul_peak(torch.float32), ("bf16", threads): bf16, ("int8", threads): matmul_peak(torch.int8)}
        print(f"{threads} thread(s) matmul peak: fp32 {peaks['fp32', threads] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16', threads] / 1e9:.0f}, "
              f"int8 {peaks['int8', threads] / 1e9:.0f} GOP/s")  # fmt: skip
    base = minilm_path()
    models = {"minilm": ("all-MiniLM-L6-v2 (real)", lambda: with_fixed_head(base), args.pairs),
              "e5": (f"multilingual-e5-small JSTS ({args.e5})", lambda: args.e5, args.pairs),
              "large": ("random 24L/1024H", lambda: large_random_model(base), args.large_pairs)}  # fmt: skip
    rows = []
    for key in args.models:
        name, folder, count = models[key]
        rows += bench(name, folder(), pairs[:count], calibration, args.threads, args.repeats, peaks, args.profile)
    table = pd.DataFrame(rows)
    peers = table[table.method.str.startswith("ST ")]
    fastest_peer = peers.groupby(["model", "threads"])["pairs/s"].max().rename("fastest peer")
    table = table.join(fastest_peer, on=["model", "threads"])
    table["x fastest peer"] = table["pairs/s"] / table.pop("fastest peer")
    if len(args.threads) > 1 and 1 in args.threads:
        one = table[table.threads == 1].set_index(["model", "method"])["pairs/s"]
        for t in (t for t in args.threads if t != 1):  # 1→1 would be a column of ones and NaNs
            mask = table.threads == t
            table.loc[mask, f"scaling eff. 1→{t}"] = [
                row["pairs/s"] / (t * one[(row["model"], row["method"])]) for _, row in table[mask].iterrows()
            ]
    print()
    print(table.to_markdown(index=False, floatfmt=".3f"))
    if args.output:
        table.to_csv(args.output, index=False)


if __name__ == "__main__":
    main()
