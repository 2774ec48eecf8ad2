"""MIND leaderboard files: ``prediction.txt`` (a line ``ImpId [r1,r2,...]`` per impression) and the
``prediction.zip`` that holds it, written from the scores of ``scoring.score_impressions``."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .data.split import Split
from .fileio import atomic_path, atomic_write_with
from .metrics import impression_ranks

PREDICT_BLOCK = 1 << 16  # impressions ranked and written at a time (a MIND-large test split has 57M candidates)


def prediction_lines(split: Split, scores: np.ndarray, offsets: np.ndarray) -> Iterator[str]:
    """MIND leaderboard lines ``ImpId [r1,r2,...]`` with their newline, one per impression in file
    order, ranked ``PREDICT_BLOCK`` impressions at a time: the 1-based rank of each candidate in its
    listed order, ties broken by ``metrics.impression_ranks``. Each ImpId is the text of
    behaviors.tsv (``007`` stays ``007``): MIND's scorer matches the two files' ids as text."""
    for lo in range(0, len(offsets) - 1, PREDICT_BLOCK):
        part = offsets[lo: min(lo + PREDICT_BLOCK, len(offsets) - 1) + 1]  # [b+1]
        ranks = impression_ranks(scores[part[0]: part[-1]], part).tolist()  # [m] for the block's candidates
        starts = (part - part[0]).tolist()
        for i, imp_id in enumerate(split.behaviors.impression_id_texts(lo, lo + len(part) - 1)):
            yield f"{imp_id} [{','.join(map(str, ranks[starts[i]: starts[i + 1]]))}]\n"


def write_predictions(folder: str | Path, split: Split, scores: np.ndarray,
                      offsets: np.ndarray) -> tuple[Path, Path]:
    """Write ``folder/prediction.txt`` and ``folder/prediction.zip`` (the file the leaderboard
    takes), each atomically; return their paths. The text is streamed: the lines of 2.4M
    impressions are never all in memory."""
    text, archive = Path(folder) / "prediction.txt", Path(folder) / "prediction.zip"

    def write_lines(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.writelines(prediction_lines(split, scores, offsets))

    atomic_write_with(text, write_lines)
    with atomic_path(archive) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zipped:
            zipped.write(text, "prediction.txt")
    return text, archive
