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
