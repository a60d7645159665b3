"""Is the in-project FNO baseline as fast as PDEBench's own? One training step of PDEBench's FNO1d recipe on
1D Burgers (modes 12, width 20, 10 given frames + the grid, batch 50, the loss summed over the 31 rolled-out
steps, Adam/AdamW with weight decay 1e-4), timed the same way in both frameworks:

    .venv/bin/python benchmarks/fno_speed.py                          # ups_jax's FNO1d (JAX, flax.nnx)
    PYTHON_WITH_TORCH benchmarks/fno_speed.py --pdebench-torch        # PDEBench's FNO1d (PyTorch)

The PyTorch half loads ``pdebench/models/fno/fno.py`` from the installed ``pdebench`` wheel (MIT; a test-only
dependency of this project, installed without its dependencies) and needs only ``torch`` and ``numpy``: PyTorch
is not a project dependency, so run it with any interpreter that has them. Its training step is PDEBench's
``fno/train.py`` loop (``training_type='autoregressive'``): 31 calls, each appending its output to the input window.

The equal-budget comparison of docs/benchmarks.md gives the FNO as many steps as fit in UPS's training time; this
script checks that the budget is not shrunk by a slow FNO implementation. Prints ms per step (median of --steps
timed steps after 2 warm-up steps, random data: the speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

B, X, GIVEN, FRAMES = 50, 256, 10, 41       # PDEBench Burgers protocol at 256 cells: 10 given, 31 rolled out


# rollout_modes._timed does the same, but this file must also run under an interpreter with only torch (no jax,
# no ups_jax), so it imports nothing from the project at module level.
def time_steps(step, n: int) -> float:
    for _ in range(2):
        step()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def jax_step():
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ups_jax.models.fno import FNO1d
    from ups_jax.training.losses import make_fno_loss

    model = FNO1d(context_frames=GIVEN, modes=12, width=20, rngs=nnx.Rngs(0))
    loss_fn = make_fno_loss(x01=jnp.linspace(0, 1, X, endpoint=False), rollout_steps=FRAMES - GIVEN,
                            context_frames=GIVEN)
    tx = optax.adamw(1e-3, weight_decay=1e-4)
    graphdef, params = nnx.split(model)
    opt_state = tx.init(params)
    batch = {"u": jax.random.normal(jax.random.PRNGKey(0), (B, FRAMES, X)), "dt": jnp.full((B,), 0.05),
             "nu": jnp.full((B,), 0.01)}

    @jax.jit
    def train_step(params, opt_state):
        def loss(p):
            return loss_fn(nnx.merge(graphdef, p), batch, jax.random.PRNGKey(1))[0]

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    state = [params, opt_state]

    def step():
        state[0], state[1], value = train_step(*state)
        jax.block_until_ready(value)

    return step, f"ups_jax FNO1d (jax {jax.__version__}, {jax.devices()[0].platform})"


def torch_step():
    import importlib.util

    import torch

    spec = importlib.util.find_spec("pdebench")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the pdebench wheel is not installed for this interpreter "
                 "(pip install --no-deps pdebench==0.1.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "fno" / "fno.py"
    module_spec = importlib.util.spec_from_file_location("pdebench_fno", path)   # without pdebench/__init__
    fno = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(fno)
    torch.manual_seed(0)
    model = fno.FNO1d(num_channels=1, modes=12, width=20, initial_step=GIVEN)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    data = torch.randn(B, X, FRAMES, 1)
    grid = torch.linspace(0, 1, X).reshape(1, X, 1).repeat(B, 1, 1)
    mse = torch.nn.MSELoss(reduction="mean")

    def step():                                   # pdebench/models/fno/train.py, autoregressive branch
        xx = data[..., :GIVEN, :]
        loss = 0
        for t in range(GIVEN, FRAMES):
            im = model(xx.reshape(B, X, -1), grid)
            loss += mse(im.reshape(B, -1), data[..., t:t + 1, :].reshape(B, -1))
            xx = torch.cat((xx[..., 1:, :], im), dim=-2)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, f"PDEBench FNO1d (torch {torch.__version__}, {torch.get_num_threads()} threads)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pdebench-torch", action="store_true", help="time PDEBench's PyTorch FNO1d instead")
    p.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    args = p.parse_args(argv)
    step, what = torch_step() if args.pdebench_torch else jax_step()
    print(f"{what}: {1e3 * time_steps(step, args.steps):.0f} ms per training step "
          f"(batch {B}, {X} cells, {GIVEN} given frames, {FRAMES - GIVEN}-step rollout loss)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
