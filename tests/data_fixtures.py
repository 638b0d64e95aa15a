"""Small data the data-pipeline tests write themselves: a manual directory, SFT JSONL, a tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hf_fixtures import write_tokenizer
from mathjax_train.config import load_config

GSM_TRAIN = [
    {
        "question": f"Ann has {n} bags of 4 apples. How many apples does she have?",
        "answer": f"She has {n}*4 = <<{n}*4={4 * n}>>{4 * n} apples.\n#### {4 * n}",
    }
    for n in range(2, 9)
]
GSM_TEST = [
    {"question": "What is 2 + 2?", "answer": "2+2=<<2+2=4>>4\n#### 4"},
    {"question": "What is 3 + 3?", "answer": "3+3=<<3+3=6>>6\n#### 6"},
]
MATH_ROW = {
    "problem": "Find $1+1$.",
    "solution": "We have $1+1=\\boxed{2}$.",
    "answer": "2",
    "level": "Level 1",
    "type": "Algebra",
    "subject": "algebra",
    "unique_id": "train/algebra/0.json",
}
MATH_TRAIN = [
    dict(
        MATH_ROW,
        problem=f"Find ${k}+{k}$.",
        solution=f"We have ${k}+{k}=\\boxed{{{2 * k}}}$.",
        answer=str(2 * k),
        unique_id=f"train/algebra/{k}.json",
    )
    for k in range(1, 6)
]
MATH_TRAIN.append(
    dict(
        MATH_ROW,
        solution="No box here: $\\boxed{}$.",
        answer="",
        level="Level ?",
        unique_id="train/number_theory/7115.json",
        type="Number Theory",
        subject="number_theory",
    )
)
MATH_TEST = [dict(MATH_ROW, unique_id="test/algebra/3.json", level="Level 2")]
MATH500 = [
    {
        "problem": "Find $2+2$.",
        "solution": "$\\boxed{4}$",
        "answer": "4",
        "subject": "Precalculus",
        "level": 3,
        "unique_id": "test/precalculus/807.json",
    }
]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_manual_dir(root: Path) -> Path:
    write_jsonl(root / "gsm8k/train.jsonl", GSM_TRAIN)
    write_jsonl(root / "gsm8k/test.jsonl", GSM_TEST)
    write_jsonl(root / "math/train.jsonl", MATH_TRAIN)
    write_jsonl(root / "math/test.jsonl", MATH_TEST)
    write_jsonl(root / "math/math500.jsonl", MATH500)
    return root


def synthetic_rows(n: int, start: int = 0) -> list[dict]:
    """Distinct SFT rows of varied length (so packing has misfits to deal with)."""
    return [
        {
            "question": f"Question {i}: what is {i} times {i % 7 + 2}?" + " Think." * (i % 5),
            "solution": f"{i} times {i % 7 + 2} is {i * (i % 7 + 2)}." + " Check it again." * (i % 4),
            "answer": str(i * (i % 7 + 2)),
            "source": "unit",
            "level": 1 + i % 5,
        }
        for i in range(start, start + n)
    ]


def setup_data(root: Path) -> dict:
    """Tokenizer, manual dir and a synthetic JSONL under root; returns their paths."""
    write_tokenizer(root / "tok")
    write_manual_dir(root / "manual")
    write_jsonl(root / "synth.jsonl", synthetic_rows(40))
    return {"tok": str(root / "tok"), "manual": str(root / "manual"), "synth": str(root / "synth.jsonl")}


def config(paths: dict, *overrides: str, seq_len: int = 128, batch: int = 4):
    return load_config(
        None,
        [
            f"data.tokenizer={paths['tok']}",
            f"data.data_dir={paths['manual']}",
            f"data.jsonl=[{paths['synth']}]",
            f"train.seq_len={seq_len}",
            f"train.batch_size={batch}",
            *overrides,
        ],
    )


def segments_of(batch):
    """(row, slot indices) of every example packed in a batch, in order."""
    for r in range(batch["tokens"].shape[0]):
        seg = batch["segment_ids"][r]
        for s in range(1, seg.max() + 1):
            yield r, np.flatnonzero(seg == s)


def packed_ids(batch, r, idx) -> list[int]:
    """The example at `idx` of row `r` as prompt + target ids (the inputs and the last target)."""
    return batch["tokens"][r, idx].tolist() + [int(batch["targets"][r, idx[-1]])]
