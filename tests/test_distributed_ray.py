"""The ray engine on a local Ray cluster (started once for the module): embedding, scoring and
validation equal the local engine's; a worker killed mid-stage is retried with nothing lost or
duplicated; a run stopped part-way resumes from its finished shards."""
import functools
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from omnisource.cli import app
from omnisource.config import load_config
from omnisource.data.manifest import new_row, read_manifest, write_manifest
from omnisource.demo.synthetic import generate, web_manifests
from omnisource.distributed import ray as engine
from omnisource.features.cache import extract_features, load_features
from omnisource.features.embed import EmbedderFactory, _ray_embed
from omnisource.models import create_backbone
from omnisource.teacher.score import read_scores, score_in_shards
from omnisource.teacher.stage import ScorerFactory, _scorer
from omnisource.teacher.score import load_teacher
from omnisource.workspace import Workspace

runner = CliRunner()
OPTS = engine.RayOptions(workers=2, batch_size=4)
BASE = ["features.size=64", "features.frames=4", "train.epochs=8", "train.optimizer=adamw", "train.lr=0.01",
        "target.val_groups=['01']"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    engine.init(engine.RayOptions(niceness=0))  # one local Ray for the module, sized to the machine, at our priority
    yield
    engine.shutdown()


@pytest.fixture(scope="module")
def ws(tmp_path_factory, cluster):
    root = tmp_path_factory.mktemp("ray")
    generate(root, groups=3, clips_per_group=2, web_per_class=3, size=64, frames=8, untrimmed_per_class=0)
    images = web_manifests(root)["images"]
    manifest = read_manifest(images)
    broken = root / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    manifest.rows.append(new_row("images", "image", str(broken), weak_labels=["sliding box"]))
    write_manifest(manifest, images)
    ws = root / "ws"
    web = f"web=[{{name: images, kind: image, format: manifest, root: '{images}'}}]"
    invoke("import", "-w", ws, f"target.root={root / 'videos'}", *BASE, web)
    invoke("import-web", "-w", ws)
    invoke("features", "-w", ws)
    invoke("train", "-w", ws)
    return Workspace(ws)


def _cfg(ws):
    return load_config(ws.config_file)


def web_rows(ws):
    return [r for r in read_manifest(ws.web("images")).rows if r["status"] == "ok"]


def test_ray_embedding_writes_the_local_shards(ws, tmp_path):
    cfg = _cfg(ws)
    rows = web_rows(ws) + [new_row("images", "image", str(tmp_path / "gone.jpg"))]  # fails to decode
    backbone = create_backbone("efficientnet_lite0", pretrained="imagenet")
    args = dict(size=64, frames=4, shard_size=5, workers=0, progress=False)
    local = extract_features(rows, backbone, tmp_path / "local", **args)
    ray = extract_features(rows, None, tmp_path / "ray", embed=_ray_embed(cfg, False, OPTS), **args)
    assert local == ray and list(local) == [rows[-1]["id"]]
    names = sorted(p.name for p in (tmp_path / "local").glob("shard-*"))
    assert names == sorted(p.name for p in (tmp_path / "ray").glob("shard-*")) and len(names) == 4  # 18 rows
    ids = [r["id"] for r in rows[:-1]]
    a, b = load_features(tmp_path / "local", ids), load_features(tmp_path / "ray", ids)
    assert sorted(a) == sorted(b) == sorted(ids)
    for rid in ids:  # float16 in the cache: the same up to the rounding of the last bit
        np.testing.assert_allclose(a[rid].astype(np.float32), b[rid].astype(np.float32), rtol=2e-3, atol=2e-3)
    assert EmbedderFactory(cfg, False)()(rows[:2])[0][0].shape == (1, 1280)  # one per row, a still: T=1


def _assert_same_scores(dir_a, dir_b, ids):
    a, b = read_scores(dir_a), read_scores(dir_b)
    assert sorted(a) == sorted(b) == sorted(ids)
    for rid in ids:
        assert a[rid]["pred"] == b[rid]["pred"] and a[rid]["top5_labels"] == b[rid]["top5_labels"]
        np.testing.assert_allclose(a[rid]["probs"], b[rid]["probs"], atol=1e-5)


def test_ray_scoring_through_the_cli_equals_the_local_engine(ws, tmp_path):
    invoke("score", "-w", ws.root)
    shutil.copytree(ws.scores("images"), tmp_path / "local")
    shutil.rmtree(ws.scores("images"))
    out = invoke("score", "-w", ws.root, "--engine", "ray")
    assert "(ray)" in out
    assert sorted(p.name for p in ws.scores("images").iterdir()) == sorted(p.name for p in (tmp_path / "local").iterdir())
    _assert_same_scores(tmp_path / "local", ws.scores("images"), [r["id"] for r in web_rows(ws)])


class _Dying:
    """The scorer, but the process exits when it meets ``victim`` (once per marker file); with
    ``always`` every time, so Ray's retries run out."""

    def __init__(self, inner, victim: str, marker: Path, always: bool = False, seen: Path | None = None):
        self.inner, self.victim, self.marker, self.always, self.seen = inner, victim, marker, always, seen

    def __call__(self):
        fn = self.inner()

        def score(rows):
            if any(r["id"] == self.victim for r in rows) and (self.always or not self.marker.exists()):
                self.marker.touch()
                time.sleep(2)  # lets the driver take in (and write) the batches finished before this one
                os._exit(1)  # the worker process dies mid-stage
            if self.seen is not None:
                with open(self.seen, "a") as f:
                    f.writelines(r["id"] + "\n" for r in rows)
            return fn(rows)

        return score


def _score(ws, out, factory, opts=OPTS):
    cfg = _cfg(ws)
    dim = int(next(iter(load_features(ws.feature_cache(cfg), [web_rows(ws)[0]["id"]]).values())).shape[-1])
    teachers = [load_teacher(ws, "target_only", read_manifest(ws.target_manifest()).classes, dim)]
    run = functools.partial(engine.map_shards, factory=factory, opts=opts) if factory else None
    return score_in_shards(web_rows(ws), _scorer(teachers, cfg, ws, "image"), out, shard_size=4, run_shards=run)


def _factory(ws):
    cfg = _cfg(ws)
    dim = int(next(iter(load_features(ws.feature_cache(cfg), [web_rows(ws)[0]["id"]]).values())).shape[-1])
    return ScorerFactory(cfg, ws, "image", read_manifest(ws.target_manifest()).classes, dim,
                         cfg.omni.teacher_runs)


def test_a_stopped_run_resumes_and_a_killed_worker_is_retried_with_nothing_lost_or_duplicated(ws, tmp_path):
    """A pipeline that fails for good keeps the shards it finished; the re-run computes only the
    rest, and when one of its workers dies mid-stage Ray restarts it and retries the batch: every
    row scored once, as the local engine scores it. (One re-run checks both: each Ray pipeline
    starts its own actors, the slow part of these tests.)"""
    rows = web_rows(ws)
    _score(ws, tmp_path / "local", None)
    out, seen = tmp_path / "ray", tmp_path / "seen.txt"
    victim = rows[13]["id"]  # in the fourth shard of four rows
    with pytest.raises(engine.EngineError, match="failed after 0 retries"):
        _score(ws, out, _Dying(_factory(ws), victim, tmp_path / "m", always=True),
               engine.RayOptions(workers=1, batch_size=4, retries=0))
    finished = sorted(p.name for p in out.glob("part-*"))
    assert finished and len(finished) < 5  # the shards before the failing one were written
    done = {rid for f in finished for rid in read_scores(out / f)}
    assert victim not in done
    died = tmp_path / "died"
    _score(ws, out, _Dying(_factory(ws), victim, died, seen=seen))  # the victim's worker dies once now
    assert died.exists()  # a worker did die, and its batch was retried
    again = seen.read_text().split()
    assert set(again) == {r["id"] for r in rows} - done and len(again) == len(set(again))  # only what was missing
    records = [rec for f in sorted(out.glob("part-*")) for rec in read_scores(f).values()]
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in rows)  # each row exactly once
    assert sorted(p.name for p in out.glob("part-*")) == sorted(p.name for p in (tmp_path / "local").glob("part-*"))
    _assert_same_scores(tmp_path / "local", out, [r["id"] for r in rows])


