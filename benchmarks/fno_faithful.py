"""Is ``configs/fno_burgers.py`` PDEBench's FNO? Trains PDEBench's own FNO1d with PDEBench's own training loop
(PyTorch) and the in-project FNO (``python -m ups_jax.train``) for the SAME number of updates on the SAME data and
split, and prints both test nRMSEs, scored by the same function (``ups_jax.eval.metrics.MetricAccumulator``,
tested equal to PDEBench's ``metric_func``; per-trajectory mean over the 31 predicted steps):

    .venv/bin/python benchmarks/fno_faithful.py --torch-python /work/torchenv/bin/python --updates 128 --seeds 0 1

PyTorch is not a project dependency: ``--torch-python`` names any interpreter with ``torch``, ``numpy``, ``h5py``
and the ``pdebench`` 0.1.0 wheel (``pip install --no-deps --ignore-requires-python pdebench==0.1.0``); for
example ``python3.11 -m venv /work/torchenv && /work/torchenv/bin/pip install torch numpy h5py`` (a CPU wheel).
That interpreter runs this same file with ``--pdebench-torch`` (which imports nothing from the project) and
writes its test predictions; this process scores them. Without ``--torch-python`` only the in-project half runs.

The PyTorch half is ``pdebench/models/fno/train.py``'s autoregressive branch, unchanged in what it computes:
``FNODatasetSingle`` (its own reader: ``reduced_resolution=4``, ``reduced_resolution_t=5``, the grid = the file's
x-coordinate) restricted to the project's train split, ``DataLoader(batch_size=50, shuffle=True)`` (9 batches per
epoch of 410, the last of 10), ``FNO1d(1, modes=12, width=20, initial_step=10)`` with torch's default
initialisation, ``Adam(lr=1e-3, weight_decay=1e-4)``, ``StepLR(step_size=100, gamma=0.5)`` stepped per epoch,
``MSELoss`` summed over the 31 rolled-out steps, gradients through the whole rollout. It stops after ``--updates``
updates. Model selection as PDEBench (lowest rollout MSE over the predicted frames, checked every
``--eval-every`` updates and at the end) but on the project's val split, not on the test split PDEBench uses.

The in-project half runs ``configs/fno_burgers.py:cpu`` with ``stages.fno.steps=--updates`` and
``eval_every=--eval-every`` (plus any ``--override KEY=VALUE``: the ablations of docs/benchmarks.md) into
``--workdir-root/<tag>/seed<S>`` (finished runs are reused) and reads its ``eval/test.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIVEN, MODES, WIDTH, BATCH = 10, 12, 20, 50        # PDEBench config_Bgs.yaml
LR, WEIGHT_DECAY, STEP_EPOCHS, GAMMA = 1e-3, 1e-4, 100, 0.5


# ------------------------------------------------------------------------------------ PyTorch half (no ups_jax)
def _load(path: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)      # without pdebench/__init__'s imports
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pdebench_torch(data: Path, split: dict, updates: int, eval_every: int, seed: int, out: Path,
                   threads: int = 0) -> None:
    import importlib.util

    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)

    spec = importlib.util.find_spec("pdebench")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the pdebench wheel is not installed for this interpreter "
                 "(pip install --no-deps --ignore-requires-python pdebench==0.1.0)")
    fno_dir = Path(list(spec.submodule_search_locations)[0]) / "models" / "fno"
    fno, utils = _load(fno_dir / "fno.py", "pdebench_fno"), _load(fno_dir / "utils.py", "pdebench_fno_utils")
    torch.manual_seed(seed)
    np.random.seed(seed)

    def dataset(indices):   # PDEBench's reader over the whole file (test_ratio=1 keeps all), then our split
        ds = utils.FNODatasetSingle(data.name, initial_step=GIVEN, saved_folder=str(data.parent) + "/",
                                    reduced_resolution=4, reduced_resolution_t=5, if_test=True, test_ratio=1.0)
        ds.data = ds.data[np.asarray(indices)]
        return ds

    train_loader = torch.utils.data.DataLoader(dataset(split["train"]), batch_size=BATCH, shuffle=True)
    val_loader = torch.utils.data.DataLoader(dataset(split["val"]), batch_size=BATCH, shuffle=False)
    test_data = dataset(split["test"])
    model = fno.FNO1d(num_channels=1, modes=MODES, width=WIDTH, initial_step=GIVEN)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=STEP_EPOCHS, gamma=GAMMA)
    loss_fn = torch.nn.MSELoss(reduction="mean")

    def rollout(xx, t_end, grid):    # fno/train.py's autoregressive loop: returns the predicted frames
        preds = []
        for _ in range(GIVEN, t_end):
            im = model(xx.reshape(*xx.shape[:-2], -1), grid)
            preds.append(im)
            xx = torch.cat((xx[..., 1:, :], im), dim=-2)
        return torch.cat(preds, -2)

    def val_loss():                  # PDEBench's val_l2_full (summed over batches)
        total = 0.0
        with torch.no_grad():
            for xx, yy, grid in val_loader:
                pred = rollout(xx, yy.shape[-2], grid)
                total += loss_fn(pred.reshape(len(yy), -1), yy[..., GIVEN:, :].reshape(len(yy), -1)).item()
        return total

    done, best, best_state, t0, log = 0, float("inf"), None, time.time(), []
    while done < updates:
        model.train()
        for xx, yy, grid in train_loader:
            loss = 0
            for t in range(GIVEN, yy.shape[-2]):                 # t_train = 200 capped to the 41 frames
                im = model(xx.reshape(*xx.shape[:-2], -1), grid)
                loss += loss_fn(im.reshape(im.size(0), -1), yy[..., t:t + 1, :].reshape(im.size(0), -1))
                xx = torch.cat((xx[..., 1:, :], im), dim=-2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done % eval_every == 0 or done == updates:
                model.eval()
                v = val_loss()
                log.append({"update": done, "train_loss": loss.item(), "val_l2_full": v, "wall_s": time.time() - t0})
                print(json.dumps(log[-1]), flush=True)
                if v < best:
                    best, best_state = v, {k: x.clone() for k, x in model.state_dict().items()}
                model.train()
            if done == updates:
                break
        scheduler.step()             # per epoch, as fno/train.py
    train_wall = time.time() - t0
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        xx, yy, grid = (torch.as_tensor(test_data.data[..., :GIVEN, :]), torch.as_tensor(test_data.data),
                        test_data.grid.unsqueeze(0).expand(len(test_data.data), -1, -1))
        pred = rollout(xx, yy.shape[-2], grid)[..., 0].numpy()                     # (N, X, 31)
    np.savez(out, pred=np.transpose(pred, (0, 2, 1)), true=np.transpose(test_data.data[..., GIVEN:, 0], (0, 2, 1)),
             log=json.dumps(log), train_wall_s=train_wall, torch=torch.__version__, threads=torch.get_num_threads())


# ------------------------------------------------------------------------------------ the orchestrator (ups_jax)
def _split(data: Path) -> dict:
    from ups_jax.data.pdebench import PDEBenchDataset, make_splits

    ds = PDEBenchDataset([data], reduced_resolution=4, reduced_resolution_t=5)
    return {k: v.tolist() for k, v in make_splits(ds).items()}


def score(pred, true) -> float:
    from ups_jax.eval.metrics import MetricAccumulator

    acc = MetricAccumulator(Lx=1.0)
    for s in range(0, len(pred), BATCH):
        acc.update(pred[s:s + BATCH], true[s:s + BATCH])
    return acc.result()["nrmse"]


def _run(cmd: list[str], what: str, cwd=None) -> None:
    from ups_jax.errors import UserError

    try:
        rc = subprocess.run(cmd, cwd=cwd).returncode
    except OSError as e:                 # e.g. --torch-python names no interpreter
        raise UserError(f"{what}: cannot run {cmd[0]} ({e.strerror}); check --torch-python") from e
    if rc:
        raise UserError(f"{what} exited with code {rc} (its output is above): {' '.join(cmd[:3])} ...")


def run_torch(python: str, data: Path, split: dict, updates: int, eval_every: int, seed: int, root: Path,
              threads: int) -> dict:
    import numpy as np

    out = root / "pdebench_torch" / f"seed{seed}"
    pred_file = out / f"test_pred_{updates}.npz"
    if not pred_file.is_file():
        out.mkdir(parents=True, exist_ok=True)
        (out / "split.json").write_text(json.dumps(split))
        cmd = [python, str(Path(__file__).resolve()), "--pdebench-torch", "--data", str(data), "--updates",
               str(updates), "--eval-every", str(eval_every), "--seeds", str(seed), "--split-file",
               str(out / "split.json"), "--out", str(pred_file), "--torch-threads", str(threads)]
        _run(cmd, "PDEBench's PyTorch half")
    z = np.load(pred_file)
    return {"nrmse": score(z["pred"], z["true"]), "train_wall_s": float(z["train_wall_s"]),
            "what": f"torch {z['torch']}, {int(z['threads'])} threads", "log": json.loads(str(z["log"]))}


def run_jax(config: str, data: Path, updates: int, eval_every: int, seed: int, overrides: list[str],
            workdir: Path) -> dict:
    test = workdir / "eval" / "test.json"
    if not test.is_file():
        cmd = [sys.executable, "-m", "ups_jax.train", "--config", config, "--data", str(data), "--workdir",
               str(workdir), f"--config.seed={seed}", f"--config.stages.fno.steps={updates}",
               f"--config.stages.fno.eval_every={eval_every}", f"--config.stages.fno.log_every={eval_every}",
               "--config.logging.progress=False"] + [f"--config.{o}" for o in overrides]
        _run(cmd, f"the in-project run into {workdir}", cwd=ROOT)
    result = json.loads(test.read_text())
    walls = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    stage_end = [r for r in walls if r.get("kind") == "stage_end"]
    return {"nrmse": result["model"]["nrmse"], "train_wall_s": stage_end[-1].get("wall_s") if stage_end else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=128, help="optimizer updates for both (default 128)")
    p.add_argument("--eval-every", type=int, default=32, help="validation cadence in updates (default 32)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--data", type=Path, default=None,
                   help="PDEBench-layout HDF5 file (default: the config's default dataset, generated if missing)")
    p.add_argument("--config", default="configs/fno_burgers.py:cpu")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for the in-project half (without --config.)")
    p.add_argument("--tag", default="", help="name of this in-project variant's run directory (default: the overrides)")
    p.add_argument("--torch-python", default="", help="interpreter with torch + pdebench for PDEBench's half")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch.set_num_threads for PDEBench's half (0 = torch's default; 1 is faster on a busy box)")
    p.add_argument("--skip-jax", action="store_true", help="run only PDEBench's half")
    p.add_argument("--workdir-root", type=Path, default=ROOT / "runs" / "fno_faithful")
    p.add_argument("--pdebench-torch", action="store_true", help=argparse.SUPPRESS)   # the child process
    p.add_argument("--split-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.pdebench_torch:
        pdebench_torch(args.data, json.loads(args.split_file.read_text()), args.updates, args.eval_every,
                       args.seeds[0], args.out, args.torch_threads)
        return 0

    sys.path.insert(0, str(ROOT))
    if args.data is None:
        from ups_jax.config import load_config
        from ups_jax.data.default import ensure_default_data

        args.data = Path(ensure_default_data(load_config(args.config))[0])
    data = args.data.absolute()
    split = _split(data)
    tag = args.tag or ("_".join(o.replace("stages.fno.", "").replace("model.fno.", "") for o in args.override)
                       or "config")
    rows = []
    for seed in args.seeds:
        if args.torch_python:
            r = run_torch(args.torch_python, data, split, args.updates, args.eval_every, seed, args.workdir_root,
                          args.torch_threads)
            rows.append(("PDEBench FNO1d + fno/train.py (" + r["what"] + ")", seed, r))
        if not args.skip_jax:
            r = run_jax(args.config, data, args.updates, args.eval_every, seed, args.override,
                        args.workdir_root / tag / f"seed{seed}")
            rows.append((f"ups_jax {args.config} {' '.join(args.override)}".strip(), seed, r))
    print(f"\n{args.updates} updates, batch {BATCH}; data {data.name} (train/val/test "
          f"{'/'.join(str(len(split[k])) for k in ('train', 'val', 'test'))}); test nRMSE, per-trajectory mean, "
          f"31 predicted steps")
    print("| model | seed | test nRMSE | train wall (s) |\n|---|---|---|---|")
    for what, seed, r in rows:
        wall = f"{r['train_wall_s']:.0f}" if r.get("train_wall_s") else "—"
        print(f"| {what} | {seed} | {r['nrmse']:.4f} | {wall} |")
    return 0


if __name__ == "__main__":
    if "--pdebench-torch" in sys.argv:   # the child under the torch interpreter: nothing from ups_jax
        sys.exit(main())
    sys.path.insert(0, str(ROOT))
    from ups_jax.errors import run_cli

    sys.exit(run_cli(main))
