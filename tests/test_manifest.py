import os

import numpy as np
import pytest

from omnisource.data import importers
from omnisource.data.manifest import (Manifest, ManifestError, atomic_write_npz, make_id, new_row, read_manifest,
                                      write_manifest)


MP4_HEAD = b"\x00\x00\x00\x18ftypisom" + bytes(16)  # files are typed by content: enough to say "video"


def _touch(path, data=MP4_HEAD):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_roundtrip_keeps_schema_extra_columns_and_classes(tmp_path):
    rows = [new_row("target", "video", "/a.mp4", label=1, weak_labels=["b"], group="08"),
            new_row("web", "image", "/b.jpg", weak_labels=["q"], start_s=1.0, end_s=2.5, status="corrupt",
                    reason="zero-byte file")]
    out = write_manifest(Manifest(rows, ["a", "b"]), tmp_path / "m.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]  # no temp file left behind
    back = read_manifest(out)
    assert back.classes == ["a", "b"]
    assert back.rows[0]["group"] == "08" and back.rows[0]["label"] == 1
    assert back.rows[1]["label"] is None and back.rows[1]["end_s"] == 2.5
    assert back.rows[1]["weak_labels"] == ["q"]


def test_ids_are_stable_and_span_aware():
    assert make_id("web", "/v.mp4") == make_id("web", "/v.mp4")
    assert make_id("web", "/v.mp4", 0, 10) != make_id("web", "/v.mp4", 10, 20)


def test_duplicate_ids_and_bad_labels_list_rows(tmp_path):
    rows = [new_row("t", "video", f"/v{i}.mp4", label=0) for i in range(12)]
    rows += [dict(r) for r in rows]
    with pytest.raises(ManifestError) as err:
        write_manifest(Manifest(rows, ["a"]), tmp_path / "m.parquet")
    msg = str(err.value)
    assert "duplicate ids in 12 row(s)" in msg and "(and 2 more)" in msg and "/v0.mp4" in msg
    with pytest.raises(ManifestError, match="labels outside 0..0"):
        write_manifest(Manifest([new_row("t", "video", "/x.mp4", label=3)], ["a"]), tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


def test_read_errors(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.parquet")
    junk = _touch(tmp_path / "junk.parquet", b"not parquet")
    with pytest.raises(ManifestError, match="not a readable Parquet manifest"):
        read_manifest(junk)


def test_from_folders(tmp_path):
    _touch(tmp_path / "Run" / "v_Run_g01_c01.mp4")
    _touch(tmp_path / "Jump" / "v_Jump_g02_c01.avi")
    (tmp_path / "Jump" / "frames_dir").mkdir()
    _touch(tmp_path / "Jump" / "readme.txt", b"notes")
    _touch(tmp_path / "Jump" / "photo", b"\xff\xd8\xff\xe0" + bytes(20))  # a JPEG without an extension
    _touch(tmp_path / "Jump" / "page.mp4", b"<!DOCTYPE html><html>404</html>")
    m = importers.from_folders(tmp_path)
    assert m.classes == ["Jump", "Run"]
    kinds = {os.path.basename(r["path"]): (r["kind"], r["label"], r["status"]) for r in m.rows}
    assert kinds["v_Run_g01_c01.mp4"] == ("video", 1, "ok")
    assert kinds["frames_dir"] == ("frames", 0, "ok")
    assert kinds["readme.txt"][2] == "corrupt"  # recorded, not silently dropped
    assert kinds["photo"] == ("image", 0, "ok") and kinds["page.mp4"] == ("video", 0, "corrupt")
    assert {r["reason"] for r in m.rows if r["path"].endswith("page.mp4")} == {"not a media file: HTML page"}


def test_empty_and_one_class_datasets_fail_in_one_line(tmp_path):
    _touch(tmp_path / "Run" / "v_Run_g01_c01.mp4")
    (tmp_path / "Jump").mkdir()
    with pytest.raises(ManifestError, match=r"class folder\(s\) without files: Jump"):
        importers.from_folders(tmp_path)
    (tmp_path / "Jump").rmdir()
    with pytest.raises(ManifestError, match=r"only one class \(Run\) has usable rows"):
        importers.check_classes(importers.from_folders(tmp_path), "import")
    _touch(tmp_path / "Jump" / "v_Jump_g01_c01.mp4", b"garbage")
    with pytest.raises(ManifestError, match="only one class"):  # Jump's only file is not media
        importers.check_classes(importers.from_folders(tmp_path), "import")
    _touch(tmp_path / "Jump" / "v_Jump_g02_c01.mp4")
    importers.check_classes(importers.from_folders(tmp_path), "import")  # two classes: fine


def test_from_csv_names_and_missing(tmp_path):
    _touch(tmp_path / "a.mp4")
    _touch(tmp_path / "b.mp4")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label\na.mp4,run\nb.mp4,jump\n")
    m = importers.from_csv(csv)
    assert m.classes == ["jump", "run"] and [r["label"] for r in m.rows] == [1, 0]
    csv.write_text("path,label\na.mp4,run\nmissing1.mp4,run\nmissing2.mp4,jump\n")
    with pytest.raises(ManifestError) as err:
        importers.from_csv(csv)
    assert "missing files in 2 row(s)" in str(err.value) and "line 3" in str(err.value)
    skipped = importers.from_csv(csv, on_missing="record")
    assert [r["status"] for r in skipped.rows] == ["ok", "corrupt", "corrupt"]
    csv.write_text("path,label\na.mp4,run\n")
    with pytest.raises(ManifestError, match="unknown labels"):
        importers.from_csv(csv, classes=["jump"])
    csv.write_text("file,cls\na.mp4,run\n")
    with pytest.raises(ManifestError, match="needs a header"):
        importers.from_csv(csv)


def test_from_mmaction_videos_and_rawframes(tmp_path):
    _touch(tmp_path / "v1.mp4")
    _touch(tmp_path / "v2.mp4")
    lst = tmp_path / "train.txt"
    lst.write_text("v1.mp4 0\nv2.mp4 2\n")
    m = importers.from_mmaction(lst, root=tmp_path)
    assert m.classes == ["0", "1", "2"] and [r["label"] for r in m.rows] == [0, 2]
    (tmp_path / "f1").mkdir()
    lst.write_text("f1 40 1\n")
    m = importers.from_mmaction(lst, root=tmp_path)
    assert m.rows[0]["kind"] == "frames" and m.rows[0]["num_frames"] == 40
    lst.write_text("f1 40 1\nv1.mp4 0\n")
    with pytest.raises(ManifestError, match="mixes video and rawframe"):
        importers.from_mmaction(lst, root=tmp_path)


def test_from_kinetics(tmp_path):
    _touch(tmp_path / "train" / "abseiling" / "abc_000010_000020.mp4")
    _touch(tmp_path / "zumba" / "xyz_000000_000010.mp4")
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nabseiling,abc,10,20,train\n"
                   "zumba,xyz,0,10,validate\n")
    m = importers.from_kinetics(csv, tmp_path)
    assert m.classes == ["abseiling", "zumba"]
    assert [r["split"] for r in m.rows] == ["train", "val"]
    csv.write_text("label,youtube_id,time_start,time_end,split\nabseiling,gone,0,10,train\n")
    with pytest.raises(ManifestError, match="missing files"):
        importers.from_kinetics(csv, tmp_path)


def test_kinetics_train_and_validate_lists_import_in_one_class_order(tmp_path):
    from omnisource.config import load_config
    from omnisource.pipeline import import_target

    for split, stem in (("train", "abc_000010_000020"), ("train", "def_000000_000010"), ("val", "xyz_000000_000010")):
        _touch(tmp_path / "videos" / split / ("zumba" if stem.startswith("d") else "abseiling") / f"{stem}.mp4")
    head = "label,youtube_id,time_start,time_end,split\n"
    (tmp_path / "train.csv").write_text(head + "abseiling,abc,10,20,train\nzumba,def,0,10,train\n")
    (tmp_path / "validate.csv").write_text(head + "abseiling,xyz,0,10,val\n")
    cfg = load_config(None, ["target.format=kinetics", f"target.annotations={tmp_path / 'train.csv'}",
                             f"target.val_annotations={tmp_path / 'validate.csv'}", f"target.root={tmp_path / 'videos'}"])
    m = read_manifest(import_target(cfg, tmp_path / "ws"))
    assert m.classes == ["abseiling", "zumba"]
    assert sorted((r["split"], m.classes[r["label"]]) for r in m.rows) == [
        ("train", "abseiling"), ("train", "zumba"), ("val", "abseiling")]


def _ucf_like(tmp_path, groups=range(1, 13), clips=3):
    for cls in ("A", "B"):
        for g in groups:
            for c in range(1, clips + 1):
                _touch(tmp_path / cls / f"v_{cls}_g{g:02d}_c{c:02d}.mp4")
    return importers.from_folders(tmp_path)


def test_split_by_group_never_straddles(tmp_path):
    m = importers.split_by_group(_ucf_like(tmp_path), val_groups=["08", "09"], train_groups=["10", "11", "12"])
    sides = {}
    for r in m.rows:
        sides.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert sides["08"] == {"val"} and sides["10"] == {"train"} and sides["01"] == {"unused"}
    # Random group split when no validation groups are named.
    m = importers.split_by_group(m, val_groups=[], val_fraction=0.25, seed=3)
    sides = {}
    for r in m.rows:
        sides.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())
    n_val = sum(r["split"] == "val" for r in m.rows)
    assert 0.2 * len(m) <= n_val <= 0.4 * len(m)


def test_split_by_group_integers_name_the_same_groups(tmp_path):
    """`target.val_groups=[8,9,10,11]` arrives as "8".."11" and must select groups 08-11, not 10-11."""
    from omnisource.config import load_config

    groups = load_config(overrides=["target.val_groups=[8,9,10,11]"]).target.val_groups
    m = importers.split_by_group(_ucf_like(tmp_path), val_groups=groups)
    assert {r["group"] for r in m.rows if r["split"] == "val"} == {"08", "09", "10", "11"}
    assert sum(r["split"] == "val" for r in m.rows) == 2 * 4 * 3
    with pytest.raises(ManifestError, match=r"target.val_groups: no file name carries group 13, 14; groups found: 01"):
        importers.split_by_group(m, val_groups=["08", "13", "14"])
    with pytest.raises(ManifestError, match="target.train_groups: no file name carries group 99"):
        importers.split_by_group(m, val_groups=["08"], train_groups=[1, 99])
    # None of them named (the default groups on a dataset numbered otherwise): no validation rows,
    # which `import` reports in a warning line.
    assert not any(r["split"] == "val" for r in importers.split_by_group(m, val_groups=[20, 21]).rows)


def test_subsample_per_class(tmp_path):
    m = importers.split_by_group(_ucf_like(tmp_path), val_groups=["01"])
    k = importers.subsample_per_class(m, 4, seed=1)
    for label in (0, 1):
        picked = [r for r in k.rows if r["label"] == label and r["split"] == "train"]
        assert len(picked) == 4
        assert len({r["group"] for r in picked}) == 4  # spread over groups first
    assert sum(r["split"] == "val" for r in k.rows) == 6
    assert importers.subsample_per_class(m, 4, seed=1).rows == k.rows


def test_atomic_npz_is_written_under_its_own_name_and_replaces_the_old_one(tmp_path):
    """Arrays of the caches and predictions (dedup index, motion fits, predictions.npz) are written
    by one helper: under exactly the given name (np.savez would add .npz), nothing left beside it."""
    path = tmp_path / "sub" / "index.cache"
    atomic_write_npz(path, a=np.arange(3), ids=np.asarray(["x", "y"], dtype=str))
    atomic_write_npz(path, a=np.arange(5, dtype=np.float32))
    assert [p.name for p in path.parent.iterdir()] == ["index.cache"]
    with np.load(path, allow_pickle=False) as z:
        assert list(z) == ["a"] and z["a"].tolist() == [0, 1, 2, 3, 4] and z["a"].dtype == np.float32
