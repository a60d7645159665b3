"""The malformed-input corpus: every command line (train, evaluate, driver *, data.generate) fed bad input.

Each case is one row of ``CASES``: the command, its arguments (``{name}`` = a file of the ``corpus`` fixture),
the exit code and words the one error line must contain. Every case asserts: exactly one ``error:`` line, the last
on stderr, containing the words; no traceback; exit code 2 for bad input (1 where the command documents it: a
failed check of ``driver validate``/``validate-data``); and every file of the corpus byte-identical afterwards
(nothing overwritten, nothing created). ``report`` rows are the checking commands' failure reports (a table on
stdout, exit 1). Add a case by adding a row.

The commands run in-process through ``errors.run_cli`` — exactly what ``python -m ...`` runs — so the corpus costs
seconds; the full-disk case runs in a subprocess (it limits the file size the process may write).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from run_fixtures import stage, write_run

from ups_jax.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]
CFG = str(ROOT / "configs" / "burgers32.py")
MAINS = {"train": "ups_jax.train", "evaluate": "ups_jax.evaluate", "driver": "ups_jax.driver.__main__",
         "generate": "ups_jax.data.generate"}


@dataclasses.dataclass
class Case:
    id: str
    cli: str                       # key of MAINS
    argv: list[str]
    code: int
    words: tuple[str, ...]         # in the error line (or, for kind='report', on stdout)
    kind: str = "error"            # 'error': one line on stderr; 'report': a failing check report on stdout


T = f"{CFG}:test"
TRAIN = ["--config", T, "--workdir", "{new}"]
GEN = ["burgers1d", "--nu", "0.01", "--samples", "2", "--nx", "16"]
CASES = [
    # ---- train: config
    Case("train/no-config", "train", ["--workdir", "{new}"], 2, ("missing --config",)),
    Case("train/config-not-found", "train", ["--config", "{afile}.py"], 2, ("config file not found",)),
    Case("train/bad-config-file", "train", ["--config", "{pyfile}"], 2, ("cannot import config file",)),
    Case("train/unknown-variant", "train", ["--config", f"{CFG}:gpu"], 2, ("unknown variant 'gpu'",)),
    Case("train/unknown-key", "train", TRAIN + ["--config.model.latnt_dim=3"], 2,
         ("unknown config key 'model.latnt_dim'", "did you mean 'model.latent_dim'")),
    Case("train/wrong-type", "train", TRAIN + ["--config.stages.codec.steps=abc"], 2,
         ("--config.stages.codec.steps=abc", "bad value for a int field")),
    Case("train/section-as-value", "train", TRAIN + ["--config.model=3"], 2, ("is a section",)),
    Case("train/out-of-range-lr", "train", TRAIN + ["--config.stages.codec.lr=-1", "--data", "{good}"], 2,
         ("codec lr > 0", "stages.codec.lr=-1")),
    Case("train/out-of-range-split", "train", TRAIN + ["--config.data.test_fraction=1.5", "--data", "{good}"], 2,
         ("split fractions",)),
    Case("train/variant-override", "train", TRAIN + ["--config.variant=cpu"], 2, ("cannot be overridden",)),
    Case("train/unknown-flag", "train", TRAIN + ["--bogus"], 2, ("unrecognized arguments: --bogus",)),
    Case("train/override-without-value", "train", TRAIN + ["--config.seed"], 2, ("needs a value",)),
    Case("train/data-parallel-too-many", "train", TRAIN + ["--config.runtime.data_parallel=3", "--data", "{good}"],
         2, ("runtime.data_parallel=3", "local device")),
    Case("train/compute-dtype", "train", TRAIN + ["--config.runtime.compute_dtype=float16", "--data", "{good}"], 2,
         ("runtime.compute_dtype='float16'",)),
    Case("train/nan-guard-zero", "train", TRAIN + ["--config.runtime.max_nonfinite_steps=0", "--data", "{good}"],
         2, ("max_nonfinite_steps=0",)),
    Case("train/negative-cadence", "train", TRAIN + ["--config.checkpoint.every_minutes=-1", "--data", "{good}"],
         2, ("cadence", "every_minutes=-1")),
    Case("train/eval-refine-unknown", "train", TRAIN + ["--config.eval.refine=diffusion", "--data", "{good}"], 2,
         ("eval.refine='diffusion'", "'none', 'corrector' or 'student'")),
    Case("train/recon-windows-unknown", "train",
         TRAIN + ["--config.stages.operator.recon_windows=first", "--data", "{good}"], 2,
         ("stages.operator.recon_windows='first'", "'given'")),
    # ---- train: data files
    Case("train/data-missing", "train", TRAIN + ["--data", "{missing}"], 2, ("not found", "missing.hdf5")),
    Case("train/data-empty-file", "train", TRAIN + ["--data", "{empty}"], 2, ("empty.hdf5",)),
    Case("train/data-truncated", "train", TRAIN + ["--data", "{truncated}"], 2, ("truncated.hdf5",)),
    Case("train/data-wrong-layout", "train", TRAIN + ["--data", "{layout}"], 2, ("layout.hdf5", "tensor")),
    Case("train/data-nan", "train", TRAIN + ["--data", "{nan}"], 2, ("nan.hdf5", "NaN/Inf")),
    Case("train/data-inf", "train", TRAIN + ["--data", "{inf}"], 2, ("inf.hdf5", "NaN/Inf")),
    Case("train/data-dir-without-files", "train", TRAIN + ["--data", "{nodata}"], 2, ("no .hdf5/.h5 files",)),
    # ---- train: workdirs
    Case("train/workdir-is-a-file", "train", ["--config", T, "--workdir", "{afile}", "--data", "{good}"], 2,
         ("cannot create the workdir", "is a file")),
    Case("train/workdir-under-a-file", "train", ["--config", T, "--workdir", "{afile}/run", "--data", "{good}"], 2,
         ("cannot create the workdir",)),
    Case("train/workdir-foreign", "train", ["--config", T, "--workdir", "{foreign}", "--data", "{good}"], 2,
         ("run_meta.json: unreadable", "--fresh")),
    Case("train/workdir-other-dataset", "train", ["--config", T, "--workdir", "{partial}", "--data", "{nu01}"], 2,
         ("different dataset", "--fresh")),
    Case("train/workdir-optimizer-changed", "train",
         ["--config", T, "--workdir", "{partial}", "--data", "{good}",
          "--config.stages.operator.trainable=('operator','decoder')"], 2,
         ("saved optimizer state does not fit", "stages.operator.trainable", "--fresh")),
    Case("train/workdir-architecture-changed", "train",
         ["--config", T, "--workdir", "{partial}", "--data", "{good}", "--config.model.decoder.hidden_dim=32"], 2,
         ("model.decoder.hidden_dim", "--fresh")),
    # ---- evaluate
    Case("evaluate/no-workdir-flag", "evaluate", [], 2, ("--workdir",)),
    Case("evaluate/workdir-missing", "evaluate", ["--workdir", "{missing}"], 2, ("workdir not found",)),
    Case("evaluate/workdir-empty", "evaluate", ["--workdir", "{emptydir}"], 2, ("not a ups_jax run directory",)),
    Case("evaluate/workdir-bad-json", "evaluate", ["--workdir", "{badjson}"], 2, ("config.json: unreadable",)),
    Case("evaluate/bad-split", "evaluate", ["--workdir", "{partial}", "--split", "holdout"], 2,
         ("invalid choice: 'holdout'",)),
    Case("evaluate/data-missing", "evaluate", ["--workdir", "{partial}", "--data", "{missing}"], 2,
         ("no such file",)),
    # ---- driver
    Case("driver/no-subcommand", "driver", [], 2, ("missing subcommand",)),
    Case("driver/unknown-subcommand", "driver", ["trian"], 2, ("unknown subcommand 'trian'",)),
    Case("driver/validate-no-config", "driver", ["validate"], 2, ("missing --config",)),
    Case("driver/validate-unknown-key", "driver", ["validate", "--config", T, "--config.stagez.x=1"], 2,
         ("unknown config key 'stagez.x'",)),
    Case("driver/validate-out-of-range", "driver", ["validate", "--config", T, "--config.stages.codec.lr=-1"], 1,
         ("ERROR   codec lr > 0",), kind="report"),
    Case("driver/validate-workdir-optimizer", "driver",
         ["validate", "--config", T, "--workdir", "{partial}", "--config.data.paths=('{good}',)",
          "--config.stages.operator.trainable=('operator','decoder')"], 1,
         ("saved optimizer state does not fit",), kind="report"),
    Case("driver/dry-run-bad-steps", "driver", ["dry-run", "--config", T, "--steps", "0"], 2, ("--steps",)),
    Case("driver/dry-run-wrong-type", "driver", ["dry-run", "--config", T, "--min-time", "soon"], 2,
         ("invalid float value: 'soon'",)),
    Case("driver/validate-data-missing", "driver", ["validate-data", "{missing}"], 2, ("no such file",)),
    Case("driver/validate-data-nan", "driver", ["validate-data", "{nan}"], 1, ("FAIL", "NaN/Inf"), kind="report"),
    Case("driver/validate-data-truncated", "driver", ["validate-data", "{truncated}"], 1, ("FAIL",),
         kind="report"),
    Case("driver/validate-data-bad-number", "driver", ["validate-data", "{good}", "--max-abs", "big"], 2,
         ("invalid float value: 'big'",)),
    Case("driver/analyze-missing", "driver", ["analyze", "--workdir", "{missing}"], 2, ("missing.hdf5",)),
    Case("driver/analyze-unwritable-out", "driver", ["analyze", "--workdir", "{logrun}", "--out", "{afile}/r.md",
                                                     "--no-plots"], 2, ("cannot write the report",)),
    Case("driver/compare-one-run", "driver", ["compare", "{logrun}"], 2, ("at least two run directories",)),
    # ---- data.generate
    Case("generate/missing-nu", "generate", ["burgers1d", "--samples", "2", "--out", "{new}"], 2,
         ("--nu is required (or re-solve a file with --initial-from FILE)",)),
    Case("generate/negative-nu", "generate", ["burgers1d", "--nu", "-1", "--samples", "2", "--out", "{new}"], 2,
         ("--nu must be > 0",)),
    Case("generate/wrong-type", "generate", ["burgers1d", "--nu", "0.01", "--samples", "two", "--out", "{new}"], 2,
         ("invalid int value: 'two'",)),
    Case("generate/existing-output", "generate", GEN + ["--out", "{gendir}"], 2,
         ("already exists", "--overwrite")),
    Case("generate/out-under-a-file", "generate", GEN + ["--out", "{afile}/data"], 2,
         ("cannot create output directory",)),
    Case("generate/unknown-pde", "generate", ["heat2d", "--out", "{new}"], 2, ("invalid choice: 'heat2d'",)),
]


def _write_burgers_like(path, good, mutate):
    shutil.copyfile(good, path)
    with h5py.File(path, "r+") as f:
        mutate(f)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, burgers_file, burgers_dir, trained_run):
    """The files the cases refer to, in one directory (snapshotted around every case)."""
    root = tmp_path_factory.mktemp("corpus")
    # "good" carries the reference run's file name: the same dataset for the fingerprint check
    files = {"good": root / "good" / "1D_Burgers_Sols_Nu0.01.hdf5", "missing": root / "missing.hdf5",
             "empty": root / "empty.hdf5",
             "truncated": root / "truncated.hdf5", "layout": root / "layout.hdf5", "nan": root / "nan.hdf5",
             "inf": root / "inf.hdf5", "nodata": root / "nodata", "afile": root / "afile.txt",
             "pyfile": root / "broken_config.py", "foreign": root / "foreign", "emptydir": root / "emptydir",
             "badjson": root / "badjson", "partial": root / "partial", "logrun": root / "logrun",
             "gendir": root / "gen", "new": root / "new", "nu01": burgers_dir / "1D_Burgers_Sols_Nu0.1.hdf5"}
    files["good"].parent.mkdir()
    shutil.copyfile(burgers_file, files["good"])
    files["empty"].write_bytes(b"")
    data = files["good"].read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    with h5py.File(files["layout"], "w") as f:
        f["data"] = np.zeros((4, 201, 64), np.float32)
    _write_burgers_like(files["nan"], files["good"], lambda f: f["tensor"].__setitem__((7, 100, 3), np.nan))
    _write_burgers_like(files["inf"], files["good"], lambda f: f["tensor"].__setitem__((2, 5, 9), np.inf))
    files["nodata"].mkdir()
    files["afile"].write_text("not a directory\n")
    files["pyfile"].write_text("def get_config(arg=None):\n    return 1 / 0 +\n")
    files["foreign"].mkdir()
    (files["foreign"] / "run_meta.json").write_text("{written by another tool")
    files["emptydir"].mkdir()
    files["badjson"].mkdir()
    (files["badjson"] / "config.json").write_text("{not json")
    (files["badjson"] / "run_meta.json").write_text("{}")
    ref, cfg, _ = trained_run          # an unfinished run: the operator stage stopped at its step-3 checkpoint
    shutil.copytree(ref, files["partial"], ignore=shutil.ignore_patterns("eval"))
    shutil.rmtree(files["partial"] / "checkpoints" / "operator" / str(cfg.stages.operator.steps))
    write_run(files["logrun"], {"codec": stage()})
    files["gendir"].mkdir()
    shutil.copyfile(burgers_file, files["gendir"] / "1D_Burgers_Sols_Nu0.01.hdf5")
    return root, {k: str(v) for k, v in files.items()}


def _contents(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.stat().st_size, hashlib.md5(p.read_bytes()).hexdigest()) if p.is_file()
            else "dir" for p in sorted(root.rglob("*"))}


def test_corpus_size():
    assert len(CASES) >= 50 and len({c.id for c in CASES}) == len(CASES)
    assert {c.cli for c in CASES} == set(MAINS)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input(case, corpus, capsys):
    root, files = corpus
    argv = [a.format(**files) for a in case.argv]
    before = _contents(root)
    main = importlib.import_module(MAINS[case.cli]).main
    code = run_cli(main, argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    assert code == case.code, (code, out[-2000:], err[-2000:])
    if case.kind == "report":
        for word in case.words:
            assert word in out, (word, out[-3000:])
        assert "error:" not in err
    else:
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error")]
        assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), err
        for word in case.words:
            assert word in errors[0], (word, errors[0])
    assert _contents(root) == before, "a file of the corpus was created, changed or removed"


def test_a_full_disk_during_a_checkpoint_is_one_line_and_loses_nothing(corpus, tmp_path):
    """The process may not grow a file past 24 kB (RLIMIT_FSIZE; writes then fail with EFBIG like ENOSPC on a
    full disk): the operator's final checkpoint cannot be written. One line, exit 2, the complete checkpoints
    untouched, and the newest complete one (step 3) is the resume point a rerun reads. (Resuming itself, from a
    checkpoint like it, is tests/test_reliability.py's; rerunning here would cost another training run.)"""
    root, files = corpus
    wd = tmp_path / "w"
    shutil.copytree(files["partial"], wd)
    checkpoints = {k: v for k, v in _contents(wd / "checkpoints").items()}

    # a small launcher sets the limit and execs the command (Python ignores SIGXFSZ, so writes fail with EFBIG)
    limit = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (24_000, 24_000)); "
             "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
    cmd = [sys.executable, "-c", limit, "-m", "ups_jax.train", "--config", T, "--workdir", str(wd),
           "--data", files["good"]]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stderr[-3000:]
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert "Traceback" not in p.stderr and lines[-1].startswith("error: writing a checkpoint of stage operator "
                                                                "failed: "), p.stderr[-3000:]
    assert "File too large" in lines[-1] and "newest: step 3" in lines[-1]
    now = _contents(wd / "checkpoints")
    assert {k: v for k, v in now.items() if "orbax-checkpoint-tmp" not in k} == checkpoints
    from ups_jax.training import checkpoints as ckpt

    mngr = ckpt.open_manager(wd, "operator", read_only=True)
    assert mngr.all_steps() == [3] and ckpt.newest_readable_state(mngr)[0] == 3
    mngr.close()
    assert json.loads((wd / "run_meta.json").read_text())["nx"] == 16
