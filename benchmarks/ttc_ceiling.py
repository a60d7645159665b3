"""How much can test-time search over the field corrector's candidates gain at all? The greedy-oracle ceiling.

The field TTC (inference/field_ttc.py) chooses, at every step, among the corrections scaled by α_n (the trained
correction is α = 1). This benchmark rolls out the same candidates and chooses per step and trajectory by

* ``fixed``:  α = 1 always — the corrected rollout (the table's ``+corrector`` row; printed as a check);
* ``reward``: the physics reward of inference/rewards.py (mass, energy, TV; ``ttc.weights``), greedy (beam 1,
  horizon 1) — what the search can see;
* ``oracle``: the candidate nearest the true next frame (L2) — what no reward can beat in a greedy search; it
  reads the test split's future, so it is a ceiling, not a method;
* ``solverN`` (``--solver-cells N``): a reward that knows more physics than the penalties — the candidate nearest
  (L2, on N cells) the built-in N-cell solver's step from the parent frame (both restricted to N cells by cell
  averages; the solver of data/burgers.py with the data file's flux scale).

If the oracle's full-horizon nRMSE is less than 10 % below ``fixed``, no reward, however good, makes a greedy
search over these candidates pay issue 19's 10 %: the candidate set, not the reward, is what to change. Every
rollout is scored by the evaluation's own ``evaluate`` (31-step protocol and full horizon, per-trajectory nRMSE,
test split), so the numbers are the tables' numbers.

    .venv/bin/python benchmarks/ttc_ceiling.py RUN_SEED0 RUN_SEED1 RUN_SEED2 [--alphas 0,0.5,1,1.5] \
        [--solver-cells 64] [--out PREFIX]

The runs must have trained the field corrector (``model.corrector.kind='field'``). Prints a markdown table (per
run and mean ± std over runs of the change against ``fixed``); ``--out`` writes PREFIX.json / PREFIX.md.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy import _pm, mean_std  # noqa: E402

from ups_jax.cli import ArgumentParser  # noqa: E402
from ups_jax.errors import UserError, run_cli  # noqa: E402

CHOICES = ("fixed", "reward", "oracle")   # and "solver<N>"


def _solver_cells(choice: str) -> int | None:
    return int(choice[len("solver"):]) if choice.startswith("solver") and choice[len("solver"):].isdigit() else None


class ChoiceRollout:
    """The evaluation's rollout interface (physical frames in and out) over the scaled-correction candidates,
    chosen per step by ``choice``. The oracle reads the future from ``traj`` (the frames ``evaluate`` scores): the
    rows of a call are ``traj[first_index : first_index + n]``, the given frames their first ``G``."""

    def __init__(self, model, *, norm: dict, x01, alphas: Sequence[float], choice: str, weights: dict,
                 traj: np.ndarray, domain_length: float = 2.0, advective_scale: float | None = None):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from ups_jax.data import burgers
        from ups_jax.inference.rewards import reward
        from ups_jax.models.field_corrector import advance, decode_grid

        cells = _solver_cells(choice)
        if choice not in CHOICES and cells is None:
            raise ValueError(f"choice {choice!r}: one of {CHOICES} or solver<N>")
        X = traj.shape[-1]
        if cells is not None and (cells < 1 or X % cells or advective_scale is None):
            raise ValueError(f"{choice}: needs N dividing the grid's {X} cells and the data's advective_scale")
        self.context_frames = int(getattr(model, "context_frames", 1))
        self.mean, self.std = float(norm["mean"]), float(norm["std"])
        self.traj, self.choice = traj, choice
        graphdef, self.state = nnx.split(model)
        x01 = jnp.asarray(x01, jnp.float32)
        a = jnp.asarray(np.asarray(alphas, np.float32))
        one = int(np.argmin(np.abs(np.asarray(alphas) - 1.0)))
        mean, std = self.mean, self.std

        def solver_step(u, nu1, dt1):   # (N,) physical → the N-cell solve over one frame interval dt1
            frames, _ = burgers._solve_one(u, nu1, jnp.float32(domain_length / cells), dt1[None], cfl=burgers.CFL,
                                           max_steps_per_save=1_000_000, advective_scale=float(advective_scale))
            return frames[-1]

        @functools.partial(jax.jit, static_argnames=("steps",))
        def run(state, u_ctx, nu, dt, target, steps: int):
            """u_ctx (B, h, X), target (B, steps, X) normalised → (û (B, steps, X), chosen α (B, steps))."""
            m = nnx.merge(graphdef, state)
            B = u_ctx.shape[0]
            ref = jnp.mean(u_ctx[:, -1] * std + mean, axis=-1)[:, None]

            def body(carry, tgt):
                z, ctx = carry
                zp = m.step(z, dt, nu)
                d = decode_grid(m, zp, x01)
                cand = d[:, None] + a[None, :, None] * m.corrector.correction(ctx[:, -1], d, nu)[:, None]
                if choice == "oracle":
                    i = jnp.argmin(jnp.sum(jnp.square(cand - tgt[:, None]), -1), axis=1)
                elif cells is not None:           # the N-cell solver's step from the parent, on N cells
                    coarse = lambda u: u.reshape(u.shape[:-1] + (cells, X // cells)).mean(-1)
                    solved = jax.vmap(solver_step)(coarse(ctx[:, -1] * std + mean), nu, dt)
                    i = jnp.argmin(jnp.sum(jnp.square(coarse(cand * std + mean) - solved[:, None]), -1), axis=1)
                elif choice == "reward":
                    r = reward(cand * std + mean, (ctx[:, -1] * std + mean)[:, None], ref, weights)
                    i = jnp.argmax(r, axis=1)
                else:
                    i = jnp.full((B,), one)
                u_new = cand[jnp.arange(B), i]
                z, ctx = advance(m, zp, ctx, x01, u_new)
                return (z, ctx), (u_new, a[i])

            z0 = m.encode_frames(u_ctx, x01)
            _, (us, chosen) = jax.lax.scan(body, (z0, u_ctx), jnp.swapaxes(target, 0, 1), length=int(steps))
            return jnp.swapaxes(us, 0, 1), jnp.swapaxes(chosen, 0, 1)

        self._run = run
        self.chosen: list[np.ndarray] = []

    def __call__(self, given, nu, dt, steps: int, *, first_index: int = 0) -> np.ndarray:
        import jax.numpy as jnp

        given = np.asarray(given)
        n, G = given.shape[:2]
        target = self.traj[first_index:first_index + n, G:G + steps]
        if target.shape[:2] != (n, steps) or not np.array_equal(self.traj[first_index:first_index + n, :G], given):
            raise ValueError("ChoiceRollout: the given frames are not rows of the trajectories it was built on")
        norm = lambda a: jnp.asarray((a.astype(np.float32) - self.mean) / self.std)
        f32 = lambda v: jnp.asarray(np.broadcast_to(np.asarray(v, np.float32), (n,)))
        us, chosen = self._run(self.state, norm(given[:, G - self.context_frames:]), f32(nu), f32(dt),
                               norm(target), steps=int(steps))
        self.chosen.append(np.asarray(chosen))
        return np.asarray(us) * self.std + self.mean


def measure(workdir: Path, alphas: Sequence[float], choices: Sequence[str] = CHOICES) -> dict:
    """One run: {choice: {'nrmse': 31-step, 'nrmse_full': full horizon, 'mean_alpha': mean chosen α}} plus the
    run's own ``+corrector`` row (eval/table.json), which ``fixed`` must reproduce."""
    from ups_jax.eval.evaluate import evaluate
    from ups_jax.training.restore import load_run

    cfg, data, model, _, _ = load_run(workdir)
    if getattr(getattr(model, "corrector", None), "kind", None) != "field":
        raise UserError(f"{workdir}: its corrector is not the field kind (model.corrector.kind='field'); the "
                        f"ceiling is of the field TTC's candidates")
    traj, nu = data.trajectories("test", cfg.eval.max_trajectories)
    weights = {k: float(v) for k, v in dict(cfg.ttc.weights).items()}
    scales = {f.get("advective_scale") for f in data.dataset.fingerprint()["files"]}
    scale = scales.pop() if len(scales) == 1 else None
    for c in choices:
        n = _solver_cells(c)
        if n is not None and (scale is None or traj.shape[-1] % n):
            raise UserError(f"{workdir}: --solver-cells {n} needs a cell count dividing the grid's "
                            f"{traj.shape[-1]} cells and data made by ups_jax.data.generate (its file records "
                            f"advective_scale; got {sorted(map(str, scales)) or 'none'})")
    out = {"run": str(workdir), "seed": int(cfg.seed), "alphas": [float(a) for a in alphas],
           "n_trajectories": int(len(traj)), "choices": {}}
    for choice in choices:
        rollout = ChoiceRollout(model, norm=data.norm, x01=data.x01, alphas=alphas, choice=choice,
                                weights=weights, traj=traj, domain_length=data.Lx, advective_scale=scale)
        res, _ = evaluate(rollout, traj, nu, dt=float(data.dataset.dt), domain_length=data.Lx,
                          initial_step=cfg.eval.initial_step, batch_size=cfg.eval.batch_size,
                          corr_threshold=cfg.eval.corr_threshold)
        out["choices"][choice] = {"nrmse": res["model"]["nrmse"], "nrmse_full": res["full_horizon"]["model"]["nrmse"],
                                  "mean_alpha": float(np.mean(np.concatenate([c.ravel() for c in rollout.chosen])))}
    table = Path(workdir) / "eval" / "table.json"
    if table.exists():
        rows = {r["row"]: r for r in json.loads(table.read_text())["rows"]}
        if "+corrector" in rows:
            out["table_corrector_nrmse"] = rows["+corrector"]["protocol"]["nrmse"]
    return out


