"""Does the result depend on the CPU's instruction set? Data generation and training under several XLA_FLAGS.

    .venv/bin/python benchmarks/probes/cpu_codegen.py [--flags "" "" "--xla_cpu_max_isa=AVX"] [--codec-steps 300]
        [--samples 16] [--workdir /tmp/cpu_codegen]

XLA compiles for the host CPU; ``--xla_cpu_max_isa=AVX`` (no AVX2/FMA) or ``SSE4_2`` emulates an older or
different CPU on this one. Each flag set runs in its own process:

1. data: ``generate_burgers_file`` (``--samples`` trajectories, 1024 cells, 201 frames, the default equation);
   the bytes are hashed and compared with the first flag set's (max |difference|, max relative L2 per frame);
2. training: ``configs/burgers32.py:cpu``'s codec stage for ``--codec-steps`` steps (logging every step) on the
   first flag set's data file; the per-step training losses are compared with the first flag set's, and the
   final validation reconstruction nRMSE is printed.

Repeat a flag set (the default lists "" twice) to check that one machine reproduces itself bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def child_data(out: Path, samples: int) -> None:
    import h5py

    from ups_jax.data.generate import generate_burgers_file

    path = generate_burgers_file(out, nu=0.01, samples=samples, nx=1024, seed=2022, chunk=samples, progress=False)
    with h5py.File(path) as f:
        t = f["tensor"][()]
    np.save(out / "tensor.npy", t)
    (out / "data.json").write_text(json.dumps({"md5": hashlib.md5(t.tobytes()).hexdigest(), "file": str(path)}))


def child_train(out: Path, data: str, steps: int) -> None:
    from ups_jax.config import load_config
    from ups_jax.training.logging import read_jsonl
    from ups_jax.training.pipeline import train_and_evaluate

    cfg = load_config(str(ROOT / "configs" / "burgers32.py") + ":cpu",
                      ["stage_order=('codec',)", f"stages.codec.steps={steps}", "stages.codec.log_every=1",
                       f"stages.codec.eval_every={steps}", "logging.progress=False", "logging.wandb_mode=disabled",
                       "eval.val_max_trajectories=8"])
    train_and_evaluate(cfg, out / "run", data_paths=[data])
    recs = read_jsonl(out / "run" / "metrics.jsonl")[0]
    (out / "train.json").write_text(json.dumps({
        "loss": [r["loss"] for r in recs if r.get("kind") == "train"],
        "val": [r["val/recon_nrmse"] for r in recs if r.get("kind") == "val"]}))


def spawn(flags: str, *args: str) -> None:
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, __file__, *args], check=True, env=env)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flags", nargs="+", default=["", "", "--xla_cpu_max_isa=AVX"])
    p.add_argument("--codec-steps", type=int, default=300)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--workdir", default="/tmp/cpu_codegen")
    p.add_argument("--child", choices=["data", "train"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args(list(argv))
    if a.child == "data":
        child_data(Path(a.out), a.samples)
        return 0
    if a.child == "train":
        child_train(Path(a.out), a.data, a.codec_steps)
        return 0
    root = Path(a.workdir)
    dirs = [root / f"run{i}" for i in range(len(a.flags))]
    for flags, d in zip(a.flags, dirs):
        d.mkdir(parents=True, exist_ok=False)
        spawn(flags, "--child", "data", "--out", str(d), "--samples", str(a.samples))
    data_file = json.loads((dirs[0] / "data.json").read_text())["file"]
    for flags, d in zip(a.flags, dirs):
        spawn(flags, "--child", "train", "--out", str(d), "--data", data_file, "--codec-steps", str(a.codec_steps))
    ref_t = np.load(dirs[0] / "tensor.npy")
    ref_loss = np.array(json.loads((dirs[0] / "train.json").read_text())["loss"])
    marks = [k for k in (1, 3, 10, 30, 50, 100, 150, 200, 300, 500, 1000) if k <= ref_loss.size]
    for flags, d in zip(a.flags, dirs):
        t = np.load(d / "tensor.npy")
        rel = np.sqrt(((t - ref_t) ** 2).sum(-1)) / np.sqrt((ref_t ** 2).sum(-1))
        tr = json.loads((d / "train.json").read_text())
        loss = np.array(tr["loss"])
        diff = np.abs(loss - ref_loss) / np.abs(ref_loss)
        print(f"XLA_FLAGS={flags!r}: data md5 {json.loads((d / 'data.json').read_text())['md5']}, max |diff| "
              f"{np.abs(t - ref_t).max():.2e}, max rel L2/frame {rel.max():.2e}; codec loss rel diff at step "
              + ", ".join(f"{k}: {diff[k - 1]:.1e}" for k in marks)
              + f"; val recon nRMSE {tr['val'][-1]:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
