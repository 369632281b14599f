"""Search queries and hashtags from class names (DESIGN.md §1, "Collection").

* **Queries**: the class name itself, no expansion (OmniSource): ``PlayingPiano`` -> ``playing piano``.
* **Hashtags** (Ghadiyaram et al.): the words of the name, stemmed (snowballstemmer) and permuted, glued
  together: ``beekeeping`` -> ``#beekeeping``, ``#beekeep``, ``#keepingbee``, ``#keepbee``. A single
  word is first split into known words when it is a compound (``beekeeping`` = ``bee`` + ``keeping``);
  the known words are a small built-in list of action vocabulary, the words of all the class names,
  and any user list.
* **Translations** (SPL: several languages per query) come from a user table, never from a service:
  CSV/TSV in long form (``class,language,text``) or wide form (``class,de,fr,...``), or JSON
  ``{"class": {"de": "text" | ["text", ...]}}``. A cell may hold several texts separated by ``|``.

The result is a query manifest: one row per (query, class, language, kind), kind = query | hashtag.
"""
from __future__ import annotations

import csv
import itertools
import json
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import snowballstemmer

from ..data.manifest import ManifestError, atomic_write_bytes, atomic_write_text

QUERY_COLUMNS = ("query", "class", "language", "kind")

# ISO 639-1 codes (and the stemmer names themselves) -> snowball algorithm names.
_STEMMER_NAMES = {
    "en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian", "pt": "portuguese",
    "nl": "dutch", "ru": "russian", "sv": "swedish", "da": "danish", "no": "norwegian", "nb": "norwegian",
    "fi": "finnish", "hu": "hungarian", "ro": "romanian", "tr": "turkish", "ar": "arabic", "el": "greek",
    "hi": "hindi", "id": "indonesian", "ca": "catalan", "eu": "basque", "cs": "czech", "pl": "polish",
    "lt": "lithuanian", "ga": "irish", "et": "estonian", "hy": "armenian", "sr": "serbian", "ta": "tamil",
    "ne": "nepali", "fa": "persian", "yi": "yiddish", "eo": "esperanto", "st": "sesotho",
}

# Common words of action / sport class names, so that compounds such as "beekeeping" or
# "skateboarding" split into permutable parts. Extend with `vocabulary=`.
BUILTIN_VOCABULARY = frozenset("""
air arm arms back bag ball balls band bar bars base basket bat beam bed bee bench bike bikes bird
blow board boarding boat body book bow bowl bowling box boxing bread brush brushing building
bungee cake car card cards cart catch chair cheer climb climbing clip coat cook cooking cream cross
cut cutting dance dancing dive diving dog door down drum drums dunk egg eye face fall field fight
fire fish fishing fly flying foot fork front golf grass guitar hair hammer hand hands head hit hockey
horse house hula ice ironing jack jet jump jumping keep keeper keeping kick kicking kite knit knitting
lake land leg legs lift lifting make makeup man mat milk mop mopping motor moto mountain nail net
pan paper park pen pie ping play playing pole pong pool pull push race racing rain ride riding ring
rock rod roll roller row rowing run running sail sailing sand saw sea shave shaving shoe shot sit
skate skating ski skiing sky snow soccer sport sports stand step stick surf surfing swim swimming
table tai tennis throw throwing tie top tree trick truck walk walking wall wash washing watch water
wave way weight wheel wind window wood work write writing yo yoga
""".split())

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def stemmer_name(language: str) -> str | None:
    """Snowball algorithm for an ISO code or algorithm name, None when snowball has none."""
    lang = (language or "").strip().lower()
    name = _STEMMER_NAMES.get(lang, lang)
    return name if name in snowballstemmer.algorithms() else None


