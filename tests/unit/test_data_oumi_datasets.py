"""Oumi's registered GRPO datasets as prompt sources (offline: local copies via dataset_path):
Oumi's own prompts, and the ground truth as the columns the built-in rewards read."""

from __future__ import annotations

import json

from oumi_megatron.data.sources import DatasetSpec, load_source
from oumi_megatron.rewards.countdown import countdown_equation
from oumi_megatron.rewards.gsm8k import gsm8k_accuracy


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_countdown_rows_come_from_oumis_class(tmp_path):
    path = _jsonl(tmp_path / "countdown.jsonl", [{"target": 24, "nums": [2, 3, 4]}] * 2)
    source = load_source(DatasetSpec("d1shs0ap/countdown", dataset_path=path))
    row = source.rows[0].data
    assert len(source.rows) == 2 and source.label == "d1shs0ap/countdown[train]"
    content = row["prompt"][0]["content"]  # Oumi's TinyZero prompt, as its GRPO trainers see it
    assert "Using the numbers [2, 3, 4], create an equation that equals 24" in content
    assert row["reward_model"]["ground_truth"] == {"target": 24, "numbers": [2, 3, 4]}
    assert (row["target"], row["numbers"]) == (24, [2, 3, 4])
    scores = countdown_equation(["<answer>(2 + 4) * 4</answer>", "<answer>2*3*4</answer>"],
                                target=[24, 24], numbers=[[2, 3, 4]] * 2)  # fmt: skip
    assert scores[1] == 1.0 and scores[0] < 1.0  # 4 used twice: not an allowed equation


def test_gsm8k_rows_come_from_oumis_class(tmp_path):
    rows = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"}]
    source = load_source(
        DatasetSpec("openai/gsm8k", dataset_path=_jsonl(tmp_path / "g.jsonl", rows))
    )
    row = source.rows[0].data
    assert row["prompt"][0]["content"].startswith("Tom has 3 apples and buys 4. How many? ")
    assert 'output the final answer after "####"' in row["prompt"][0]["content"]
    assert row["answer"] == "7" and row["extra_info"]["answer"] == rows[0]["answer"]
    assert gsm8k_accuracy(["so #### 7", "#### 8"], answer=[row["answer"]] * 2) == [1.0, 0.0]
