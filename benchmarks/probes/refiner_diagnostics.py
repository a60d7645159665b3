"""What the trained corrector does to a finished run, in numbers (physical space unless said otherwise):

    .venv/bin/python benchmarks/probes/refiner_diagnostics.py WORKDIR [WORKDIR ...] [--split test]

Per run:
- rollout nRMSE per predicted step (the run's protocol, PDEBench's 10 given frames in :cpu; mean over trajectories) of the operator alone,
  the operator + corrector (K + 1 calls per step) and the corrector's level-0 call alone (its regression of the
  residual, no refinement levels);
- one step from every true state of the split: nRMSE of D(F(E(u_t))), of the corrected D(z̃ + r̂), and of D(E(u_{t+1}))
  — the decoded encoder's view of the true next frame, i.e. the best a perfect latent corrector could reach;
- in latent space: RMS of the residual z* − z̃ the corrector is trained on, of its correction r̂, of what remains
  z* − z̃ − r̂, and the fraction of the residual's energy it explains (1 − remaining² / residual²; ≤ 0: none).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ups_jax.cli import ArgumentParser  # noqa: E402
from ups_jax.errors import UserError, run_cli  # noqa: E402

# (N, steps) per trajectory and step, normalised by the true frame's RMS (PDEBench nRMSE per step)
from ups_jax.eval.metrics import per_sample_nrmse as _nrmse  # noqa: E402

STEPS_SHOWN = (1, 2, 4, 8, 16, 31)


def diagnose(workdir: Path, split: str, batch: int = 256) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ups_jax.eval.rollout import Rollout
    from ups_jax.training.restore import load_run

    cfg, data, model, _, _ = load_run(workdir)
    net = getattr(model, "corrector", None)
    if net is None:
        raise UserError(f"{workdir}: this run has no corrector (configure model.corrector and train its stage)")
    traj, nu = data.trajectories(split, 0)
    dt = float(data.dataset.dt)
    h0 = int(cfg.eval.initial_step)              # the run's protocol (PDEBench: 10 given frames)
    given, true = traj[:, :h0], traj[:, h0:]
    full_levels = net.levels
    per_step = {}
    for name, refine, levels in (("operator", "none", full_levels), ("+corrector", "corrector", full_levels),
                                 ("corrector level 0 only", "corrector", (0,))):
        net.levels = levels          # static: the rollout below is traced with it
        try:
            r = Rollout(model, norm=data.norm, x01=data.x01, batch_size=min(cfg.eval.batch_size, len(traj)),
                        refine=refine)
            per_step[name] = _nrmse(r(given, nu, dt, true.shape[1]), true).mean(0)
        finally:
            net.levels = full_levels

    # one step from every true state (normalised units; the ratios are scale-free)
    u = ((traj - data.norm["mean"]) / data.norm["std"]).astype(np.float32)
    n, t, x = u.shape
    cur, nxt = u[:, :-1].reshape(-1, 1, x), u[:, 1:].reshape(-1, x)
    nus = np.repeat(nu, t - 1).astype(np.float32)
    x01 = jnp.asarray(data.x01)

    @nnx.jit
    def one_step(m, uc, un, nu_b, key):
        dtb = jnp.full((uc.shape[0],), dt, jnp.float32)
        z, z_true = m.encode_frames(uc, x01), m.encode_frames(un[:, None], x01)
        z_pred = m.step(z, dtb, nu_b)
        z_corr = m.corrector(z, z_pred, dtb, nu_b, key)
        fields = [m.decode(v, x01)[..., 0] for v in (z_pred, z_corr, z_true)]
        sq = lambda a: jnp.sum(jnp.square(a))            # noqa: E731
        return (jnp.stack([sq(f - un) for f in fields] + [sq(un)]),
                jnp.stack([sq(z_true - z_pred), sq(z_corr - z_pred), sq(z_true - z_corr)]), z.size)

    err, lat, count = np.zeros(4), np.zeros(3), 0
    for i in range(0, len(cur), batch):
        e, l_, c = one_step(model, jnp.asarray(cur[i:i + batch]), jnp.asarray(nxt[i:i + batch]),
                            jnp.asarray(nus[i:i + batch]), jax.random.key(i))
        err, lat, count = err + np.asarray(e), lat + np.asarray(l_), count + int(c)
    rel = np.sqrt(err[:3] / err[3])
    rms = np.sqrt(lat / count)
    return {"workdir": str(workdir), "split": split, "n_trajectories": int(n), "refine_calls": len(full_levels),
            "rollout_nrmse": {k: {"mean": float(v.mean()), "per_step": [float(a) for a in v]}
                              for k, v in per_step.items()},
            "one_step_rel_error": {"operator": float(rel[0]), "+corrector": float(rel[1]),
                                   "decoded encoder of the truth": float(rel[2])},
            "latent_rms": {"residual": float(rms[0]), "correction": float(rms[1]), "remaining": float(rms[2])},
            "residual_explained": float(1 - lat[2] / lat[0])}


def markdown(results: Sequence[dict]) -> str:
    lines = ["| run | rollout | mean nRMSE | " + " | ".join(f"step {s}" for s in STEPS_SHOWN) + " |",
             "|---" * (len(STEPS_SHOWN) + 3) + "|"]
    for r in results:
        for name, v in r["rollout_nrmse"].items():
            steps = v["per_step"]
            lines.append(f"| {Path(r['workdir']).name} | {name} | {v['mean']:.4f} | "
                         + " | ".join(f"{steps[s - 1]:.3f}" if s <= len(steps) else "—" for s in STEPS_SHOWN) + " |")
    lines += ["", "| run | one step: operator | + corrector | decoded E(truth) | latent residual RMS | correction "
                  "RMS | remaining RMS | residual explained |", "|---" * 8 + "|"]
    for r in results:
        o, lr = r["one_step_rel_error"], r["latent_rms"]
        lines.append(f"| {Path(r['workdir']).name} | {o['operator']:.4f} | {o['+corrector']:.4f} | "
                     f"{o['decoded encoder of the truth']:.4f} | {lr['residual']:.4f} | {lr['correction']:.4f} | "
                     f"{lr['remaining']:.4f} | {100 * r['residual_explained']:+.1f} % |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    p = ArgumentParser(prog="benchmarks/probes/refiner_diagnostics.py", description=__doc__.split("\n\n")[0])
    p.add_argument("workdirs", nargs="+", type=Path, help="finished runs with a trained corrector")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    args = p.parse_args(argv)
    results = [diagnose(w, args.split) for w in args.workdirs]
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
