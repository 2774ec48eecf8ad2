"""Title entities for knowledge-aware models (DKN): MIND's ``title_entities`` JSON aligned to
title token positions, an entity vocabulary saved with the run, and MIND's entity vectors.

``title_entities`` is a JSON list of ``{"Label", "Type", "WikidataId", "Confidence",
"OccurrenceOffsets", "SurfaceForms"}``; the offsets are character offsets into the title.
A token gets the entity whose occurrence span overlaps its own span; the tokens are those of
``nram_core.data.text.tokenize`` (the same pattern, so positions match ``News.tokens``).

``entity_embedding.vec`` (in each MIND split folder) holds ``Qid<TAB>v1<TAB>v2 ...``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..fileio import MAX_JSON_DEPTH, DataError, atomic_write_json, json_depth, read_json_lists
from .split import Split
from .text import _TOKEN_RE, cached_index  # the tokeniser's own pattern, so that spans line up with tokenize()

ENTITY_FILE = "entity_embedding.vec"
PAD_ENTITY = ""


def parse_title_entities(text: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """``(WikidataId, [(start, end), ...])`` of each entity; malformed JSON or entries are ignored.

    >>> parse_title_entities('[{"WikidataId": "Q1", "OccurrenceOffsets": [4], "SurfaceForms": ["Ann"]}]')
    [('Q1', [(4, 7)])]
    """
    try:
        items = json.loads(text) if text and json_depth(text) <= MAX_JSON_DEPTH else []
    except ValueError:
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("WikidataId"), str):
            continue
        forms = [f for f in item.get("SurfaceForms") or [] if isinstance(f, str)]
        label = item.get("Label") if isinstance(item.get("Label"), str) else ""
        offsets = [o for o in item.get("OccurrenceOffsets") or [] if isinstance(o, int) and o >= 0]
        spans = []
        for i, start in enumerate(offsets):
            form = forms[i] if i < len(forms) else (forms[0] if forms else label)
            spans.append((start, start + max(1, len(form))))
        out.append((item["WikidataId"], spans))
    return out


def align_entities(title: str, entities: list[tuple[str, list[tuple[int, int]]]], ids: dict[str, int],
                   length: int) -> np.ndarray:
    """Entity id per token position of ``title`` ([length] int32, 0 where no known entity).

    >>> align_entities("Ann Lee wins big", [("Q1", [(0, 7)])], {"Q1": 5}, 6).tolist()
    [5, 5, 0, 0, 0, 0]
    """
    out = np.zeros(length, dtype=np.int32)
    if not entities:
        return out
    spans = [m.span() for m in _TOKEN_RE.finditer(title.lower())][:length]
    for qid, occurrences in entities:
        entity = ids.get(qid, 0)
        if not entity:
            continue
        for start, end in occurrences:
            for position, (tok_start, tok_end) in enumerate(spans):
                if tok_start < end and start < tok_end:
                    out[position] = entity
    return out


@dataclass(frozen=True)
class EntityVocab:
    """Wikidata ids; index 0 is padding / no entity / unknown."""

    ids: tuple[str, ...]

    @classmethod
    def build(cls, splits: Iterable[Split], *, also: Iterable[str] = ()) -> "EntityVocab":
        """Entities of the given splits' titles plus ``also``, sorted, so the same data gives the same ids."""
        found = set(also)
        for split in splits:
            for text in split.news.title_entities:
                found.update(qid for qid, _ in parse_title_entities(text))
        return cls((PAD_ENTITY, *sorted(found)))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def index(self) -> dict[str, int]:
        return cached_index(self, self.ids, skip_first=True)

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, {"entities": list(self.ids)})

    @classmethod
    def load(cls, path: str | Path) -> "EntityVocab":
        (ids,) = read_json_lists(path, "entities", what="an entity vocabulary")
        return cls(ids)


def with_entities(split: Split, vocab: EntityVocab) -> Split:
    """A copy of ``split`` whose ``news.entities`` [N+1, title_len] holds the entity id of every title token."""
    length = split.news.tokens.shape[1]
    index = vocab.index
    rows = [align_entities(title, parse_title_entities(ents), index, length)
            for title, ents in zip(split.news.titles, split.news.title_entities)]
    table = np.stack(rows) if rows else np.zeros((0, length), dtype=np.int32)
    table[0] = 0  # the padding news
    return dataclasses.replace(split, news=dataclasses.replace(split.news, entities=table))


def entity_files(*folders: Path | None) -> list[Path]:
    """The ``entity_embedding.vec`` files present in the given split folders."""
    return [Path(f) / ENTITY_FILE for f in folders if f is not None and (Path(f) / ENTITY_FILE).is_file()]


def read_entity_ids(paths: Iterable[Path]) -> set[str]:
    """Every Wikidata id that the vector files hold."""
    found: set[str] = set()
    for path in paths:
        try:
            with open(path, "r", encoding="utf-8", errors="replace") as handle:
                found.update(line.split("\t", 1)[0].strip() for line in handle if line.strip())
        except OSError as exc:
            raise DataError(f"{path}: cannot read entity vectors ({exc.strerror or exc})") from exc
    return found


@dataclass(frozen=True)
class EntityVectors:
    vectors: np.ndarray  # [len(vocab), dim] float32; row 0 zero, rows the files lack are zero too
    found: np.ndarray  # [len(vocab)] bool, True where a file gave the vector

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def coverage(self) -> float:
        return float(self.found[1:].mean()) if len(self.found) > 1 else 0.0


def load_entity_vectors(paths: Iterable[Path], vocab: EntityVocab) -> EntityVectors:
    """Vectors of the vocabulary's entities from MIND ``entity_embedding.vec`` files (first file wins)."""
    paths = list(paths)
    if not paths:
        raise DataError(f"no {ENTITY_FILE} to read")
    index = vocab.index
    rows: dict[int, np.ndarray] = {}
    dim = None
    for path in paths:
        try:
            with open(path, "r", encoding="utf-8", errors="replace") as handle:
                for lineno, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    qid, _, rest = line.strip().partition("\t")
                    values = rest.split()
                    if dim is None:
                        dim = len(values)
                    if len(values) != dim or dim == 0:
                        raise DataError(f"{path}:{lineno}: field 'vector' has {len(values)} values, expected {dim}")
                    row = index.get(qid)
                    if row is None or row in rows:
                        continue
                    try:
                        rows[row] = np.asarray(values, dtype=np.float32)
                    except ValueError as exc:
                        raise DataError(f"{path}:{lineno}: field 'vector' is not numeric") from exc
        except OSError as exc:
            raise DataError(f"{path}: cannot read entity vectors ({exc.strerror or exc})") from exc
    if dim is None:
        raise DataError(f"{paths[0]}: no entity vectors")
    vectors = np.zeros((len(vocab), dim), dtype=np.float32)
    found = np.zeros(len(vocab), dtype=bool)
    for row, vector in rows.items():
        vectors[row], found[row] = vector, True
    return EntityVectors(vectors=vectors, found=found)
