"""Probe: is the operator's one-step error learnable in *physical* space, where the latent corrector learns nothing?

    .venv/bin/python benchmarks/probes/field_corrector_probe.py --workdir RUN [--steps 2000] [--split val]

On a finished run (frozen encoder, operator, decoder) this fits a small periodic 1D CNN (5 convolutions of
width 64, kernel 5, residual, log ν as an input channel; ~60 k parameters) to the physical one-step residual
r = u_{t+1} − D(F(E(u_t))) from the pair (u_t, D(F(E(u_t)))) on every (trajectory, frame) pair of the train split
(true input states only: no pushforward), by plain regression (Adam, cosine schedule, batch 64). It reports on
``--split`` (default val; model selection's split, the test split stays untouched):

- the fraction of the residual's energy the CNN explains (1 − ‖r − r̂‖² / ‖r‖²) and the one-step nRMSE before/after;
- rollouts from the protocol's last given frame (the run's ``eval.initial_step``) over 31 steps, per-step nRMSE
  (physical units, mean over trajectories): the operator alone (latent rollout), the operator + CNN correction
  with the corrected field carried to the next step (z_{t+1} = E(û_{t+1}), the CNN reads û_{t+1}), and the same
  with the state reduced to the latent (the next input and the output are D(E(û)): the codec round trip).

This is a probe, not a stage: it shows which design a corrector that helps needs (docs/benchmarks.md).
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ups_jax.cli import ArgumentParser  # noqa: E402
from ups_jax.errors import UserError, run_cli  # noqa: E402
from ups_jax.eval.metrics import per_sample_nrmse  # noqa: E402

STEPS_SHOWN = (1, 2, 4, 8, 16, 31)



def make_cnn(width: int = 64, kernel: int = 5, depth: int = 5, seed: int = 0):
    """The probe's network: [u_t, D(z̃)] → the residual (the same FieldCNN the physical-space corrector uses)."""
    from flax import nnx

    from ups_jax.models.field_cnn import FieldCNN

    return FieldCNN(num_inputs=2, width=width, kernel=kernel, depth=depth, dims=1, rngs=nnx.Rngs(seed))


