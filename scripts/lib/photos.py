"""The photos the scripts upload: the sample photos and the test corpus.

``SAMPLES`` (scripts/samples/) holds a few photos for the demo; ``CORPUS`` (tests/data/corpus/,
or the folder CLIPQ_CORPUS names) lists its files in ``manifest.tsv`` (columns ``file``,
``expect``, ``note``); the ``index`` rows are photos the worker must index. A bigger corpus of
the same layout may lie beside a checkout (``SHARED_CORPUS``).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from scripts.lib import ROOT

SAMPLES = ROOT / "scripts" / "samples"
REPO_CORPUS = ROOT / "tests" / "data" / "corpus"
CORPUS = Path(os.environ.get("CLIPQ_CORPUS", REPO_CORPUS))
SHARED_CORPUS = ROOT.parent / "shared" / "corpus"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def listing(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted; [] when it is missing."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def sample_photos() -> list[Path]:
    return listing(SAMPLES)


def upload_photos(folder: Path | None = None) -> list[Path]:
    """Photos to upload: ``folder``'s when given, else the samples, else the corpus's real photos."""
    if folder is not None:
        return listing(folder)
    return sample_photos() or listing(CORPUS / "real")


def first_corpus() -> Path:
    """The corpus with a manifest: ``CORPUS``, else the shared one beside the checkout."""
    return next((d for d in (CORPUS, SHARED_CORPUS) if (d / "manifest.tsv").is_file()), CORPUS)


def corpus_files(expect: str = "index", corpus: Path | None = None) -> list[Path]:
    """The files of the manifest's rows with this ``expect``; [] without a manifest."""
    corpus = corpus or CORPUS
    if not (corpus / "manifest.tsv").is_file():  # absent where only part of the repository travelled
        return []
    with open(corpus / "manifest.tsv") as f:
        return [corpus / r["file"] for r in csv.DictReader(f, delimiter="\t") if r["expect"] == expect]


def read_all(paths: list[Path]) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each path."""
    return [(p.name, p.read_bytes()) for p in paths]