def words_of(text: str, split_camel: bool = False) -> list[str]:
    """Lower-case words of a name: punctuation, ``_`` and ``-`` separate words; parenthesised
    remarks are dropped; ``split_camel`` splits ``PlayingPiano`` into two words."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"\([^)]*\)", " ", text)
    if split_camel:
        text = _CAMEL.sub(" ", text)
    cleaned = "".join(ch if ch.isalnum() else " " for ch in text)
    return [w for w in cleaned.lower().split() if w]


def split_compound(word: str, vocabulary: Iterable[str], min_part: int = 3, max_parts: int = 3) -> list[str]:
    """``word`` as the fewest known words (each at least ``min_part`` letters), or ``[word]``.
    Among splits with as many parts, the one with the longest first part wins (deterministic)."""
    vocab = {v for v in vocabulary if len(v) >= min_part}
    splits: list[list[str]] = []

    def search(rest: str, parts: list[str]):
        if not rest:
            if len(parts) >= 2:
                splits.append(parts)
            return
        if len(parts) < max_parts:
            for end in range(len(rest), min_part - 1, -1):
                if rest[:end] in vocab:
                    search(rest[end:], parts + [rest[:end]])

    search(word, [])
    if not splits:
        return [word]
    return min(splits, key=lambda parts: (len(parts), [-len(p) for p in parts]))


def hashtags(text: str, language: str = "en", vocabulary: Iterable[str] = (), max_words: int = 4,
             split_camel: bool = False) -> list[str]:
    """Hashtags of a name: every permutation of its words (only the given order beyond
    ``max_words`` words; a one-word name is split into known words first), each glued raw and
    glued stemmed.
    The unpermuted raw form comes first; the rest are sorted."""
    words = words_of(text, split_camel)
    if len(words) == 1:  # a compound name ("beekeeping"): permute its parts; names of several
        words = split_compound(words[0], vocabulary)  # words permute as written
    if not words:
        return []
    name = stemmer_name(language)
    stem = snowballstemmer.stemmer(name).stemWord if name else (lambda w: w)
    orders: Iterable[Sequence[str]] = itertools.permutations(words) if len(words) <= max_words else [words]
    tags: set[str] = set()
    for order in orders:
        tags.add("".join(order))
        tags.add("".join(stem(w) for w in order))
    first = "".join(words)
    tags.discard(first)
    return ["#" + first] + sorted("#" + t for t in tags if t)


def query_text(name: str, split_camel: bool = True) -> str:
    """The search query of a class name: its words, lower case, space separated."""
    return " ".join(words_of(name, split_camel)) or name.strip()


# ----------------------------------------------------------------------------- translations
def _cells(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split("|")
    return [str(v).strip() for v in items if str(v).strip()]


def read_translations(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """{class: {language: [text, ...]}} from a CSV/TSV (long or wide form) or JSON table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: translation table not found")
    out: dict[str, dict[str, list[str]]] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ManifestError(f"{path}: expected {{class: {{language: text}}}}")
        for cls, langs in data.items():
            for lang, texts in langs.items():
                out.setdefault(str(cls), {}).setdefault(str(lang).lower(), []).extend(_cells(texts))
        return out
    text = path.read_text(encoding="utf-8-sig")
    delim = "\t" if path.suffix.lower() in (".tsv", ".tab") or "\t" in text.splitlines()[0:1][0] else ","
    reader = csv.reader(text.splitlines(), delimiter=delim)
    header = [h.strip().lower() for h in next(reader, [])]
    if not header or header[0] not in ("class", "label", "name"):
        raise ManifestError(f"{path}: the first column must be `class` (long form: class,language,text; "
                            f"wide form: class,<language>,...), got {header[:3]}")
    long_form = "language" in header
    if long_form:
        text_col = next((c for c in ("text", "query", "translation") if c in header), None)
        if text_col is None:
            raise ManifestError(f"{path}: long form needs a `text` column next to `language`")
        li, ti = header.index("language"), header.index(text_col)
    for n, rec in enumerate(reader, start=2):
        if not rec or not rec[0].strip() or rec[0].lstrip().startswith("#"):
            continue
        cls = rec[0].strip()
        if long_form:
            if len(rec) <= max(li, ti):
                raise ManifestError(f"{path}: line {n} has {len(rec)} fields, expected {len(header)}")
            out.setdefault(cls, {}).setdefault(rec[li].strip().lower(), []).extend(_cells(rec[ti]))
        else:
            for lang, cell in zip(header[1:], rec[1:]):
                out.setdefault(cls, {}).setdefault(lang, []).extend(_cells(cell))
    return out