def test_clean_validate_on_ray_equals_local(ws, tmp_path):
    from omnisource.clean.validate import Rules, normalized_dir, validate_rows

    rows = read_manifest(ws.web("images")).rows
    local = validate_rows(rows, Rules.from_config(_cfg(ws).media), normalized_dir(ws, "images"), progress=False,
                          force=True)
    invoke("clean", "validate", "-w", ws.root, "--engine", "ray", "--force")  # in place, on the cluster
    ray = read_manifest(ws.web("images")).rows
    assert [r["id"] for r in ray] == [r["id"] for r in local]  # the same rows, in order
    for a, b in zip(local, ray):
        assert {k: a[k] for k in a} == {k: b[k] for k in a}
    assert [r["status"] for r in ray].count("corrupt") == 1  # the broken JPEG


def test_engine_options_are_checked():
    with pytest.raises(ValueError, match="expected one of local, ray"):
        engine.check_engine("dask")
    with pytest.raises(ValueError, match="--ray-address needs --engine ray"):
        engine.check_engine("local", "auto")
    assert engine.check_engine("local") is None and engine.check_engine("ray", "auto").address == "auto"
    with pytest.raises(ValueError, match="--ray-niceness needs --engine ray"):
        engine.check_engine("local", None, 0)
    for bad in (-1, 20, 1.5, True):
        with pytest.raises(ValueError, match="expected a whole number from 0 to 19"):
            engine.check_engine("ray", None, bad)
    with pytest.raises(ValueError, match="set RAY_worker_niceness there"):  # a cluster's workers run already
        engine.check_engine("ray", "auto", 0)
    assert engine.check_engine("ray", None, 7).niceness == 7 and engine.check_engine("ray").niceness is None


