"""The demo's synthetic data: one scene per group, web results mostly wrong in known ways (look-alikes first)."""
import json
from collections import Counter

import numpy as np

from omnisource.data.manifest import read_manifest
from omnisource.demo.synthetic import CLASSES, OFF_TOPIC, QUERIES, render_clip, retake, scene, web_manifests, \
    generate


def test_clips_of_one_group_share_their_scene_and_differ_in_timing():
    rng = np.random.default_rng(0)
    where = scene(rng, 48)
    a, b = retake(where, rng), retake(where, rng)
    assert a["bg"] is where["bg"] and a["angle"] == b["angle"] == where["angle"] and a["colour"] == where["colour"]
    assert a["offset"] != b["offset"] and not np.array_equal(a["centre"], b["centre"])
    clip_a, clip_b = render_clip("sliding_box", rng, 48, 6, a), render_clip("sliding_box", rng, 48, 6, b)
    other = render_clip("sliding_box", rng, 48, 6, scene(rng, 48))
    # The same setting looks alike (the background covers most of the frame); another scene does not.
    assert np.abs(clip_a.astype(int) - clip_b).mean() < np.abs(clip_a.astype(int) - other).mean() / 2


def test_web_truth_has_lookalikes_off_topic_shapes_and_clutter_and_the_manifest_keeps_only_classes(tmp_path):
    counts = generate(tmp_path, groups=2, clips_per_group=1, web_per_class=40, size=32, frames=4,
                      untrimmed_per_class=1)
    assert counts["videos"] == 2 * len(CLASSES) and counts["web_images"] == 40 * len(CLASSES)
    truth = json.loads((tmp_path / "web_truth.json").read_text())
    images = {k: v for k, v in truth.items() if k.startswith("web/")}
    kinds = Counter("right" if v == k.split("/")[1].replace(" ", "_") else "lookalike" if v in CLASSES
                    else "off_topic" if v in OFF_TOPIC else "clutter" if v is None else "?"
                    for k, v in images.items())
    # 70 % noise, split 0.8 / 0.1 / 0.1: every kind of wrong result is there, and nothing else;
    # the wrong results concentrate on the look-alike class, which outnumbers the right results.
    assert set(kinds) == {"right", "lookalike", "off_topic", "clutter"}, kinds
    assert 0.2 < kinds["right"] / len(images) < 0.4
    assert kinds["lookalike"] > kinds["right"] and kinds["lookalike"] > 2 * (kinds["off_topic"] + kinds["clutter"])
    rows = read_manifest(web_manifests(tmp_path)["images"]).rows
    assert len(rows) == len(images)
    by_path = {r["path"]: r for r in rows}
    for rel, true in images.items():
        row = by_path[str(tmp_path / rel)]
        assert row["weak_labels"] == [rel.split("/")[1]] and rel.split("/")[1] in QUERIES.values()
        # An off-topic shape is no target class: for filter precision it counts like clutter.
        assert row["true_label"] == (true if true in CLASSES else None)


def test_validation_groups_get_their_own_clip_count_and_leave_the_training_scenes_as_they_were(tmp_path):
    small = dict(groups=3, clips_per_group=2, web_per_class=2, size=32, frames=4, untrimmed_per_class=1)
    counts = generate(tmp_path / "val", val_groups=(1, 3), val_clips_per_group=1, **small)
    plain = generate(tmp_path / "plain", **small)
    assert counts["videos"] == (1 + 2 + 1) * len(CLASSES) and plain["videos"] == 3 * 2 * len(CLASSES)
    names = sorted(p.name for p in (tmp_path / "val" / "videos" / CLASSES[0]).iterdir())
    assert names == [f"v_{CLASSES[0]}_g{g}.mp4" for g in ("01_c01", "02_c01", "02_c02", "03_c01")]
    # A group's scene depends on its number, not on which groups are held out: the training
    # group and the first clip of each validation group are the very files of the plain layout.
    for name in names:
        rel = f"videos/{CLASSES[0]}/{name}"
        assert (tmp_path / "val" / rel).read_bytes() == (tmp_path / "plain" / rel).read_bytes(), name


def test_the_demo_holds_out_exactly_the_groups_its_data_gives_one_clip():
    from omnisource.config import load_config
    from omnisource.demo.run import DATA, DEMO_OVERRIDES

    cfg = load_config(None, DEMO_OVERRIDES)
    assert [int(g) for g in cfg.target.val_groups] == sorted(DATA["val_groups"])
    train = set(range(1, DATA["groups"] + 1)) - set(DATA["val_groups"])
    assert len(train) == 10 and min(train) == 7  # the training groups of data version 9: 07-16
