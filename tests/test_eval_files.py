"""Evaluation on the files users hold: the five published benchmark files load with the documented
options, reasoning-gym tasks evaluate with their own defaults (and --rg-args), mixes of tasks,
``plot --eval`` alone, and ``compare`` never merging different checkpoints."""

import json
from pathlib import Path

import pytest

from introllm.training.config import DataConfig
from introllm.training.data import DataError, read_problems
from introllm.training.evaluate import Summary, compare_table, run_name

BENCH = Path("/work/shared/benchmarks")
if not BENCH.is_dir():  # the repository's own copy location, when the shared folder is not mounted
    BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"

# file -> (the documented eval options, rows in the file as published)
PUBLISHED = {
    "math500.jsonl": ({}, 500),
    "aime24.jsonl": ({}, 30),
    "amc23.jsonl": ({}, 40),
    "minerva_math.jsonl": ({"answer_field": "solution", "answer_boxed": True}, 272),
    "olympiadbench.jsonl": ({"answer_field": "final_answer"}, 675),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_published_benchmark_files_load_with_the_documented_options(name):
    path = BENCH / name
    assert path.is_file(), f"{path} is missing: the benchmark files must be present for this test"
    options, rows = PUBLISHED[name]
    problems = read_problems(DataConfig(dataset=str(path), eval_size=0, **options))
    assert len(problems) == rows
    assert all(p.prompt.strip() and p.answer.strip() for p in problems)
    assert len({p.id for p in problems}) == rows  # ids are distinct (records group samples by them)
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if name == "minerva_math.jsonl":  # the gold answer is the solution's last \boxed{}, not the solution
        assert all("\\boxed" not in p.answer and len(p.answer) < len(r["solution"]) for p, r in zip(problems, raw))
        assert problems[0].subject == raw[0]["type"]
    if name == "olympiadbench.jsonl":  # final_answer is a list; several answers are joined
        assert all(p.answer == ", ".join(map(str, r["final_answer"])) for p, r in zip(problems, raw))
        assert problems[0].subject == raw[0]["subfield"]
    if name == "math500.jsonl":
        assert {p.level for p in problems} == {str(i) for i in range(1, 6)}


def test_the_files_that_need_an_option_fail_clearly_without_it():
    with pytest.raises(DataError, match="no answer in field 'answer'"):
        read_problems(DataConfig(dataset=str(BENCH / "minerva_math.jsonl"), eval_size=0))
    with pytest.raises(DataError, match="no answer in field 'answer'"):
        read_problems(DataConfig(dataset=str(BENCH / "olympiadbench.jsonl"), eval_size=0))
    with pytest.raises(DataError, match="no \\\\boxed"):
        read_problems(
            DataConfig(dataset=str(BENCH / "aime24.jsonl"), eval_size=0, answer_field="solution", answer_boxed=True)
        )


def test_a_mix_of_reasoning_gym_tasks_with_per_task_arguments():
    data = DataConfig(
        dataset="rg:leg_counting,basic_arithmetic",
        num_problems=5,
        eval_size=0,
        rg_args={"basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}},
    )
    problems = read_problems(data)
    assert [p.subject for p in problems] == ["leg_counting"] * 5 + ["basic_arithmetic"] * 5
    assert all(
        p.source == f"rg:{p.subject}" and p.metadata["metadata"]["source_dataset"] == p.subject for p in problems
    )
    with pytest.raises(DataError, match="per task"):
        read_problems(DataConfig(dataset="rg:leg_counting,basic_arithmetic", num_problems=2, rg_args={"min_terms": 2}))
    with pytest.raises(DataError, match="unknown reasoning-gym task 'leg_countin'"):
        read_problems(DataConfig(dataset="rg:leg_countin", num_problems=2))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["leg_counting", "letter_counting", "spell_backward"])
def test_eval_runs_other_reasoning_gym_families_with_their_own_defaults(tiny_ckpt, tmp_path, task, capsys, caplog):
    from introllm.cli import main

    out = tmp_path / "r.jsonl"
    rc = main(
        [
            "eval",
            "--checkpoint",
            str(tiny_ckpt),
            "--dataset",
            f"rg:{task}",
            "--limit",
            "3",
            "--num-problems",
            "3",
            "--k",
            "2",
            "--max-new-tokens",
            "4",
            "--output",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 6 and all(r["problem_id"].startswith(task) for r in records)
    summary = json.loads(out.with_name("r.summary.json").read_text())
    assert summary["dataset"] == f"rg:{task}" and 0.6 <= summary["tau_mean"] <= 1.5
    # rg: problems are the ones `introllm train` draws (same generator seed): the user is told, and where to go instead
    assert any(
        "trained on" in r.message and "--heldout RUN" in r.message for r in caplog.records if r.levelname == "WARNING"
    )


@pytest.mark.slow
def test_eval_takes_rg_args_and_refuses_bad_ones(tiny_ckpt, tmp_path, capsys):
    from introllm.cli import main

    out = tmp_path / "legs.jsonl"
    args = [
        "eval",
        "--checkpoint",
        str(tiny_ckpt),
        "--dataset",
        "rg:leg_counting",
        "--limit",
        "2",
        "--num-problems",
        "2",
        "--k",
        "1",
        "--max-new-tokens",
        "2",
        "--output",
        str(out),
    ]
    assert main(args + ["--rg-args", '{"min_animals": 1, "max_animals": 1}']) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    assert main(args + ["--rg-args", '{"min_terms": 2}']) == 2
    assert "rejected rg_args" in capsys.readouterr().err


def summary(name, dataset, checkpoint, avg, head="", policy="learned"):
    return Summary(
        name=name,
        dataset=dataset,
        checkpoint=checkpoint,
        policy=policy,
        k=4,
        n=4,
        num_problems=10,
        avg_at_k=avg,
        pass_at_k=avg,
        mean_tokens=20.0,
        head=head,
    )


def test_compare_never_merges_results_of_different_checkpoints():
    a = summary("final (learned)", "math500.jsonl", "runs/a/final", 0.1)
    b = summary("final (learned)", "math500.jsonl", "runs/b/final", 0.2)
    table = compare_table([a, b])
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == 2
    assert "runs/a/final" in rows[0] and "10.00" in rows[0] and "runs/b/final" in rows[1] and "20.00" in rows[1]
    with pytest.raises(ValueError, match="two results"):
        compare_table([a, a])


def test_default_row_names_come_from_the_run_directory_and_the_head():
    assert run_name("runs/intro/final", "", "learned") == "intro/final (learned)"
    assert run_name("runs/intro/checkpoint-000010", "", "fixed:0.6") == "intro/checkpoint-000010 (fixed:0.6)"
    assert run_name("", "init", "learned") == "smollm2-135m-instruct + head init (learned)"
    assert run_name("", "runs/h/final", "learned") == "smollm2-135m-instruct + head h/final (learned)"
    assert run_name("", "", "learned") != run_name("", "init", "learned")


def test_plot_with_only_an_evaluation_file(tmp_path):
    from introllm.cli import main

    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(
        "".join(
            json.dumps(
                {
                    "tokens": [" a", " b", " c"],
                    "tau": [0.7, 1.2, 0.9],
                    "updated": [True, False, True],
                    "level": None,
                    "subject": f"task{i % 2}",
                    "correct": i % 2 == 0,
                }
            )
            + "\n"
            for i in range(6)
        )
    )
    out = tmp_path / "plots"
    assert main(["plot", "--eval", str(eval_file), "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "fig2_tau_by_level.png",
        "fig3_token_tau.png",
        "fig4_hot_tokens.png",
        "fig4b_tau_context.png",  # tau by the previous token (issue 27: the context tau was chosen in)
        "index.html",
    ]
    index = (out / "index.html").read_text()
    assert 'src="fig2_tau_by_level.png"' in index and "fig5" not in index
    assert main(["plot", "--output", str(out)]) == 2


def test_a_mix_holds_out_the_same_number_of_each_task_and_never_trains_on_them():
    from collections import Counter

    from introllm.training.data import load_problems

    data = DataConfig(dataset="rg:letter_counting,chain_sum,gcd", num_problems=20, eval_size=7)
    train, held = load_problems(data, seed=3)
    assert Counter(p.subject for p in held) == {"letter_counting": 3, "chain_sum": 2, "gcd": 2}
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert load_problems(data, seed=3)[1] == held  # the split is a function of the seed (eval --heldout rebuilds it)