# ----------------------------------------------------------------------------- manifest
def build_queries(classes: Sequence[str], translations: dict[str, dict[str, list[str]]] | None = None,
                  languages: Sequence[str] | None = None, with_hashtags: bool = True, max_words: int = 4,
                  vocabulary: Iterable[str] = (), base_language: str = "en") -> list[dict]:
    """Query-manifest rows (query, class, language, kind) for every class, in class order.

    ``languages`` keeps only these translation languages (None = all in the table). Classes of the
    table that are not in ``classes`` raise ManifestError (a typo would silently lose queries)."""
    classes = [c for c in classes if str(c).strip()]
    if not classes:
        raise ManifestError("no class names given")
    translations = translations or {}
    unknown = sorted(set(translations) - set(classes))
    if unknown:
        raise ManifestError(f"translation table names classes that are not in the class list: {unknown[:10]}")
    wanted = {lang.lower() for lang in languages} if languages else None
    vocab = set(BUILTIN_VOCABULARY) | {w.lower() for w in vocabulary}
    for c in classes:
        vocab.update(w for w in words_of(c, split_camel=True) if len(w) >= 3)
    rows: list[dict] = []
    seen: set[tuple] = set()

    def add(query: str, cls: str, lang: str, kind: str):
        key = (query, cls, lang, kind)
        if query and key not in seen:
            seen.add(key)
            rows.append(dict(zip(QUERY_COLUMNS, key)))

    for cls in classes:
        texts = [(base_language, query_text(cls), True)]
        for lang, items in sorted(translations.get(cls, {}).items()):
            if wanted is None or lang in wanted:
                texts.extend((lang, t, False) for t in items)
        for lang, text, is_base in texts:
            add(text if is_base else text.strip(), cls, lang, "query")
            if with_hashtags:
                for tag in hashtags(text, lang, vocab, max_words):
                    add(tag, cls, lang, "hashtag")
    return rows


def write_queries(rows: list[dict], path: str | Path) -> Path:
    """Parquet query manifest (atomic) plus a TSV copy next to it for other tools."""
    path = Path(path)
    table = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in QUERY_COLUMNS})
    atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp))
    lines = ["\t".join(QUERY_COLUMNS)] + ["\t".join(r[c] for c in QUERY_COLUMNS) for r in rows]
    atomic_write_text(path.with_suffix(".tsv"), "\n".join(lines) + "\n")
    return path


def read_queries(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: query manifest not found")
    return pq.read_table(path).to_pylist()


def read_class_list(path: str | Path) -> list[str]:
    """One class name per line (blank lines and # comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class list not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def queries_stage(workspace: str | Path, classes: Sequence[str] | None = None,
                  translations: str | Path | None = None, languages: Sequence[str] | None = None,
                  with_hashtags: bool = True, max_words: int = 4, vocabulary: Iterable[str] = (),
                  out: str | Path | None = None) -> Path:
    """Write WORKSPACE/manifests/queries.parquet; classes default to the target manifest's."""
    from ..workspace import Workspace

    ws = Workspace.of(workspace)
    if not classes:
        from ..data.manifest import read_manifest

        classes = read_manifest(ws.target_manifest()).classes
        if not classes:
            raise ManifestError(f"{ws}: the target manifest names no classes; pass --class or --classes")
    table = read_translations(translations) if translations else None
    rows = build_queries(classes, table, languages, with_hashtags, max_words, vocabulary)
    return write_queries(rows, Path(out) if out else ws.queries)
