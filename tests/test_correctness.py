"""The correctness check's pure parts: the closeness rule (vLLM's check_logprobs_close, plus a drift bound), the
parsing of a /v1/completions answer, the reference file, the matrix's `accuracy` section, the verdict's words."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_dsr1.baseline import BaselineError
from pytest_dsr1.gsm8k import (
    METRIC,
    TASK,
    Gsm8kCheck,
    dataset_problem,
    judge_gsm8k,
    lm_eval_argv,
    offline_env,
    read_score,
    task_yaml,
    wilson,
)
from pytest_dsr1.logprob_reference import LogprobReference, load, reference_path, write_reference
from pytest_dsr1.logprobs import PROMPTS, Generation, LogprobCheck, compare, parse_completion, request_body
from pytest_dsr1.matrix import MatrixError, load_matrix
from pytest_dsr1.verdict.correctness import judge_logprobs
from pytest_dsr1.verdict.outcomes import FAILED, PASSED, SKIPPED

CHECK = LogprobCheck(prompts=2, tokens=3, top_k=3, max_drift=0.1)


def gen(prompt: str, ids: list[int], lps: list[float], tops: list[dict[int, float]] | None = None) -> Generation:
    tops = tops or [{t: lp, 90: lp - 1.0, 91: lp - 2.0} for t, lp in zip(ids, lps, strict=True)]
    return Generation(prompt, tuple(ids), tuple(lps), tuple(tops))


REFERENCE = [gen("a", [5, 6, 7], [-1.0, -1.1, -1.2]), gen("b", [8, 8, 8], [-0.5, -0.5, -0.5])]


def test_identical_generations_are_close_with_zero_drift():
    result = compare(REFERENCE, list(REFERENCE), 0.1)
    assert result.close and result.identical_prompts == 2 and result.tokens_compared == 6 and result.max_drift == 0
    assert "close to the reference: 2 of 2 prompts token for token" in result.describe()


def test_a_near_tie_that_flips_inside_each_others_top_k_is_close_and_ends_that_prompt():
    """vLLM's rule: at the first difference each side's token is among the other's top-k; later tokens of that
    prompt are not compared (the sequences diverge legitimately)."""
    ref = [gen("a", [5, 6, 7], [-1.0, -1.1, -1.2], [{5: -1.0, 90: -2}, {6: -1.1, 9: -1.11}, {7: -1.2, 90: -2}])]
    now = [gen("a", [5, 9, 1], [-1.0, -1.1, -9.0], [{5: -1.0, 90: -2}, {9: -1.1, 6: -1.105}, {1: -9.0, 2: -9}])]
    result = compare(ref, now, 0.1)
    assert result.close and result.tokens_compared == 2 and result.identical_prompts == 0


def test_a_token_outside_the_references_top_k_diverges_and_names_where():
    now = [gen("a", [5, 42, 7], [-1.0, -0.9, -1.2]), REFERENCE[1]]
    result = compare(REFERENCE, now, 0.1)
    assert not result.close
    d = result.divergence
    assert d is not None and (d.prompt_index, d.position, d.reference_token, d.token) == (0, 1, 6, 42)
    text = result.describe()
    assert "prompt 0 ('a'), token 1" in text and "token 42 is not among the reference's top-3" in text
    assert "reference: token 6, logprob -1.1000; now: token 42, logprob -0.9000" in text


def test_the_references_token_missing_from_this_runs_top_k_diverges_too():
    ref = [gen("a", [5, 6, 7], [-1.0, -1.1, -1.2], [{5: -1, 90: -2}, {6: -1.1, 9: -1.2}, {7: -1.2, 90: -2}])]
    now = [gen("a", [5, 9, 7], [-1.0, -1.1, -1.2], [{5: -1, 90: -2}, {9: -1.1, 3: -1.2}, {7: -1.2, 90: -2}])]
    result = compare(ref, now, 0.1)
    assert not result.close and "the reference's token 6 is not among this run's top-2" in result.describe()


def test_the_same_tokens_with_a_bent_distribution_exceed_the_drift_bound():
    now = [gen("a", [5, 6, 7], [-1.0, -1.3, -1.2]), REFERENCE[1]]
    result = compare(REFERENCE, now, 0.1)
    assert not result.close and result.divergence is not None and result.divergence.position == 1
    assert "its logprob moved by 0.2000, beyond 0.1" in result.describe()
    assert compare(REFERENCE, now, 0.25).close  # a wider bound lets it through


def test_generations_of_other_prompts_cannot_be_compared():
    with pytest.raises(ValueError, match="other prompts"):
        compare(REFERENCE, [REFERENCE[1], REFERENCE[0]], 0.1)


def answer(tokens: list[str], lps: list[float | None], tops: list[dict[str, float]]) -> dict[str, object]:
    return {"choices": [{"logprobs": {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops}}]}


def test_an_openai_answer_with_token_ids_parses_and_the_request_asks_for_them():
    body = request_body("m", "hi", CHECK)
    assert body["temperature"] == 0 and body["logprobs"] == 3 and body["max_tokens"] == 3
    assert body["return_tokens_as_token_ids"] is True and body["ignore_eos"] is True
    tops = [{"token_id:5": -1.0, "token_id:6": -2.0}] * 3
    g = parse_completion("hi", answer(["token_id:5"] * 3, [-1.0] * 3, tops), CHECK)
    assert g.token_ids == (5, 5, 5) and g.top[0] == {5: -1.0, 6: -2.0}


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"choices": [{"text": "x"}]}, "no choices[0].logprobs"),
        (answer(["token_id:5"] * 2, [-1.0] * 2, [{"token_id:5": -1.0}] * 2), "asked for 3 tokens with logprobs, got 2"),
        (answer(["x", "y", "z"], [-1.0] * 3, [{"token_id:5": -1.0}] * 3), "'x' is not a token id"),
        (answer(["token_id:5"] * 3, [-1.0, None, -1.0], [{"token_id:5": -1.0}] * 3), "None is not a finite logprob"),
        (answer(["token_id:5"] * 3, [-1.0] * 3, [{}, {}, {}]), "not the top-3"),
    ],
)
def test_an_answer_without_what_was_asked_is_a_clear_error(raw, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace("[", r"\[")):
        parse_completion("hi", raw, CHECK)


def reference(generations: list[Generation] | None = None, vllm: str = "0.32.0") -> LogprobReference:
    return LogprobReference("2026-12-05T00:00:00Z", {"vllm": vllm}, CHECK, tuple(generations or REFERENCE))


def test_a_reference_round_trips_through_its_file_per_config_and_machine_kind(tmp_path: Path):
    path = reference_path(tmp_path, "cpu", "tiny")
    write_reference(path, "cpu", "tiny", "cpu-tiny-tp1", "kind-a", reference())
    write_reference(path, "cpu", "tiny", "cpu-tiny-tp1", "kind-b", reference(vllm="0.31.0"))
    write_reference(path, "cpu", "tiny", "cpu-tiny-tp2", "kind-a", reference())
    loaded = load(path, "cpu", "tiny")
    assert set(loaded.configs) == {"cpu-tiny-tp1", "cpu-tiny-tp2"} and set(loaded.configs["cpu-tiny-tp1"]) == {
        "kind-a",
        "kind-b",
    }
    again = loaded.configs["cpu-tiny-tp1"]["kind-a"]
    assert again.generations == tuple(REFERENCE) and again.check is not None and again.check.same_request(CHECK)
    assert loaded.configs["cpu-tiny-tp1"]["kind-b"].fingerprint["vllm"] == "0.31.0"
    assert not re.search(r"^\s*-?[\d.]+,?$", path.read_text(), re.M)  # a list of numbers per line, not a number


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{not json", "(json)"),
        ("[1, 2]", "format"),
        ('{"format": "pytest-dsr1 logprob reference", "version": 9}', "version"),
        ('{"format": "pytest-dsr1 logprob reference", "version": 1, "hardware": "h200", "model": "tiny"}', "hardware"),
        ('{"format": "pytest-dsr1 logprob reference", "version": 1, "hardware": "cpu", "model": "tiny"}', "configs"),
        (
            '{"format": "pytest-dsr1 logprob reference", "version": 1, "hardware": "cpu", "model": "tiny", '
            '"configs": {"c": {"k": {"date": "d", "fingerprint": {}, "check": {"prompts": 1}}}}}',
            "configs.c.k",
        ),
        ("[" * 100000 + "]" * 100000, "(json)"),
    ],
)
def test_a_broken_reference_file_names_the_file_the_field_and_the_fix(tmp_path: Path, text: str, field: str):
    path = reference_path(tmp_path, "cpu", "tiny")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(BaselineError) as info:
        load(path, "cpu", "tiny")
    message = str(info.value)
    assert str(path) in message and f": {field}:" in message and "Fix:" in message
    with pytest.raises(BaselineError):  # a record never overwrites what it cannot read
        write_reference(path, "cpu", "tiny", "c", "k", reference())
    assert path.read_text() == text


def test_the_verdict_passes_close_outputs_and_fails_wrong_ones_naming_the_versions():
    ok, verdict = judge_logprobs("c", REFERENCE, CHECK, reference(), "F", None, "skip", "0.32.0")
    assert ok.outcome == PASSED and verdict.outcome == PASSED and verdict.comparison is not None
    wrong = [gen("a", [5, 42, 7], [-1.0, -0.9, -1.2]), REFERENCE[1]]
    bad, verdict = judge_logprobs("c", wrong, CHECK, reference(), "F", None, "skip", "0.32.0")
    assert bad.outcome == FAILED and "WRONG OUTPUT" in bad.message and "Same vLLM version" in bad.message
    upgraded, _ = judge_logprobs("c", wrong, CHECK, reference(vllm="0.31.0"), "F", None, "skip", "0.32.0")
    assert "recorded with vLLM 0.31.0, this server is vLLM 0.32.0" in upgraded.message


def test_no_reference_or_another_request_shape_is_never_a_pass():
    skipped, _ = judge_logprobs("c", REFERENCE, CHECK, None, "F", "no reference here", "skip", "0.32.0")
    assert skipped.outcome == SKIPPED and "correctness not checked: no reference here" in skipped.message
    failed, _ = judge_logprobs("c", REFERENCE, CHECK, None, "F", "no reference here", "fail", "0.32.0")
    assert failed.outcome == FAILED
    longer = LogprobCheck(prompts=2, tokens=4, top_k=3)
    other, _ = judge_logprobs("c", REFERENCE, longer, reference(), "F", None, "skip", "0.32.0")
    assert other.outcome == SKIPPED and "answered other requests" in other.message


def matrix_with(tmp_path: Path, accuracy: object) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        json.dumps({"models": {"mine": {"id": "generated:tiny", "precision": "bf16", "accuracy": accuracy}}})
    )
    return path


def test_the_matrix_sets_or_turns_off_a_models_logprob_check(tmp_path: Path):
    m = load_matrix(matrix_with(tmp_path, {"logprobs": {"prompts": 4, "tokens": 16, "max_drift": 0.5}}))
    assert m.models["mine"].logprobs == LogprobCheck(4, 16, 5, 0.5)
    assert load_matrix(matrix_with(tmp_path, {"logprobs": "off"})).models["mine"].logprobs is None


@pytest.mark.parametrize(
    ("accuracy", "field"),
    [
        ({"logprob": {}}, "models.mine.accuracy.logprob"),
        ({"logprobs": {"prompts": 0}}, "models.mine.accuracy.logprobs.prompts"),
        ({"logprobs": {"prompts": len(PROMPTS) + 1}}, "models.mine.accuracy.logprobs.prompts"),
        ({"logprobs": {"tokens": "many"}}, "models.mine.accuracy.logprobs.tokens"),
        ({"logprobs": {"top_k": 50}}, "models.mine.accuracy.logprobs.top_k"),
        ({"logprobs": {"max_drift": -1}}, "models.mine.accuracy.logprobs.max_drift"),
        ("on", "models.mine.accuracy"),
    ],
)
def test_a_bad_accuracy_section_names_its_field(tmp_path: Path, accuracy: object, field: str):
    with pytest.raises(MatrixError, match=field.replace(".", r"\.") + ":"):
        load_matrix(matrix_with(tmp_path, accuracy))


def test_wilson_interval_is_sound_at_the_edges():
    low, high = wilson(0.0, 5)
    assert low == 0.0 and abs(high - 0.4345) < 1e-4
    low, high = wilson(0.9, 250)
    assert 0.85 < low < 0.9 < high < 0.94
    assert wilson(1.0, 10)[1] == 1.0


def test_gsm8k_fails_only_where_the_whole_interval_is_below_the_record_or_the_floor():
    assert not judge_gsm8k(0.88, 250, recorded=0.90, floor=0.8).failed  # a few questions lower: noise at n=250
    below = judge_gsm8k(0.70, 250, recorded=0.90, floor=0.0)
    assert below.failed and "below the recorded score 0.900" in below.line()
    floor = judge_gsm8k(0.70, 250, recorded=None, floor=0.9)
    assert floor.failed and "below the floor 0.90" in floor.line() and "no recorded score" in floor.line()
    assert not judge_gsm8k(0.0, 5, recorded=0.0, floor=0.0).failed


def test_gsm8k_task_command_and_results_are_lm_evals_own(tmp_path: Path):
    data = tmp_path / "g.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2 #### 2"}\n')
    check = Gsm8kCheck(data=str(data), limit=1, num_fewshot=0)
    task = json.loads(task_yaml(check))
    assert task["task"] == TASK and task["dataset_path"] == "json" and task["dataset_kwargs"]["data_files"]["test"]
    assert task["filter_list"][0]["name"] == "strict-match"
    hub = json.loads(task_yaml(Gsm8kCheck()))
    assert hub["dataset_path"] == "openai/gsm8k" and hub["dataset_name"] == "main"
    argv = lm_eval_argv("py", "http://h:1/v1/completions", "m", "tok", check, tmp_path / "t", tmp_path / "o")
    assert argv[:5] == ["py", "-m", "lm_eval", "--model", "local-completions"]
    assert "base_url=http://h:1/v1/completions" in argv[argv.index("--model_args") + 1]
    assert not any("KEY" in a.upper() for a in argv)  # the API key goes by environment, never the command line
    assert offline_env()["HF_DATASETS_OFFLINE"] == "1"
    out = tmp_path / "o" / "m"
    out.mkdir(parents=True)
    (out / "results_2026.json").write_text(
        json.dumps({"results": {TASK: {METRIC: 0.25}}, "n-samples": {TASK: {"original": 4, "effective": 4}}})
    )
    assert read_score(tmp_path / "o") == (0.25, 4)
    with pytest.raises(ValueError, match="no results"):
        read_score(tmp_path / "nothing")


def test_gsm8k_data_that_is_not_here_says_how_to_provide_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    problem = dataset_problem(Gsm8kCheck())
    assert problem is not None and "not in this machine's Hugging Face cache" in problem
    assert "load_dataset('openai/gsm8k', 'main')" in problem and "accuracy.gsm8k.data" in problem
    (tmp_path / "hf" / "hub" / "datasets--openai--gsm8k").mkdir(parents=True)
    assert dataset_problem(Gsm8kCheck()) is None
    assert "does not exist" in str(dataset_problem(Gsm8kCheck(data=str(tmp_path / "none.jsonl"))))


def test_the_matrix_turns_gsm8k_on_with_a_path_relative_to_its_file(tmp_path: Path):
    m = load_matrix(matrix_with(tmp_path, {"gsm8k": {"data": "g.jsonl", "limit": 10, "floor": 0.5}}))
    check = m.models["mine"].gsm8k
    assert check is not None and check.data == str((tmp_path / "g.jsonl").resolve()) and check.floor == 0.5
    assert load_matrix(matrix_with(tmp_path, {})).models["mine"].gsm8k is None  # off unless asked
    with pytest.raises(MatrixError, match=r"models\.mine\.accuracy\.gsm8k\.floor:"):
        load_matrix(matrix_with(tmp_path, {"gsm8k": {"floor": 90}}))
    with pytest.raises(MatrixError, match=r"models\.mine\.accuracy\.gsm8k\.shots:"):
        load_matrix(matrix_with(tmp_path, {"gsm8k": {"shots": 5}}))