def test_ray_niceness_is_set_while_the_local_ray_starts_and_only_then(monkeypatch):
    """The raylet, which starts every worker, inherits RAY_worker_niceness from ray.init; the
    caller's environment is left as it was, and a second start at another niceness is refused."""
    seen = []

    class FakeRay:
        up = False

        def is_initialized(self):
            return self.up

        def init(self, **kwargs):
            seen.append((kwargs.get("address"), os.environ.get(engine.NICENESS)))
            self.up = True

        def shutdown(self):
            self.up = False

    fake = FakeRay()
    monkeypatch.setattr(engine, "_ray", lambda: fake)
    monkeypatch.setattr(engine, "_started", {})
    monkeypatch.setenv(engine.NICENESS, "12")  # the user's own setting
    engine.init(engine.RayOptions(niceness=3))
    assert seen == [("local", "3")] and os.environ[engine.NICENESS] == "12"
    engine.init(engine.RayOptions())  # connected already: nothing asked, nothing to check
    with pytest.raises(engine.EngineError, match="its workers at 3"):
        engine.init(engine.RayOptions(niceness=0))
    engine.shutdown()
    monkeypatch.delenv(engine.NICENESS)
    engine.init(engine.RayOptions())  # without the option Ray's own default (or the variable) applies
    engine.shutdown()
    engine.init(engine.RayOptions(address="auto"))  # joining a cluster sets nothing
    assert seen[1:] == [("local", None), ("auto", None)] and engine.NICENESS not in os.environ


def _worker_priority(_):
    return os.nice(0), os.environ.get("RAY_worker_niceness")


def test_the_workers_run_at_the_niceness_asked_for(cluster):
    """The module's Ray was started with --ray-niceness 0: its workers got the variable and run at
    this process's nice level (Ray's default would put them 15 above it, capped at 19)."""
    got = list(engine.map_jobs(_worker_priority, [0, 1], engine.RayOptions(workers=2, batch_size=1)))
    assert got == [(os.nice(0), "0")] * 2
