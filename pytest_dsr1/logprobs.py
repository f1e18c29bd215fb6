"""Is the server still computing the same model? Greedy generations with their top-k logprobs, compared with a
recorded reference by vLLM's own closeness rule, plus a bound on logprob drift.

The rule is that of `check_logprobs_close` in vLLM's test utilities (tests/models/utils.py): two greedy
generations of one prompt agree where their tokens are equal; at the first position where they differ, each
side's token must be among the other side's top-k, and the comparison of that prompt ends there (the sequences
diverge from then on, legitimately). On top of it, the logprob of every token both sides chose, up to that
point, may move by at most `max_drift` (natural log units): a wrong kernel can keep the argmax and still bend
the distribution.

No pytest, no vLLM, no HTTP here: the request body, the parsing of the OpenAI-compatible answer, the rule and
its message. The runner sends the requests; correctness_check.py records and judges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Fixed prompts: plain text, code, numbers, JSON, SQL. The tiny model's tokenizer has one token per printable
# ASCII character, so every prompt is valid for it too. Changing them invalidates every recorded reference.
PROMPTS = (
    "The quick brown fox",
    "def fibonacci(n):",
    "DeepSeek-R1 serves",
    "1, 2, 3, 5, 8,",
    "Once upon a time",
    '{"key": [',
    "SELECT * FROM",
    "Hello, world!",
    "The capital of France is",
    "for i in range(10):",
    "Water boils at",
    "import numpy as np",
)
TOKEN_ID_PREFIX = "token_id:"  # what vLLM writes for a token with return_tokens_as_token_ids


@dataclass(frozen=True)
class LogprobCheck:
    """What a model's logprob check asks (the matrix's `accuracy.logprobs`)."""

    prompts: int = 8  # the first N of PROMPTS
    tokens: int = 32  # greedy tokens per prompt
    top_k: int = 5  # logprobs per position
    max_drift: float = 0.1  # largest change of a shared token's logprob, in nats

    def describe(self) -> str:
        return f"{self.prompts} prompts x {self.tokens} greedy tokens, top-{self.top_k}, drift <= {self.max_drift:g}"

    def same_request(self, other: LogprobCheck) -> bool:
        """Whether two checks send the same requests (the drift bound may differ)."""
        return (self.prompts, self.tokens, self.top_k) == (other.prompts, other.tokens, other.top_k)


@dataclass(frozen=True)
class Generation:
    """One prompt's greedy generation: token ids, the logprob of each, and the top-k at each position."""

    prompt: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    top: tuple[Mapping[int, float], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "token_ids": list(self.token_ids),
            "logprobs": list(self.logprobs),
            # Per position: token id, logprob, token id, logprob, ... (best first): one line per position on disk.
            "top": [[x for kv in sorted(t.items(), key=lambda kv: -kv[1]) for x in kv] for t in self.top],
        }


def request_body(model: str, prompt: str, check: LogprobCheck) -> dict[str, Any]:
    """The /v1/completions request of one prompt: greedy, a fixed length, token ids instead of strings."""
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": check.tokens,
        "temperature": 0.0,
        "logprobs": check.top_k,
        "return_tokens_as_token_ids": True,  # a vLLM extension: ids, so that no detokenization can blur a token
        "ignore_eos": True,  # the same length every time, even where the model would stop
        "seed": 0,
    }


def _token_id(text: Any, where: str) -> int:
    if not isinstance(text, str) or not text.startswith(TOKEN_ID_PREFIX):
        raise ValueError(f"{where}: {text!r} is not a token id ({TOKEN_ID_PREFIX}N)")
    try:
        return int(text[len(TOKEN_ID_PREFIX) :])
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a token id ({TOKEN_ID_PREFIX}N)") from None


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} is not a finite logprob")
    return float(value)