def summarize(runs: list[dict]) -> dict:
    choices = list(runs[0]["choices"])
    rows = []
    for c in choices:
        per = [r["choices"][c] for r in runs]
        fixed = [r["choices"]["fixed"] for r in runs] if "fixed" in runs[0]["choices"] else None
        row = {"choice": c, "nrmse": mean_std([p["nrmse"] for p in per]),
               "nrmse_full": mean_std([p["nrmse_full"] for p in per]),
               "mean_alpha": mean_std([p["mean_alpha"] for p in per])}
        if fixed and c != "fixed":
            row["change"] = mean_std([p["nrmse"] / f["nrmse"] - 1 for p, f in zip(per, fixed)])
            row["change_full"] = mean_std([p["nrmse_full"] / f["nrmse_full"] - 1 for p, f in zip(per, fixed)])
        rows.append(row)
    return {"runs": runs, "rows": rows}


def _pct(ms) -> str:
    if ms is None:
        return ""
    return f"{100 * ms['mean']:+.1f}" + ("" if ms["std"] is None else f" ± {100 * ms['std']:.1f}") + " %"


def markdown(s: dict) -> str:
    n = len(s["runs"])
    lines = [f"Candidates α = {s['runs'][0]['alphas']}; {n} run(s), test split, "
             f"{s['runs'][0]['n_trajectories']} trajectories (mean ± std over runs).", "",
             "| choice | 31-step nRMSE | full horizon | Δ 31-step vs fixed | Δ full vs fixed | mean chosen α |",
             "|---|---|---|---|---|---|"]
    for r in s["rows"]:
        lines.append(f"| {r['choice']} | {_pm(r['nrmse'])} | {_pm(r['nrmse_full'])} | {_pct(r.get('change'))} | "
                     f"{_pct(r.get('change_full'))} | {_pm(r['mean_alpha'], 3)} |")
    choices = list(s["runs"][0]["choices"])
    lines += ["", "31-step / full-horizon nRMSE per run; in brackets the run's own `+corrector` row (eval/table.json), "
              "which `fixed` reproduces:", "",
              "| run | " + " | ".join(choices) + " |", "|---|" + "---|" * len(choices)]
    for r in s["runs"]:
        c, check = r["choices"], r.get("table_corrector_nrmse")
        cells = [f"{c[k]['nrmse']:.4f} / {c[k]['nrmse_full']:.4f}" for k in choices]
        if check is not None and "fixed" in c:
            cells[choices.index("fixed")] += f" ({check:.4f})"
        lines.append(f"| {r['run']} (seed {r['seed']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="finished run directories with the field corrector (one per seed)")
    p.add_argument("--alphas", default="0,0.5,1,1.5",
                   help="candidate correction strengths, comma-separated (default: the 4-candidate presets')")
    p.add_argument("--solver-cells", default="", help="also choose by an N-cell solver step (comma-separated N)")
    p.add_argument("--out", default="", help="write PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    try:
        alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError:
        raise UserError(f"--alphas {args.alphas!r}: give numbers separated by commas, e.g. 0,0.5,1,1.5") from None
    if not alphas:
        raise UserError("--alphas is empty: give at least one correction strength, e.g. 1")
    try:
        solvers = [f"solver{int(n)}" for n in args.solver_cells.split(",") if n.strip()]
    except ValueError:
        raise UserError(f"--solver-cells {args.solver_cells!r}: give cell counts separated by commas, "
                        f"e.g. 32,64") from None
    for w in args.runs:
        if not (Path(w) / "config.json").is_file():
            raise UserError(f"{w}: not a finished run directory (no config.json); pass the run's workdir")
    s = summarize([measure(Path(w), alphas, CHOICES + tuple(solvers)) for w in args.runs])
    md = markdown(s)
    print(md)
    if args.out:
        from ups_jax.files import write_json_atomic, write_text_atomic

        write_json_atomic(Path(args.out + ".json"), s)
        write_text_atomic(Path(args.out + ".md"), md)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