def probe(workdir: Path, steps: int, split: str, batch: int = 64, lr: float = 1e-3, seed: int = 0) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from ups_jax.training.restore import load_run

    cfg, data, model, _, _ = load_run(workdir)
    x01, dt = jnp.asarray(data.x01), float(data.dataset.dt)
    mean, std = data.norm["mean"], data.norm["std"]

    @nnx.jit
    def predicted(m, u, nu):               # D(F(E(u_t))) for every frame but the last: (B, T-1, X)
        b, t, x = u.shape
        z = m.encode_frames(u[:, :-1].reshape(-1, 1, x), x01)
        zp = m.step(z, jnp.full((z.shape[0],), dt), jnp.repeat(nu, t - 1))
        return m.decode(zp, x01)[..., 0].reshape(b, t - 1, x)

    def pairs(which):
        traj, nu = data.trajectories(which, 0)
        u = ((traj - mean) / std).astype(np.float32)
        pred = np.concatenate([np.asarray(predicted(model, jnp.asarray(u[i:i + 32]), jnp.asarray(nu[i:i + 32])))
                               for i in range(0, len(u), 32)])
        x = u.shape[-1]
        return (np.stack([u[:, :-1], pred], -1).reshape(-1, x, 2), (u[:, 1:] - pred).reshape(-1, x),
                np.repeat(nu, u.shape[1] - 1).astype(np.float32), u, nu)

    train, held = pairs("train"), pairs(split)
    net = make_cnn(seed=seed)
    opt = nnx.Optimizer(net, optax.adamw(optax.cosine_decay_schedule(lr, steps, 0.05)), wrt=nnx.Param)

    @nnx.jit
    def train_step(net, opt, fields, target, nu):
        loss, grads = nnx.value_and_grad(lambda n: jnp.mean(jnp.square(n(fields, nu) - target)))(net)
        opt.update(net, grads)
        return loss

    @nnx.jit
    def sums(net, fields, target, nu):
        return jnp.sum(jnp.square(net(fields, nu) - target)), jnp.sum(jnp.square(target)), \
            jnp.sum(jnp.square(fields[..., 1] + target))

    rng, t0 = np.random.default_rng(seed), time.time()
    for _ in range(steps):
        idx = rng.integers(0, len(train[0]), batch)
        train_step(net, opt, *(jnp.asarray(a[idx]) for a in train[:3]))
    fit_s = time.time() - t0
    err = np.zeros(3)
    for i in range(0, len(held[0]), 512):
        err += np.array([float(v) for v in sums(net, *(jnp.asarray(a[i:i + 512]) for a in held[:3]))])

    @partial(nnx.jit, static_argnums=(4, 5))
    def rollout(m, net, u0, nu, n_steps, mode):   # mode 0: operator; 1: field carried; 2: codec round trip
        z, cur, out = m.encode_frames(u0[:, None], x01), u0, []
        dtb = jnp.full((u0.shape[0],), dt)
        for _ in range(n_steps):
            zp = m.step(z, dtb, nu)
            f = m.decode(zp, x01)[..., 0]
            if mode:
                f = f + net(jnp.stack([cur, f], -1), nu)
                zp = m.encode_frames(f[:, None], x01)
                if mode == 2:
                    f = m.decode(zp, x01)[..., 0]
            z, cur = zp, f
            out.append(f)
        return jnp.stack(out, 1)

    u, nu = held[3], held[4]
    h0, n = int(cfg.eval.initial_step), min(31, held[3].shape[1] - int(cfg.eval.initial_step))
    true = u[:, h0:h0 + n] * std + mean
    rows = {}
    for mode, name in enumerate(("operator", "+ CNN, field carried", "+ CNN, latent state only (D(E(û)))")):
        pred = np.asarray(rollout(model, net, jnp.asarray(u[:, h0 - 1]), jnp.asarray(nu), n, mode)) * std + mean
        per_step = per_sample_nrmse(pred, true).mean(0)
        rows[name] = [float(v) for v in per_step]
    return {"workdir": str(workdir), "split": split, "fit_steps": steps, "fit_s": fit_s,
            "params": int(sum(np.size(v) for v in jax.tree.leaves(nnx.state(net, nnx.Param)))),
            "explained": float(1 - err[0] / err[1]),
            "one_step_nrmse_normalised": {"operator": float(np.sqrt(err[1] / err[2])),
                                          "+ CNN": float(np.sqrt(err[0] / err[2]))},
            "rollout_nrmse_per_step": rows}


def markdown(r: dict) -> str:
    o = r["one_step_nrmse_normalised"]
    lines = [f"{Path(r['workdir']).name}, {r['split']} split: CNN ({r['params']:,} parameters, {r['fit_steps']} "
             f"steps, {r['fit_s']:.0f} s) explains {100 * r['explained']:.1f} % of the one-step residual's energy; "
             f"one-step error (normalised units) {o['operator']:.4f} → {o['+ CNN']:.4f}.", "",
             "| rollout | mean nRMSE | " + " | ".join(f"step {s}" for s in STEPS_SHOWN) + " |",
             "|---" * (len(STEPS_SHOWN) + 2) + "|"]
    for name, steps in r["rollout_nrmse_per_step"].items():
        lines.append(f"| {name} | {np.mean(steps):.4f} | "
                     + " | ".join(f"{steps[s - 1]:.3f}" if s <= len(steps) else "—" for s in STEPS_SHOWN) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    p = ArgumentParser(prog="benchmarks/probes/field_corrector_probe.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, type=Path, help="a finished run")
    p.add_argument("--steps", type=int, default=2000, help="CNN fitting steps")
    p.add_argument("--split", default="val", choices=("val", "test"))
    args = p.parse_args(argv)
    if args.steps < 1:
        raise UserError(f"--steps={args.steps} must be >= 1")
    print(markdown(probe(args.workdir, args.steps, args.split)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
