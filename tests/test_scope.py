"""Work proportional to the experiment: decode failures retried only when the file changes."""
from media_factory import write_video

from omnisource.data.manifest import new_row
from omnisource.features.cache import cached_ids, extract_features, missing_rows
from omnisource.models import create_backbone


def test_a_decode_failure_is_retried_once_its_file_changes(tmp_path):
    backbone = create_backbone("resnet18", width=0.125)
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 100)
    rows = [new_row("target", "video", str(bad))]
    cache = tmp_path / "cache"

    def embed(**kw):
        return extract_features(rows, backbone, cache, size=32, frames=2, workers=0, progress=False, **kw)

    assert list(embed()) == [rows[0]["id"]]
    assert missing_rows(rows, cache) == []  # the same file: not decoded again on the next run
    assert list(embed()) == [rows[0]["id"]]
    assert len((cache / "failures.jsonl").read_text().splitlines()) == 1
    assert missing_rows(rows, cache, retry_failed=True) == rows  # --retry-failed
    write_video(bad, 6)  # the file is replaced by one that decodes
    assert missing_rows(rows, cache) == rows
    assert embed() == {} and rows[0]["id"] in cached_ids(cache)


def test_the_teacher_sees_only_samples_its_rule_can_keep():
    from omnisource.select.filter import teacher_rows
    from omnisource.select.stage import select_rows

    classes = ["HorseRace", "Archery"]
    rows = [new_row("web", "image", f"/x/{i}.jpg", weak_labels=[q])
            for i, q in enumerate(["horse racing", "archery", "polo", "golf"])]
    qmap = {"horse racing": "HorseRace"}
    assert [r["weak_labels"][0] for r in teacher_rows(rows, classes, qmap, "both")] == ["horse racing", "archery"]
    assert teacher_rows(rows, classes, qmap, "agreement") == teacher_rows(rows, classes, qmap, "none")
    assert teacher_rows(rows, classes, qmap, "confidence") == rows  # its label comes from the teacher
    scores = {rows[0]["id"]: {"pred": 0, "prob": 0.9}, rows[1]["id"]: {"pred": 0, "prob": 0.9}}
    out, stats = select_rows(rows, scores, classes, "both", 0.5, qmap)
    assert [(r["status"], r.get("drop_reason")) for r in out] == [("ok", None), ("rejected", "disagreement"),
                                                                   ("rejected", "no class"), ("rejected", "no class")]
    assert stats["scored"] == 2
    out, _ = select_rows(rows, scores, classes, "confidence", 0.5, qmap)
    assert [r["status"] for r in out[2:]] == ["corrupt", "corrupt"]  # should have been scored: failed to decode


def test_features_and_validate_touch_only_the_rows_the_experiment_uses(tmp_path):
    import shutil

    from typer.testing import CliRunner

    from omnisource.cli import app
    from omnisource.data.manifest import read_manifest
    from omnisource.demo.synthetic import generate
    from omnisource.workspace import Workspace

    root = tmp_path / "data"
    generate(root, groups=3, clips_per_group=2, web_per_class=2, size=48, frames=8, untrimmed_per_class=0)
    (root / "web" / "zebra").mkdir()  # a query that names no class
    for i, jpg in enumerate(sorted((root / "web" / "sliding box").glob("*.jpg"))):
        shutil.copy(jpg, root / "web" / "zebra" / f"z{i}.jpg")
    ws = Workspace(tmp_path / "ws")
    args = ["-w", str(ws.root), f"target.root={root / 'videos'}", "target.val_groups=['01']", "target.per_class=1",
            f"web=[{{name: images, kind: image, root: '{root / 'web'}'}}]", "features.size=32", "features.frames=2"]
    runner = CliRunner()
    for cmd in ("import", "validate", "import-web", "features"):
        result = runner.invoke(app, [cmd, *args])
        assert result.exit_code == 0, result.output
    target = read_manifest(ws.target("validated")).rows
    used = {r["id"] for r in target if r["split"] in ("train", "val")}
    assert len(target) == 36 and len(used) == 6 + 12  # 1 labeled per class + group 01
    assert all(bool(r.get("validated_by")) == (r["id"] in used) for r in target)  # unused videos not decoded
    web = read_manifest(ws.web("images")).rows
    named = {r["id"] for r in web if r["weak_labels"] != ["zebra"]}
    assert len(web) == 14 and len(named) == 12
    assert set(cached_ids(ws.feature_cache(load_cfg(ws)))) == used | named
    assert "18 target videos the experiment does not use left out" in result.output
    assert "2 of queries that name no class left out" in result.output
    result = runner.invoke(app, ["features", "--all", *args])
    assert result.exit_code == 0, result.output
    assert set(cached_ids(ws.feature_cache(load_cfg(ws)))) == {r["id"] for r in target} | {r["id"] for r in web}
    result = runner.invoke(app, ["validate", "--all", *args])
    assert result.exit_code == 0 and all(r.get("validated_by") for r in read_manifest(ws.target("validated")).rows)


def load_cfg(ws):
    from omnisource.config import load_config

    return load_config(ws.config_file)
