"""Web queries map to target classes through the query manifest's class column, and the queries
that name no class are reported, never dropped without a word (issue 15, defect 5)."""
from omnisource.collect.queries import build_queries, write_queries
from omnisource.config import WebSourceConfig
from omnisource.console import console
from omnisource.select.stage import select_rows
from omnisource.web import query_classes
from omnisource.workspace import Workspace

CLASSES = ["HorseRace", "PlayingPiano"]


def _rows():
    labels = ["#racehorse", "Klavier spielen", "horse race", "horse racing", "horse racing", "basketball"]
    return [{"id": str(i), "status": "ok", "weak_labels": [q]} for i, q in enumerate(labels)]


def test_queries_manifest_maps_hashtags_and_translations_and_warns_of_the_rest(tmp_path):
    ws = Workspace.of(tmp_path / "ws")
    ws.manifests_dir.mkdir(parents=True)
    write_queries(build_queries(CLASSES, {"PlayingPiano": {"de": ["Klavier spielen"]}}), ws.queries)
    src = WebSourceConfig(name="img", root=str(tmp_path))
    rows = _rows()
    queries = [r["weak_labels"][0] for r in rows]
    with console.capture() as cap:
        index = query_classes(ws, src, CLASSES, queries, "select")
    assert index == {"#racehorse": 0, "Klavier spielen": 1, "horse race": 0, "horse racing": -1, "basketball": -1}
    lines = [ln for ln in cap.get().splitlines() if ln.strip()]
    assert len(lines) == 1, lines  # one line per source
    assert "select img: 2 queries name no target class, 3 samples: 'horse racing' (2), 'basketball' (1)" in lines[0]
    assert "query_map" in lines[0]
    # The query map of the source still wins, and a mapped source says nothing.
    src.query_map = {"horse racing": "HorseRace", "basketball": "PlayingPiano"}
    with console.capture() as cap:
        assert query_classes(ws, src, CLASSES, queries, "select")["horse racing"] == 0
    assert cap.get().strip() == ""
    # Without the query manifest, a hashtag and a translation name no class.
    ws.queries.unlink()
    src.query_map = {}
    with console.capture():
        plain = query_classes(ws, src, CLASSES, queries, "select")
    assert plain["#racehorse"] == -1 and plain["Klavier spielen"] == -1


def test_unmapped_rows_keep_a_reason_naming_the_query(tmp_path):
    rows = _rows()
    scores = {r["id"]: {"pred": 0, "prob": 0.9} for r in rows}
    index = {"#racehorse": 0, "Klavier spielen": 1, "horse race": 0, "horse racing": -1, "basketball": -1}
    out, stats = select_rows(rows, scores, CLASSES, "both", 0.5, {}, index)
    assert len(out) == len(rows)
    why = {r["weak_labels"][0]: r["reason"] for r in out if r["status"] == "rejected"}
    assert why["basketball"] == "query 'basketball' names no target class (map it with the source's query_map)"
    assert "horse racing" in why and stats["kept"] == 2  # #racehorse and horse race (teacher says 0)
