"""Queries and hashtags from class names: stemming, permutations, compounds, translations."""
from __future__ import annotations

import json

import pytest

from omnisource.collect.queries import (BUILTIN_VOCABULARY, build_queries, hashtags, query_text,
                                        read_queries, read_translations, split_compound, words_of)
from omnisource.data.manifest import Manifest, ManifestError, new_row, write_manifest


def test_seed_example_beekeeping():
    tags = hashtags("beekeeping", "en", BUILTIN_VOCABULARY)
    assert tags[0] == "#beekeeping"
    assert {"#beekeep", "#keepingbee", "#keepbee"} <= set(tags)
    assert len(tags) == len(set(tags))


def test_words_permutations_and_limits():
    assert words_of("PlayingPiano", split_camel=True) == ["playing", "piano"]
    assert words_of("passing American football (in game)") == ["passing", "american", "football"]
    assert query_text("BasketballDunk") == "basketball dunk"
    tags = hashtags("horse race")
    assert set(tags) == {"#horserace", "#horsrace", "#racehorse", "#racehors"}
    five = hashtags("a b c d e", max_words=4)
    assert five == ["#abcde"]  # beyond max_words only the given order
    assert len(hashtags("one two three")) == 6  # 3! orders, stems equal the words
    assert split_compound("skateboarding", BUILTIN_VOCABULARY) == ["skate", "boarding"]
    assert split_compound("xylophone", BUILTIN_VOCABULARY) == ["xylophone"]
    assert hashtags("surfing")[:2] == ["#surfing", "#surf"]


def test_other_languages_stem_and_keep_unicode():
    de = hashtags("Klavier spielen", "de")
    assert "#klavierspielen" in de and "#spielenklavier" in de and len(de) > 2
    ja = hashtags("サーフィン", "ja")  # no stemmer: raw only, script kept
    assert ja == ["#サーフィン"]


def test_build_queries_with_translation_tables(tmp_path):
    long = tmp_path / "t.csv"
    long.write_text("class,language,text\nbeekeeping,de,Imkerei\nbeekeeping,fr,apiculture|élevage d'abeilles\n"
                    "HorseRace,de,Pferderennen\n")
    wide = tmp_path / "t.tsv"
    wide.write_text("class\tde\tes\nbeekeeping\tImkerei\tapicultura\nHorseRace\t\tcarrera de caballos\n")
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"beekeeping": {"de": "Imkerei", "es": ["apicultura"]}}))
    t_long, t_wide, t_json = (read_translations(p) for p in (long, wide, js))
    assert t_long["beekeeping"]["fr"] == ["apiculture", "élevage d'abeilles"]
    assert t_wide["HorseRace"] == {"de": [], "es": ["carrera de caballos"]}
    assert t_json["beekeeping"]["es"] == ["apicultura"]
    rows = build_queries(["beekeeping", "HorseRace"], t_long)
    assert set(rows[0]) == {"query", "class", "language", "kind"}
    q = {(r["query"], r["class"], r["language"], r["kind"]) for r in rows}
    assert ("beekeeping", "beekeeping", "en", "query") in q and ("horse race", "HorseRace", "en", "query") in q
    assert ("Imkerei", "beekeeping", "de", "query") in q and ("#imkerei", "beekeeping", "de", "hashtag") in q
    assert ("#apicultur", "beekeeping", "fr", "hashtag") in q  # French stemmer
    assert ("#abeilleslevage", "beekeeping", "fr", "hashtag") not in q
    assert ("#élevagedabeilles", "beekeeping", "fr", "hashtag") in q
    only_de = build_queries(["beekeeping", "HorseRace"], t_long, languages=["de"])
    assert {r["language"] for r in only_de} == {"en", "de"}
    plain = build_queries(["beekeeping"], t_json, with_hashtags=False)
    assert [r["kind"] for r in plain] == ["query"] * 3
    with pytest.raises(ManifestError, match="not in the class list"):
        build_queries(["HorseRace"], t_long)
    bad = tmp_path / "bad.csv"
    bad.write_text("language,text\nde,x\n")
    with pytest.raises(ManifestError, match="first column must be `class`"):
        read_translations(bad)


def test_cli_writes_query_manifest(tmp_path):
    from typer.testing import CliRunner

    from omnisource.cli import app

    ws = tmp_path / "ws"
    tr = tmp_path / "tr.csv"
    tr.write_text("class,de\nPlayingPiano,Klavier spielen\n")
    res = CliRunner().invoke(app, ["queries", "-w", str(ws), "-C", "PlayingPiano", "-C", "beekeeping",
                                   "--translations", str(tr)])
    assert res.exit_code == 0, res.output
    rows = read_queries(ws / "manifests" / "queries.parquet")
    assert {"#keepingbee", "#pianoplaying", "#klavierspielen", "playing piano"} <= {r["query"] for r in rows}
    assert (ws / "manifests" / "queries.tsv").read_text().startswith("query\tclass\tlanguage\tkind\n")
    # Default classes: the target manifest's.
    write_manifest(Manifest([new_row("target", "video", "a.mp4", label=0)], ["HorseRace"]),
                   ws / "manifests" / "target.parquet")
    res = CliRunner().invoke(app, ["queries", "-w", str(ws), "--no-hashtags"])
    assert res.exit_code == 0, res.output
    assert read_queries(ws / "manifests" / "queries.parquet") == [
        {"query": "horse race", "class": "HorseRace", "language": "en", "kind": "query"}]
    res = CliRunner().invoke(app, ["queries", "-w", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no target manifest" in res.output
