"""Configuration and data: bad input fails before training, with one line naming the problem."""

import json
import subprocess
import sys

import pytest

from introllm.training.config import ConfigError, DataConfig, MethodConfig, RolloutConfig, TrainConfig, read_config_file
from introllm.training.data import DataError, ProblemStream, load_problems


def test_bad_values_name_their_field():
    with pytest.raises(ConfigError, match="tau_min"):
        RolloutConfig(tau_min=1.5, tau_max=0.6)
    with pytest.raises(ConfigError, match="tau_min"):
        RolloutConfig(tau_min=1.0, tau_max=1.0)
    with pytest.raises(ConfigError, match="group_size: must be >= 2"):
        RolloutConfig(group_size=1)
    with pytest.raises(
        ConfigError, match="unknown method 'ppo'; valid: always-update, ead, grpo, introllm, prompt-level, tampo"
    ):
        MethodConfig(method="ppo")
    with pytest.raises(ConfigError, match="reward"):
        DataConfig(reward="sympy")


def test_config_file_sections_and_unknown_keys(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('[rollout]\ngroup_size = 4\n[method]\nmethod = "grpo"\nfixed_tau = 0.6\n')
    cfg = TrainConfig.from_dict(read_config_file(f))
    assert cfg.rollout.group_size == 4 and cfg.method.method == "grpo" and cfg.method.fixed_tau == 0.6
    with pytest.raises(ConfigError, match=r"unknown field\(s\) in \[rollout\]: group"):
        TrainConfig.from_dict({"rollout": {"group": 4}})
    with pytest.raises(ConfigError, match="unknown config section"):
        TrainConfig.from_dict({"model": {}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[rollout\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config_file(bad)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_local_files_with_configurable_fields(tmp_path):
    rows = [
        {"problem": f"What is {i} + 1?", "solution": str(i + 1), "level": "Level 1", "subject": "Algebra"}
        for i in range(10)
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    train, held = load_problems(DataConfig(dataset=path, answer_field="solution", eval_size=2))
    assert len(train) == 8 and len(held) == 2
    assert {p.answer for p in train + held} == {str(i + 1) for i in range(10)}
    assert train[0].level == "Level 1" and train[0].subject == "Algebra"
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("question,answer\nWhat is 2+2?,4\nWhat is 3+3?,6\n")
    train, held = load_problems(DataConfig(dataset=str(csv_path), eval_size=0))
    assert sorted(p.answer for p in train) == ["4", "6"] and held == []


def test_parquet_files(tmp_path):
    import pyarrow as pa  # a dev dependency
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"question": ["1+1?", "2+2?"], "answer": ["2", "4"]}), path)
    train, _ = load_problems(DataConfig(dataset=str(path), eval_size=0))
    assert sorted(p.answer for p in train) == ["2", "4"]


def test_empty_dataset_and_rows_without_answers_are_named(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="has no problems"):
        load_problems(DataConfig(dataset=str(empty)))
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "a", "answer": "1"}, {"question": "b", "id": "q-7"}])
    with pytest.raises(DataError, match=r"row 2 \(id q-7\): no answer in field 'answer'"):
        load_problems(DataConfig(dataset=path))
    with pytest.raises(DataError, match="does not exist"):
        load_problems(DataConfig(dataset=str(tmp_path / "missing.jsonl")))


def test_prompt_templates():
    from introllm.training.data import Problem, format_prompt

    p = Problem(id="1", prompt="What is 2 + 2?", answer="4")
    assert format_prompt(p, DataConfig()) == "What is 2 + 2?\nGive only the final answer as 'Answer: <number>'."
    plain = DataConfig(template="plain", prompt_template="Q: {problem}\n{instruction}\nA:", instruction="Be brief.")
    assert format_prompt(p, plain) == "Q: What is 2 + 2?\nBe brief.\nA:"
    with pytest.raises(ConfigError, match="prompt_template"):
        DataConfig(template="plain", prompt_template="no placeholder")


def test_hub_names_fail_clearly_offline():
    with pytest.raises(DataError, match="local .jsonl"):
        load_problems(DataConfig(dataset="someone/some-math-dataset"))


def test_reasoning_gym_tasks():
    train, held = load_problems(DataConfig(dataset="rg:basic_arithmetic", num_problems=50, eval_size=5))
    assert (
        len(held) == 5 and train[0].source == "rg:basic_arithmetic" and train[0].metadata["question"] == train[0].prompt
    )
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    with pytest.raises(DataError, match="unknown reasoning-gym task 'no_such_task'"):
        load_problems(DataConfig(dataset="rg:no_such_task"))


def test_problem_stream_is_seeded_and_resumable(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": str(i), "answer": str(i)} for i in range(7)])
    problems, _ = load_problems(DataConfig(dataset=path, eval_size=0))
    a = ProblemStream(problems, seed=3)
    first = [p.id for p in a.next(5)]
    state = a.state_dict()
    rest = [p.id for p in a.next(12)]  # crosses two epoch boundaries
    b = ProblemStream(problems, seed=3)
    b.load_state_dict(state)
    assert [p.id for p in b.next(12)] == rest
    assert sorted(first + rest[:2]) == sorted(p.id for p in problems)  # an epoch is a permutation
    assert [p.id for p in ProblemStream(problems, seed=4).next(5)] != first


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tau-min", "1.5", "--tau-max", "0.6"], "tau_min: need 0 < tau_min < tau_max"),
        (["--group-size", "1"], "group_size: must be >= 2"),
        (["--method", "ppo"], "unknown method 'ppo'"),
        (["--dataset", "EMPTY"], "has no problems"),
        (["--dataset", "NOANSWER"], "row 1: no answer in field 'answer'"),
        (["--reward", "nope:fn"], "reward module 'nope' cannot be imported"),
    ],
)
def test_cli_fails_before_training_with_one_line(tmp_path, flags, message):
    (tmp_path / "empty.jsonl").write_text("")
    write_jsonl(tmp_path / "noanswer.jsonl", [{"question": "a"}])
    flags = [
        {"EMPTY": str(tmp_path / "empty.jsonl"), "NOANSWER": str(tmp_path / "noanswer.jsonl")}.get(f, f) for f in flags
    ]
    out = subprocess.run(
        [sys.executable, "-m", "introllm", "train", "--output", str(tmp_path / "run"), *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
