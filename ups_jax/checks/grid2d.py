"""Architecture checks of a UPS model on a 2-D grid (``data.dims = 2``): the √T x √T token grid must tile the grid,
and the positional frequencies must stay below each axis's Nyquist frequency."""

from __future__ import annotations

from ups_jax.checks.report import Checks


def check_tokens_2d(cfg, c: Checks, grid: tuple[int, int]) -> None:
    from ups_jax.data.grids import token_grid

    A, m, dec = "architecture", cfg.model, cfg.model.decoder
    try:
        tg = token_grid(int(m.latent_tokens), 2)
    except ValueError as e:
        c.add(A, "tokens divide grid", False, str(e), "use a square model.latent_tokens (16, 64, 256, ...)")
        return
    shown = "x".join(map(str, grid))
    divides = all(n % t == 0 for n, t in zip(grid, tg))
    c.add(A, "tokens divide grid", divides,
          f"grid {shown} (after data.reduced_resolution) is not divisible by the {tg[0]}x{tg[1]} token grid of "
          f"model.latent_tokens={m.latent_tokens}", "choose a square model.latent_tokens whose root divides each axis",
          passed=f"grid {shown} = {tg[0]}x{tg[1]} tokens of {grid[0] // tg[0]}x{grid[1] // tg[1]} cells"
          if divides else "")
    if tuple(dec.local_freqs):
        c.add(A, "local readout 2-D", False, f"model.decoder.local_freqs={tuple(dec.local_freqs)} is 1-D only",
              "use model.decoder.local_mlp in 2-D and local_freqs=()")
    nyquist = min(grid) / 2
    for key, freqs in (("model.encoder.fourier_freqs", m.encoder.fourier_freqs),
                       ("model.decoder.fourier_freqs", dec.fourier_freqs)):
        if len(freqs):
            c.add(A, f"{key.split('.')[1]} Nyquist", max(freqs) < nyquist,
                  f"{key} max={max(freqs)} is at or above the grid's Nyquist frequency {nyquist:g}",
                  "drop frequencies at or above half the grid size", severity="warning",
                  passed=f"{key} max={max(freqs)} < Nyquist {nyquist:g}")