def parse_completion(prompt: str, answer: Any, check: LogprobCheck) -> Generation:
    """A /v1/completions answer as a Generation. A ValueError says what is missing (a server that ignored
    `logprobs`, or answered fewer tokens than asked)."""
    try:
        lp = answer["choices"][0]["logprobs"]
        tokens, token_logprobs, top = lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("the answer has no choices[0].logprobs with tokens, token_logprobs and top_logprobs") from None
    if not (isinstance(tokens, list) and isinstance(token_logprobs, list) and isinstance(top, list)):
        raise ValueError("choices[0].logprobs.tokens, token_logprobs and top_logprobs must be lists")
    if not (len(tokens) == len(token_logprobs) == len(top) == check.tokens):
        raise ValueError(f"asked for {check.tokens} tokens with logprobs, got {len(tokens)}")
    ids = tuple(_token_id(t, f"token {i}") for i, t in enumerate(tokens))
    logprobs = tuple(_finite(v, f"logprob of token {i}") for i, v in enumerate(token_logprobs))
    tops = []
    for i, entry in enumerate(top):
        if not isinstance(entry, dict) or not entry:
            raise ValueError(f"top_logprobs[{i}] is {entry!r}, not the top-{check.top_k}")
        tops.append({_token_id(k, f"top_logprobs[{i}]"): _finite(v, f"top_logprobs[{i}]") for k, v in entry.items()})
    return Generation(prompt, ids, logprobs, tuple(tops))


@dataclass(frozen=True)
class Divergence:
    """Where a generation left its reference beyond the rule."""

    prompt_index: int
    prompt: str
    position: int
    reference_token: int
    token: int
    reference_logprob: float
    logprob: float
    why: str

    def describe(self, against: str = "the reference") -> str:
        return (
            f"prompt {self.prompt_index} ({self.prompt!r}), token {self.position}: "
            f"{self.why.replace('the reference', against)} "
            f"({against.removeprefix('the ')}: token {self.reference_token}, logprob {self.reference_logprob:.4f}; "
            f"now: token {self.token}, logprob {self.logprob:.4f})"
        )


@dataclass(frozen=True)
class Comparison:
    """The rule applied to every prompt: the first divergence (None: close), and what was compared."""

    divergence: Divergence | None
    prompts: int
    tokens_compared: int  # positions up to each prompt's first difference
    identical_prompts: int  # prompts whose every token is equal
    max_drift: float  # the largest logprob change of a shared token
    bound: float

    @property
    def close(self) -> bool:
        return self.divergence is None

    def describe(self, against: str = "the reference") -> str:
        shape = (
            f"{self.identical_prompts} of {self.prompts} prompts token for token, {self.tokens_compared} tokens "
            f"compared, largest logprob drift {self.max_drift:.4f} (bound {self.bound:g})"
        )
        if self.divergence is None:
            return f"close to {against}: {shape}"
        return f"diverged from {against} at {self.divergence.describe(against)}; {shape}"


def compare(reference: Sequence[Generation], now: Sequence[Generation], max_drift: float) -> Comparison:
    """vLLM's closeness rule over every prompt, with the drift bound (see the module's docstring)."""
    if [g.prompt for g in reference] != [g.prompt for g in now]:
        raise ValueError("the generations are of other prompts than the reference's")
    first: Divergence | None = None
    compared = identical = 0
    worst = 0.0
    for index, (ref, cur) in enumerate(zip(reference, now, strict=True)):
        for pos, (t0, t1) in enumerate(zip(ref.token_ids, cur.token_ids, strict=False)):
            lp0, lp1 = ref.logprobs[pos], cur.logprobs[pos]
            compared += 1
            if t0 != t1:
                # vLLM's rule: a near tie may flip, but each side's choice must be a top choice of the other.
                if t1 not in ref.top[pos] or t0 not in cur.top[pos]:
                    why = (
                        f"the tokens differ, and token {t1} is not among the reference's top-{len(ref.top[pos])}"
                        if t1 not in ref.top[pos]
                        else f"the tokens differ, and the reference's token {t0} is not among this run's "
                        f"top-{len(cur.top[pos])}"
                    )
                    first = first or Divergence(index, ref.prompt, pos, t0, t1, lp0, lp1, why)
                break
            drift = abs(lp1 - lp0)
            worst = max(worst, drift)
            if drift > max_drift:
                why = f"the same token, its logprob moved by {drift:.4f}, beyond {max_drift:g}"
                first = first or Divergence(index, ref.prompt, pos, t0, t1, lp0, lp1, why)
                break
        else:
            identical += len(ref.token_ids) == len(cur.token_ids)
    return Comparison(first, len(reference), compared, identical, worst, max_drift)
