"""The hostile corpus (tests/hostile_corpus.py) through every path that gives files a verdict:
``import-web`` (query folders), ``clean validate`` (web manifests), target ``import`` + ``validate``
(class folders). Each path runs as the real command in a child process with a time limit and a
memory check; every entry must keep exactly one row with a status and a reason, and a file must
get the same verdict on every path."""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from hostile_corpus import MAX_PIXELS, make_corpus
from omnisource.data.manifest import Manifest, new_row, read_manifest, write_manifest

TIMEOUT_S = 300  # per command; the whole corpus takes seconds
MAX_RSS_MB = 1000  # a 30000x30000 bomb decoded would need 2.7 GB
RULES = [f"media.max_pixels={MAX_PIXELS}"]


# The CLI child appends its peak RSS (its own and its children's, in KB) to the file named by
# RSS_OUT when it exits: the figure of this test's commands alone, whatever else the suite ran.
_CLI = ("import atexit, os, resource\n"
        "def _peak():\n"
        "    kb = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))\n"
        "    with open(os.environ['RSS_OUT'], 'a') as f:\n"
        "        f.write(f'{kb}\\n')\n"
        "atexit.register(_peak)\n"
        "from omnisource.cli import main\n"
        "main()\n")


def _cli(*args, rss_out: Path) -> str:
    env = dict(os.environ, COLUMNS="200", RSS_OUT=str(rss_out))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    res = subprocess.run([sys.executable, "-c", _CLI, *map(str, args)],
                         capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    return res.stdout


def _place(entries, folder: Path) -> None:
    """Copy the entries into `folder/<group>/` (directories stay empty directories)."""
    for e in entries:
        dst = folder / e.group / e.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if e.is_dir:
            dst.mkdir()
        elif e.fifo:
            os.mkfifo(dst)
        else:
            shutil.copyfile(e.path, dst)


def _verdicts(rows: list[dict]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list] = {}
    for r in rows:
        name = Path(r.get("orig_path") or r["path"]).name
        out.setdefault(name, []).append((r["status"], r["reason"]))
    return out


def test_corpus_every_path_every_row_same_verdict(tmp_path):
    rss_out = tmp_path / "peak_rss_kb.txt"
    _cli_run = functools.partial(_cli, rss_out=rss_out)
    entries = make_corpus(tmp_path / "corpus")
    names = {e.name for e in entries}
    assert len(names) == len(entries)
    paths: dict[str, dict] = {}

    # import-web: one image and one trimmed-video source of query folders
    web = tmp_path / "web"
    _place(entries, web)
    for group in ("image", "video"):
        (web / group).rename(web / f"{group}_q")
        (web / group).mkdir()
        (web / f"{group}_q").rename(web / group / "q")
    sources = (f"web=[{{name: img, kind: image, root: '{web / 'image'}'}}, "
               f"{{name: vid, kind: trimmed, root: '{web / 'video'}'}}]")
    ws = tmp_path / "ws_web"
    _cli_run("import-web", "-w", ws, sources, *RULES)
    paths["import-web"] = _verdicts([r for s in ("img", "vid")
                                     for r in read_manifest(ws / "manifests" / f"web_{s}.parquet").rows])

    # clean validate: web manifests listing the corpus files (as a download or an import writes them)
    ws = tmp_path / "ws_clean"
    for group, source in (("image", "img"), ("video", "vid")):
        rows = [new_row(source, group, str(e.path), weak_labels=["q"]) for e in entries if e.group == group]
        write_manifest(Manifest(rows, []), ws / "manifests" / f"web_{source}.parquet")
    _cli_run("clean", "validate", "-w", ws, *RULES)
    paths["clean validate"] = _verdicts([r for s in ("img", "vid")
                                         for r in read_manifest(ws / "manifests" / f"web_{s}.parquet").rows])

    # target import + validate: the two groups are two classes
    target = tmp_path / "target"
    _place(entries, target)
    ws = tmp_path / "ws_target"
    _cli_run("import", "-w", ws, f"target.root={target}", *RULES)
    paths["import (target)"] = _verdicts(read_manifest(ws / "manifests" / "target.parquet").rows)
    _cli_run("validate", "-w", ws, f"target.root={target}", *RULES)
    paths["import + validate (target)"] = _verdicts(read_manifest(ws / "manifests" / "target.validated.parquet").rows)

    peaks = [int(x) for x in rss_out.read_text().split()]
    assert len(peaks) == 4  # one figure per command
    rss_mb = max(peaks) / 1024
    summary = {"entries": len(entries), "max_child_rss_mb": round(rss_mb)}
    for path, got in paths.items():
        assert set(got) == names, (path, sorted(names ^ set(got)))  # no row lost, none invented
        assert all(len(v) == 1 for v in got.values()), path  # one row per entry
        assert all(v[0][0] in ("ok", "corrupt", "rejected") for v in got.values())
        assert all(v[0][1] for v in got.values() if v[0][0] != "ok"), path  # every refusal says why
        summary[path] = dict(Counter(v[0][0] for v in got.values()), rows=len(got))
    final = {k: paths[k] for k in ("import-web", "clean validate", "import + validate (target)")}
    for e in entries:
        seen = {k: v[e.name][0] for k, v in final.items()}
        web_verdicts = {seen["import-web"], seen["clean validate"]}
        if e.is_dir:  # a web source has no frame folders; a target calls it an empty one
            assert {s for s, _ in seen.values()} == {"corrupt"}, (e.name, seen)
            continue
        assert len(web_verdicts) == 1, (e.name, seen)
        status, reason = seen["import-web"]
        if e.expect is not None:
            assert status == e.expect and e.reason in reason, (e.name, seen)
        if e.kind_specific:  # the content is of the other kind: fine for a target, refused by the web source
            assert seen["import + validate (target)"][0] == "ok", (e.name, seen)
        else:
            assert seen["import + validate (target)"] == (status, reason), (e.name, seen)
    assert rss_mb < MAX_RSS_MB, summary
    print("hostile corpus:", json.dumps(summary))
