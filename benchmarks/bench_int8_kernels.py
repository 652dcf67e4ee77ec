"""The integer GEMMs jace can run int8 on, beside fp32/bf16, on this CPU; optionally end to end.

Per linear-layer shape (rows × in → out): fp32 ``F.linear``, bf16, ``torch._int_mm`` (jace's
kernel where the CPU has VNNI/AMX) and FBGEMM through ``Int8Linear`` with 7-bit activations (jace's
kernel on AVX2 without VNNI), with the FBGEMM product checked exact against a float64 reference.
With ``--model``, also ``RerankerCrossEncoderClient.run`` in float32, bfloat16 and int8 on humor
validation pairs, alternating, with the Spearman of each against fp32.

Run:  .venv/bin/python benchmarks/bench_int8_kernels.py --threads 1 2
      .venv/bin/python benchmarks/bench_int8_kernels.py --threads 2 --model runs/ja-reranker/final --pairs 256
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

from common import data_file, integer_gemm, interleaved, machine, timed

SHAPES = ((2048, 384, 1536), (2048, 1536, 384), (2048, 384, 384))  # e5-small: FFN in, FFN out, attention


def kernels(threads: int) -> None:
    from jace.device import cpu_has_native_bf16

    torch.set_num_threads(threads)
    for rows, inputs, outputs in SHAPES:
        ops = 2 * rows * inputs * outputs
        x, weight = torch.randn(rows, inputs), torch.randn(outputs, inputs)
        int_mm = integer_gemm(rows, inputs, outputs, "int_mm")[0]
        fbgemm, activations, int8_weight = integer_gemm(rows, inputs, outputs, "fbgemm")
        exact = torch.equal(fbgemm().double(), activations.double() @ int8_weight.double())
        results = {"fp32 F.linear": timed(lambda: torch.nn.functional.linear(x, weight))}
        if cpu_has_native_bf16():  # emulated bf16 takes seconds per call: see the end-to-end figures instead
            xb, wb = x.bfloat16(), weight.bfloat16()
            results["bf16 F.linear"] = timed(lambda: torch.nn.functional.linear(xb, wb))
        results["torch._int_mm"] = timed(int_mm, repeats=1)
        results[f"FBGEMM, 7-bit activations (exact: {exact})"] = timed(fbgemm)
        for name, seconds in results.items():
            print(f"{threads} thr. {rows}x{inputs}->{outputs}  {name:40s} {seconds * 1e3:9.1f} ms {ops / seconds / 1e9:8.1f} G(FL)OP/s")


def end_to_end(model: str, pairs: list, threads: int, repeats: int) -> None:
    from scipy.stats import spearmanr

    from jace.scoring import RerankerCrossEncoderClient

    torch.set_num_threads(threads)
    clients = {dtype: RerankerCrossEncoderClient(model, device="cpu", dtype=dtype) for dtype in ("float32", "bfloat16", "int8")}
    scores = {dtype: client.run(pairs, show_progress_bar=False) for dtype, client in clients.items()}
    methods = {dtype: (lambda c=client: c.run(pairs, show_progress_bar=False)) for dtype, client in clients.items()}
    for dtype, seconds in interleaved(methods, repeats, warm=False).items():
        fidelity = spearmanr(scores["float32"], scores[dtype]).statistic
        print(f"{threads} thr. run() {dtype:9s} {len(pairs) / seconds:8.1f} pairs/s  Spearman with fp32 {fidelity:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default=None, help="Also time run() end to end on this model (float32, bfloat16, int8).")
    parser.add_argument("--pairs", type=int, default=256, help="humor validation pairs for --model")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("JACE_CACHE_DIR", tempfile.mkdtemp(prefix="bench-int8-"))
    from jace.quantization import int8_gemm, int8_kernel

    print(machine(), f"| int8 kernel family: {int8_kernel()}, GEMM: {int8_gemm()}")
    for threads in args.threads:
        kernels(threads)
    if args.model:
        import pandas as pd

        frame = pd.read_csv(data_file("humor_validation.csv"))
        pairs = list(zip(frame.odai, frame.response))[: args.pairs]
        for threads in args.threads:
            end_to_end(args.model, pairs, threads, args.repeats)


if __name__ == "__main__":
    main()
