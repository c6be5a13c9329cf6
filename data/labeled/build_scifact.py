"""Rebuild ``scifact_train.jsonl`` from the SciFact CSV export (run once by hand; nothing reads this at
run time).

Usage: python data/labeled/build_scifact.py path/to/scifact.zip

One record per distinct (train claim, cited abstract) pair. Claims whose text also appears in the
validation or test splits are dropped: SciFact's validation claims are the BEIR/MTEB SciFact *test* queries.
So are the claims synthembed's contamination audit flags against the bundled evaluation tasks (with the
prepare stage's default settings): SciFact's negated or re-numbered twins of test claims, which cite the very
abstracts judged relevant for their test twins.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import sys
import tokenize
import zipfile
from pathlib import Path

INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


def _ids(cell: str) -> list[str]:
    return [token for token in cell.strip("[] ").replace(",", " ").split() if token]


def _abstract(cell: str) -> str:
    """The ``abstract`` column is a NumPy printout of string literals: ``['sent 1'\\n 'sent 2']``."""
    tokens = tokenize.generate_tokens(io.StringIO(cell.strip()).readline)
    sentences = [ast.literal_eval(token.string) for token in tokens if token.type == tokenize.STRING]
    return " ".join(sentence.strip() for sentence in sentences)


def build(zip_path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    with zipfile.ZipFile(zip_path) as archive:

        def rows(name: str) -> list[dict[str, str]]:
            return list(csv.DictReader(io.TextIOWrapper(archive.open(name), encoding="utf-8")))

        corpus = {
            row["doc_id"]: (row["title"], _abstract(row["abstract"])) for row in rows("corpus_train.csv")
        }
        held_out = {
            row["claim"].strip() for split in ("validation", "test") for row in rows(f"claims_{split}.csv")
        }
        train = rows("claims_train.csv")
    records, seen = [], set()
    for row in train:
        claim = row["claim"].strip()
        if claim in held_out:
            continue
        for doc_id in _ids(row["cited_doc_ids"]):
            if (claim, doc_id) in seen or doc_id not in corpus:
                continue
            seen.add((claim, doc_id))
            title, text = corpus[doc_id]
            records.append(
                {
                    "instruction": INSTRUCTION,
                    "query": claim,
                    "positive": f"{title} {text}".strip(),
                    "claim_id": row["id"],
                    "doc_id": doc_id,
                }
            )
    return records


def without_contaminated(records: list[dict[str, str]]) -> list[dict[str, str]]:
    """The records whose claim the contamination audit does not flag."""
    from synthembed.data.contamination import audit
    from synthembed.data.records import TrainRecord
    from synthembed.params import PrepareParams

    defaults = PrepareParams()
    rows = [TrainRecord(r["instruction"], r["query"], r["positive"], None, "scifact_train", "labeled") for r in records]
    data_dir = Path(__file__).resolve().parents[1] / "eval"
    report = audit(rows, data_dir, ngram=defaults.contamination_ngram, similarity=defaults.contamination_similarity)
    flagged = set(report["flagged_queries"])
    print(f"dropped {sum(r['query'] in flagged for r in records)} records of {len(flagged)} flagged claims")
    return [r for r in records if r["query"] not in flagged]


if __name__ == "__main__":
    out = Path(__file__).with_name("scifact_train.jsonl")
    data = without_contaminated(build(Path(sys.argv[1])))
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8")
    print(f"wrote {len(data)} records to {out}")
