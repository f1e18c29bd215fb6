"""Task accuracy beside speed: GSM8K through lm-eval (`lm-eval`, an optional extra), its `local-completions` model
against the server that is up, scored by exact match with a Wilson interval, gated against the recorded score and
an absolute floor.

No pytest and no vLLM here: the check's settings, the lm-eval task file and command, the reading of its results,
the interval and the verdict. The runner runs the command; correctness_check.py records and judges. Nothing is
downloaded: lm-eval runs with the Hugging Face hubs offline, on a data file the matrix names or on the copy of
`openai/gsm8k` in this machine's Hugging Face cache; without either the item says how to provide one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK = "dsr1_gsm8k"
METRIC = "exact_match,strict-match"
HUB_ID = "openai/gsm8k"


@dataclass(frozen=True)
class Gsm8kCheck:
    """A model's GSM8K check (the matrix's `accuracy.gsm8k`)."""

    data: str | None = None  # a GSM8K JSONL file (question, answer); None: openai/gsm8k from the HF cache
    fewshot_data: str | None = None  # the file few-shot examples come from (default: `data`'s own train split)
    limit: int = 250  # questions scored (the first N)
    num_fewshot: int = 5
    floor: float = 0.0  # the score a model must reach: fails when even the interval's upper end is below it
    concurrent: int = 8  # requests in flight
    max_gen_toks: int = 512

    def describe(self) -> str:
        source = self.data or f"{HUB_ID} from the Hugging Face cache"
        return f"GSM8K, {self.limit} questions, {self.num_fewshot}-shot, floor {self.floor:.2f}, from {source}"


def hf_cache_dirs() -> list[Path]:
    """Where the Hugging Face hub and datasets caches keep openai/gsm8k on this machine."""
    home = Path(os.environ.get("HF_HOME") or Path(os.path.expanduser("~")) / ".cache" / "huggingface")
    hub = Path(os.environ.get("HF_HUB_CACHE") or home / "hub")
    datasets = Path(os.environ.get("HF_DATASETS_CACHE") or home / "datasets")
    return [hub / "datasets--openai--gsm8k", datasets / "openai___gsm8k"]


def dataset_problem(check: Gsm8kCheck) -> str | None:
    """Why the check has no data here, with how to provide it; None when it has."""
    if check.data is not None:
        path = Path(check.data)
        if not path.is_file():
            return (
                f"the GSM8K file {path} (accuracy.gsm8k.data) does not exist: write a JSONL file of GSM8K records "
                '({"question": ..., "answer": "... #### 42"}) there, or fix the path'
            )
        if check.num_fewshot and not Path(check.fewshot_data or path).is_file():
            return f"the few-shot file {check.fewshot_data} (accuracy.gsm8k.fewshot_data) does not exist"
        return None
    if any(d.is_dir() for d in hf_cache_dirs()):
        return None
    return (
        f"{HUB_ID} is not in this machine's Hugging Face cache ({', '.join(map(str, hf_cache_dirs()))}) and nothing "
        'is downloaded during a run: on a machine with internet access run `python -c "import datasets; '
        f"datasets.load_dataset('{HUB_ID}', 'main')\"` and copy the cache, or set accuracy.gsm8k.data in the matrix "
        "to a GSM8K JSONL file"
    )


def task_yaml(check: Gsm8kCheck) -> str:
    """lm-eval's own gsm8k task (its prompt, stop sequences, answer regex and exact-match rules), reading the data
    from `check.data` when set. JSON, which YAML reads as it is."""
    task: dict[str, Any] = {
        "task": TASK,
        "output_type": "generate_until",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "metric_list": [
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                "ignore_case": True,
                "ignore_punctuation": False,
                "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
            }
        ],
        "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False, "temperature": 0.0},
        "repeats": 1,
        "num_fewshot": check.num_fewshot,
        "filter_list": [
            {
                "name": "strict-match",
                "filter": [
                    {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                    {"function": "take_first"},
                ],
            }
        ],
        "metadata": {"version": 3.0},
    }
    if check.data is None:
        task.update(dataset_path=HUB_ID, dataset_name="main", test_split="test", fewshot_split="train")
    else:
        files = {"test": check.data, "train": check.fewshot_data or check.data}
        task.update(dataset_path="json", dataset_kwargs={"data_files": files}, test_split="test", fewshot_split="train")
    return json.dumps(task, indent=2) + "\n"


def lm_eval_argv(
    python: str, completions_url: str, model: str, tokenizer: str, check: Gsm8kCheck, task_dir: Path, out: Path
) -> list[str]:
    """The lm-eval command: its local-completions model against the endpoint, our task, the results in `out`."""
    model_args = ",".join(
        [
            f"model={model}",
            f"base_url={completions_url}",
            f"tokenizer={tokenizer}",
            "tokenizer_backend=huggingface",
            "tokenized_requests=False",
            f"num_concurrent={check.concurrent}",
            f"max_gen_toks={check.max_gen_toks}",
            "max_retries=1",
        ]
    )
    return [
        python,
        "-m",
        "lm_eval",
        "--model",
        "local-completions",
        "--model_args",
        model_args,
        "--tasks",
        TASK,
        "--include_path",
        str(task_dir),
        "--num_fewshot",
        str(check.num_fewshot),
        "--limit",
        str(check.limit),
        "--output_path",
        str(out),
        "--seed",
        "1234",
    ]


def offline_env() -> dict[str, str]:
    """lm-eval's environment: no hub download, whatever the caller's environment says."""
    return {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def read_score(out: Path) -> tuple[float, int]:
    """(exact-match score, questions scored) from lm-eval's results file in `out`. A ValueError says what is
    missing."""
    found = sorted(out.rglob("results_*.json"))
    if not found:
        raise ValueError(f"lm-eval wrote no results_*.json under {out}")
    data = json.loads(found[-1].read_text())
    try:
        score = float(data["results"][TASK][METRIC])
        n = int(data["n-samples"][TASK]["effective"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{found[-1]}: no {METRIC} score or sample count for {TASK} ({exc!r})") from None
    if not (0.0 <= score <= 1.0) or n < 1:
        raise ValueError(f"{found[-1]}: score {score} over {n} questions is not a proportion")
    return score, n


def wilson(score: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default): sound at 0, 1 and small n, where the normal
    approximation is not."""
    centre = (score + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(score * (1 - score) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Gsm8kResult:
    score: float
    n: int
    low: float
    high: float
    recorded: float | None  # the recorded score it was gated against (None: recorded now, or none)
    floor: float
    failed: bool
    why: str

    def line(self) -> str:
        against = f"recorded {self.recorded:.3f}" if self.recorded is not None else "no recorded score"
        return (
            f"GSM8K exact match {self.score:.3f} [{self.low:.3f}, {self.high:.3f}] over {self.n} questions "
            f"({against}, floor {self.floor:.2f}): {self.why}"
        )


def judge_gsm8k(score: float, n: int, recorded: float | None, floor: float) -> Gsm8kResult:
    """Below the floor, or below the recorded score, only where the whole 95% interval is: a score a few questions
    lower than the record is noise at this sample size, and the interval says how much."""
    low, high = wilson(score, n)
    if high < floor:
        return Gsm8kResult(score, n, low, high, recorded, floor, True, f"below the floor {floor:.2f}")
    if recorded is not None and high < recorded:
        why = f"below the recorded score {recorded:.3f}: its 95% interval ends at {high:.3f}"
        return Gsm8kResult(score, n, low, high, recorded, floor, True, why)
    return Gsm8kResult(score, n, low, high, recorded, floor, False, "ok")
