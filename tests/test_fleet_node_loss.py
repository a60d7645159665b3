"""Node loss on a multi-node Ray cluster (``ray.cluster_utils.Cluster``: separate raylets on this machine) with
the sweep's storage on S3 (a moto server on 127.0.0.1), as on a real cluster where only cloud storage survives
a node.

Two identical codec-only trials run on two worker nodes. Right after trial 0 reports global step 6, the node it
runs on is removed without warning and a fresh node is added. Tune had registered the checkpoint of step 3 (a
report's own checkpoint is registered after the result callbacks run), so the trial must resume on the new node
from that checkpoint, downloaded from S3, recompute step 6 identically, and finish; its final parameters must
equal those of trial 1, which ran uninterrupted.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fleet_helpers import trial_rows

NODE_LOSS: dict = {}                     # shared with the experiment file's callback (same process)

EXPERIMENT = '''
from ray import tune
from ray.tune import Callback

import test_fleet_node_loss as state
from ups_jax.fleet import Experiment


class RemoveNodeOnce(Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.trial_id.endswith("_00000") and result["global_step"] == 6 and "removed" not in state.NODE_LOSS:
            state.NODE_LOSS["removed"] = state.NODE_LOSS["remove"](result["worker/node_id"])


def get_experiment():
    return Experiment(
        name="nodeloss", config="configs/burgers32.py:test",
        overrides=["stage_order=codec", "stages.codec.steps=12", "data.default_dir={data}"],
        search_space={{"seed": tune.grid_search([0, 0])}},   # two identical trials
        metric="val/recon_nrmse", mode="min", resources={{"cpu": 1, "gpu": 0}}, max_failures=2,
        max_concurrent_trials=2, callbacks=[RemoveNodeOnce()])
'''


@pytest.fixture
def s3(monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)     # one log line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="fleet-test")
    yield "s3://fleet-test/sweeps"
    server.stop()


def test_node_loss_resumes_on_a_new_node_with_s3_storage(s3, ray_env, tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from ups_jax.errors import run_cli
    from ups_jax.fleet import pull, sweep

    for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED", "JAX_PLATFORMS"):
        monkeypatch.setenv(k, ray_env[k])
    exp = tmp_path / "nodeloss_test.py"
    exp.write_text(EXPERIMENT.format(data=tmp_path / "data"))
    from conftest import _free_port

    cluster = Cluster(initialize_head=True, head_node_args={        # fixed default ports replaced by free ones
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": 100 * 2**20,
        "dashboard_agent_listen_port": _free_port()})
    try:
        workers = [cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20) for _ in range(2)]

        def remove(node_id):
            [victim] = [n for n in workers if n.node_id == node_id]
            cluster.remove_node(victim, allow_graceful=False)
            workers.append(cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20))
            return node_id

        NODE_LOSS.clear()
        NODE_LOSS["remove"] = remove
        ray.init(address=cluster.address, log_to_driver=False)
        assert run_cli(sweep.main, ["--experiment", str(exp), "--storage", s3]) == 0
        for trial in ("00000", "00001"):
            assert run_cli(pull.main, ["--experiment", f"{s3}/nodeloss", "--trial", trial,
                                       "--to", str(tmp_path / trial)]) == 0
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert "removed" in NODE_LOSS
    summary = json.loads(_s3_text(f"{s3}/nodeloss/fleet_summary.json"))
    assert [(r["state"], r["failures"]) for r in summary["trials"]] == [("done", 1), ("done", 0)]
    rows = _rows_from_s3(s3, tmp_path, "_00000")
    before = [r for r in rows if r["worker/node_id"] == NODE_LOSS["removed"]]
    after = [r for r in rows if r["worker/node_id"] != NODE_LOSS["removed"]]
    assert [r["global_step"] for r in before] == [3, 6]
    assert [r["global_step"] for r in after] == [6, 9, 12]                # from the checkpoint at 3, not scratch
    assert after[0]["codec/val/recon_nrmse"] == before[1]["codec/val/recon_nrmse"]
    a, b = _final_params(tmp_path / "00000"), _final_params(tmp_path / "00001")
    assert a.keys() == b.keys() and a
    for k in a:
        assert np.array_equal(a[k], b[k]), k                              # bitwise = the uninterrupted trial


def _s3_text(uri):
    from ups_jax.fleet import storage

    return storage.read_text(uri)


def _rows_from_s3(s3, tmp_path, suffix):
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(f"{s3}/nodeloss")
    local = tmp_path / "experiment"
    pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return trial_rows(local, suffix)


def _final_params(run_dir):
    import jax
    import orbax.checkpoint as ocp

    step_dir = run_dir / "checkpoints" / "codec" / "12"
    tree = ocp.StandardCheckpointer().restore(step_dir / "params")
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
