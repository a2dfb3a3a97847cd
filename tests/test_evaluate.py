"""Evaluation metrics against brute force, eval end to end, the comparison table and the figures."""

import itertools
import json
from pathlib import Path

import pytest

from introllm.training.evaluate import Summary, avg_at_k, compare_table, load_summary, pass_at_k, summarize


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_brute_force_over_all_k_subsets(n):
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 2)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def records(correct_by_problem, levels=None):
    out = []
    for i, correct in enumerate(correct_by_problem):
        for j, c in enumerate(correct):
            out.append(
                {
                    "problem_id": f"p{i}",
                    "sample": j,
                    "correct": c,
                    "num_tokens": 10 + j,
                    "level": None if levels is None else levels[i],
                    "subject": "Algebra",
                }
            )
    return out


def test_avg_and_pass_at_k_on_hand_made_records():
    recs = records([[True, False, False, False], [False] * 4, [True] * 4], levels=["Level 1", "Level 1", "Level 5"])
    s = summarize(recs, k=2)
    assert avg_at_k([True, False, False, False]) == 0.25
    assert s.avg_at_k == pytest.approx((0.25 + 0 + 1) / 3)
    assert s.pass_at_k == pytest.approx((0.5 + 0 + 1) / 3)  # problem 0: 1 - C(3,2)/C(4,2) = 0.5
    assert s.by_level["Level 1"]["avg_at_k"] == pytest.approx(0.125)
    assert s.by_level["Level 5"]["pass_at_k"] == 1.0 and s.by_level["Level 5"]["num_problems"] == 1
    assert s.by_subject["Algebra"]["num_problems"] == 3
    assert s.n == 4 and s.mean_tokens == pytest.approx(11.5)


def summary(name, dataset, avg, pas):
    return Summary(
        name=name,
        dataset=dataset,
        checkpoint="c",
        policy="learned",
        k=8,
        n=8,
        num_problems=10,
        avg_at_k=avg,
        pass_at_k=pas,
        mean_tokens=20.0,
    )


def test_compare_renders_the_table_with_the_best_in_bold(tmp_path):
    from dataclasses import asdict

    files = []
    for s in [
        summary("GRPO (tau=1.0)", "math500.jsonl", 0.6525, 0.84),
        summary("IntroLLM", "math500.jsonl", 0.6753, 0.862),
        summary("GRPO (tau=1.0)", "aime24.jsonl", 0.0711, 0.1668),
        summary("IntroLLM", "aime24.jsonl", 0.0959, 0.2668),
    ]:
        f = tmp_path / f"{s.name[:4]}-{s.dataset}.summary.json"
        f.write_text(json.dumps(asdict(s)))
        files.append(f)
    table = compare_table([load_summary(f) for f in files])
    assert table == (
        "| Method | math500 Avg@8 | math500 Pass@8 | aime24 Avg@8 | aime24 Pass@8 | Average Avg@8 | Average Pass@8 |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
        "| GRPO (tau=1.0) | 65.25 | 84.00 | 7.11 | 16.68 | 36.18 | 50.34 |\n"
        "| IntroLLM | **67.53** | **86.20** | **9.59** | **26.68** | **38.56** | **56.44** |\n"
    )
    with pytest.raises(ValueError, match="no evaluation summary"):
        load_summary(tmp_path / "missing.jsonl")


@pytest.mark.slow
def test_eval_end_to_end_on_a_tiny_model(tiny_ckpt, tmp_path):
    from introllm.training.config import DataConfig
    from introllm.training.evaluate import EvalConfig, evaluate, summary_path

    data_file = tmp_path / "bench.jsonl"
    rows = [
        {"problem": f"What is {i} + {i}?", "answer": str(2 * i), "level": f"Level {1 + i % 2}", "id": f"q{i}"}
        for i in range(5)
    ]
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "res.jsonl"
    data = DataConfig(dataset=str(data_file), eval_size=0)
    s = evaluate(EvalConfig(checkpoint=str(tiny_ckpt), k=2, n=3, max_new_tokens=6, batch_prompts=2), data, out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 5 * 3
    assert {r["problem_id"] for r in lines} == {f"q{i}" for i in range(5)}
    assert all(len(r["tokens"]) == len(r["tau"]) == len(r["updated"]) == r["num_tokens"] for r in lines)
    assert all(isinstance(r["correct"], bool) for r in lines)
    assert s.num_problems == 5 and s.n == 3 and set(s.by_level) == {"Level 1", "Level 2"}
    assert json.loads(summary_path(out).read_text())["k"] == 2


def synthetic_run(path: Path, steps=6, seed=0):
    import random

    rng = random.Random(seed)
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 0, "eval_accuracy": 0.1}) + "\n")
        for s in range(1, steps + 1):
            m = {
                "step": s,
                "reward": rng.random(),
                "entropy": 2 - s / 10,
                "tau_mean": 1.0 + rng.random() / 10,
                "tau_min": 0.6,
                "tau_max": 1.5,
                "response_length": 20 + s,
                "tau_mean_by_level": {"a": 1.0, "b": 1.1},
            }
            if s == steps:
                m["eval_accuracy"] = 0.2
            f.write(json.dumps(m) + "\n")
    words = ["The", " answer", " is", " 7", ".", " Let", " me", " think", " carefully", " now"]
    with open(path / "samples.jsonl", "w") as f:
        comps = [
            {
                "text": "x",
                "reward": float(i % 2),
                "tokens": words,
                "tau": [0.6 + 0.09 * ((i + j) % 10) for j in range(10)],
                "updated": [j % 3 == 0 for j in range(10)],
            }
            for i in range(4)
        ]
        f.write(json.dumps({"step": 1, "id": "p", "problem": "q", "answer": "7", "completions": comps}) + "\n")
    return path


def test_plot_writes_every_figure_and_the_index(tmp_path):
    import matplotlib.image

    from introllm.training.plots import FIGURES, make_plots

    runs = [synthetic_run(tmp_path / "introllm"), synthetic_run(tmp_path / "grpo", seed=1)]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(
        "".join(
            json.dumps(
                {
                    "tokens": [" a", " b", " c"],
                    "tau": [0.7, 1.2, 0.9],
                    "updated": [True, False, True],
                    "level": f"Level {i % 3}",
                    "correct": i % 2 == 0,
                }
            )
            + "\n"
            for i in range(9)
        )
    )
    for eval_source in (None, eval_file):
        out = tmp_path / f"plots-{eval_source is None}"
        written = make_plots(runs, out, eval_source)
        assert {p.name for p in written} == set(FIGURES) | {"index.html"}
        for name in FIGURES:
            assert (out / name).stat().st_size > 5000
            image = matplotlib.image.imread(out / name)
            assert image.shape[0] > 100 and image.shape[1] > 100
        index = (out / "index.html").read_text()
        assert all(f'src="{name}"' in index for name in FIGURES)
    with pytest.raises(ValueError, match="not a training run directory"):
        make_plots([tmp_path], tmp_path / "x")
