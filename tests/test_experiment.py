"""``introllm experiment`` and MeanShift: bootstrap intervals against hand computations, the config
and plan, the report's numbers on hand-made records, ``eval --policy meanshift`` on a tiny model,
and a two-seed grid that is killed in the middle of a training run and restarted: it must write
the same report as a run that went straight through."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from introllm.experiment.report import write_report
from introllm.experiment.runner import Runner, check_tables, flags, load_experiment, plan
from introllm.experiment.stats import bootstrap_interval, problem_scores, resample_indices
from introllm.training.config import ConfigError
from introllm.training.meanshift import meanshift_policy, token_mean_tau

REWARD = str(Path(__file__).parent / "data" / "parity_reward.py") + ":parity"


# --------------------------------------------------------------------------- bootstrap by hand


def test_bootstrap_interval_matches_a_hand_computation():
    # resampled means: [1,1,1,1] -> 1, [4,4,4,4] -> 4, [1,2,3,4] -> 2.5, [1,1,2,2] -> 1.5; sorted 1, 1.5, 2.5, 4.
    # 2.5th percentile: position 0.025 * 3 = 0.075 -> 1 + 0.075 * 0.5 = 1.0375;
    # 97.5th: position 2.925 -> 2.5 + 0.925 * 1.5 = 3.8875.
    idx = np.array([[0, 0, 0, 0], [3, 3, 3, 3], [0, 1, 2, 3], [0, 0, 1, 1]])
    iv = bootstrap_interval([1.0, 2.0, 3.0, 4.0], idx)
    assert iv.mean == 2.5 and iv.lo == pytest.approx(1.0375) and iv.hi == pytest.approx(3.8875)
    # an 80 % interval of the same four means: positions 0.3 and 2.7
    iv80 = bootstrap_interval([1.0, 2.0, 3.0, 4.0], idx, confidence=0.8)
    assert iv80.lo == pytest.approx(1 + 0.3 * 0.5) and iv80.hi == pytest.approx(2.5 + 0.7 * 1.5)


def test_fixed_resampling_seed_gives_fixed_resamples_and_the_interval_they_imply():
    a = resample_indices(3, num_resamples=5, seed=7)
    assert a.shape == (5, 3) and a.min() >= 0 and a.max() <= 2
    assert np.array_equal(a, resample_indices(3, num_resamples=5, seed=7))
    assert not np.array_equal(a, resample_indices(3, num_resamples=5, seed=8))
    values = np.array([0.0, 0.5, 1.0])
    means = sorted(values[row].mean() for row in a)  # the hand computation: mean of each resample, sorted
    lo = means[0] + 0.1 * (means[1] - means[0])  # 2.5 % of 4 gaps -> position 0.1
    hi = means[3] + 0.9 * (means[4] - means[3])  # 97.5 % -> position 3.9
    iv = bootstrap_interval(values, a)
    assert iv.lo == pytest.approx(lo) and iv.hi == pytest.approx(hi)


def test_two_point_bootstrap_converges_to_its_exact_distribution():
    # values (0, 1): resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 95 % interval is [0, 1]
    # and the 50 % interval is [0.5, 0.5].
    idx = resample_indices(2, num_resamples=4000, seed=0)
    assert bootstrap_interval([0.0, 1.0], idx) == pytest.approx(bootstrap_interval([0.0, 1.0], idx))
    iv = bootstrap_interval([0.0, 1.0], idx)
    assert (iv.lo, iv.hi) == (0.0, 1.0)
    iv50 = bootstrap_interval([0.0, 1.0], idx, confidence=0.5)
    assert (iv50.lo, iv50.hi) == (0.5, 0.5)


def test_bootstrap_refuses_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        bootstrap_interval([1.0, 2.0], np.zeros((3, 3), dtype=int))
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_interval([], np.zeros((3, 0), dtype=int))


def test_problem_scores_are_avg_and_unbiased_pass_at_k():
    recs = [{"problem_id": "a", "correct": c} for c in (True, False, False)] + [
        {"problem_id": "b", "correct": False}
    ] * 3
    s = problem_scores(recs, k=2)
    assert s["a"] == (pytest.approx(1 / 3), pytest.approx(1 - 1 / 3))  # Pass@2 = 1 - C(2,2)/C(3,2)
    assert s["b"] == (0.0, 0.0)
    with pytest.raises(ValueError, match="fewer than k"):
        problem_scores(recs, k=4)


# --------------------------------------------------------------------------- MeanShift


def write_eval(
    path: Path, rows: list[tuple[str, bool, list[float]]], *, policy="learned", checkpoint="ck", dataset="d.jsonl", k=2
):
    """Records + summary in the shape introllm eval writes them."""
    from dataclasses import asdict

    from introllm.training.evaluate import summarize, summary_path

    path.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    recs = []
    for pid, correct, tau in rows:
        recs.append(
            {
                "problem_id": pid,
                "sample": counts.get(pid, 0),
                "correct": correct,
                "num_tokens": len(tau),
                "tau": tau,
                "tokens": ["x"] * len(tau),
                "updated": [True] * len(tau),
                "level": None,
            }
        )
        counts[pid] = counts.get(pid, 0) + 1
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = summarize(recs, k=k, name=path.stem, dataset=dataset, checkpoint=checkpoint, policy=policy)
    summary_path(path).write_text(json.dumps(asdict(s)))


def test_meanshift_tau_is_the_token_weighted_mean_and_checks_its_source(tmp_path):
    f = tmp_path / "learned.jsonl"
    write_eval(f, [("p", True, [0.6, 0.8]), ("p", False, [1.3])])
    assert token_mean_tau(f) == pytest.approx(0.9)  # (0.6 + 0.8 + 1.3) / 3 tokens, not the mean of sample means (1.0)
    assert meanshift_policy(f, checkpoint="ck", dataset="d.jsonl") == ("fixed:0.9000", 0.9)
    with pytest.raises(ValueError, match="evaluated checkpoint ck, not other"):
        meanshift_policy(f, checkpoint="other")
    with pytest.raises(ValueError, match="evaluated dataset"):
        meanshift_policy(f, dataset="other.jsonl")
    fixed = tmp_path / "fixed.jsonl"
    write_eval(fixed, [("p", True, [0.6]), ("p", True, [0.6])], policy="fixed:0.6")
    with pytest.raises(ValueError, match="needs a learned evaluation"):
        meanshift_policy(fixed)
    with pytest.raises(ValueError, match="no evaluation records"):
        token_mean_tau(tmp_path / "missing.jsonl")


@pytest.mark.slow
def test_eval_policy_meanshift_samples_at_the_learned_token_mean(tiny_ckpt, tmp_path, capsys):
    from introllm.cli import main

    bench = tmp_path / "bench.jsonl"
    bench.write_text(
        "".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(4))
    )
    common = [
        "eval",
        "--checkpoint",
        str(tiny_ckpt),
        "--dataset",
        str(bench),
        "--reward",
        REWARD,
        "--k",
        "2",
        "--max-new-tokens",
        "8",
        "--seed",
        "3",
    ]
    # without --meanshift-from: a learned first pass, kept beside the output
    assert main([*common, "--policy", "meanshift", "--output", str(tmp_path / "ms.jsonl")]) == 0
    first_pass = tmp_path / "ms.learned.jsonl"
    tau = round(token_mean_tau(first_pass), 4)
    ms = json.loads((tmp_path / "ms.summary.json").read_text())
    assert ms["policy"] == f"fixed:{tau:.4f}"
    assert f"MeanShift {tau:.4f}" in ms["name"]
    assert all(
        t == pytest.approx(tau, abs=1e-4)
        for line in (tmp_path / "ms.jsonl").read_text().splitlines()
        for t in json.loads(line)["tau"]
    )
    # the learned pass really varied tau: a MeanShift of a constant would test nothing
    assert len({t for line in first_pass.read_text().splitlines() for t in json.loads(line)["tau"]}) > 1
    # its own row in `introllm compare`, beside the learned one
    from introllm.training.evaluate import compare_table, load_summary

    table = compare_table([load_summary(first_pass), load_summary(tmp_path / "ms.jsonl")])
    assert "| ckpt (learned) |" in table and f"| ckpt (MeanShift {tau:.4f}) |" in table
    # with --meanshift-from: the same tau, no second learned pass
    assert (
        main(
            [
                *common,
                "--policy",
                "meanshift",
                "--meanshift-from",
                str(first_pass),
                "--output",
                str(tmp_path / "ms2.jsonl"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "ms2.summary.json").read_text())["policy"] == ms["policy"]
    assert not (tmp_path / "ms2.learned.jsonl").exists()
    # a learned eval of another benchmark is refused, with one line
    other = tmp_path / "other.jsonl"
    other.write_text(bench.read_text())
    rc = main(
        [
            "eval",
            "--checkpoint",
            str(tiny_ckpt),
            "--dataset",
            str(other),
            "--reward",
            REWARD,
            "--k",
            "2",
            "--max-new-tokens",
            "4",
            "--policy",
            "meanshift",
            "--meanshift-from",
            str(first_pass),
            "--output",
            str(tmp_path / "ms3.jsonl"),
        ]
    )
    assert rc == 2 and "evaluated dataset" in capsys.readouterr().err


# --------------------------------------------------------------------------- config and plan

CONFIG = """
[experiment]
name = "unit"
output = "{out}"
seeds = [0, 1]
baseline = "fixed 0.6"
base = "BASE"
bootstrap_resamples = 500

[train]
steps = 2
rg_args = {{min_terms = 2, max_terms = 2}}
adam_betas = [0.9, 0.99]
mask_truncated = true

[eval]
k = 2
limit = 3

[[benchmark]]
name = "sums"
dataset = "sums.jsonl"
num_problems = 10

[[method]]
name = "introllm"
train = {{method = "introllm", gradient_checkpointing = false}}
meanshift = true

[[method]]
name = "head only"
train = {{method = "introllm", model_lr = 0.0}}
eval = {{checkpoint = "{{base}}", instruction = "from {{final}}"}}

[[method]]
name = "fixed 0.6"
policy = "fixed:0.6"
seeds = [0]
"""


def write_config(tmp_path, text=CONFIG, **fmt):
    p = tmp_path / "exp.toml"
    p.write_text(text.format(out=tmp_path / "out", **fmt))
    return p


def test_flags_render_every_value_type():
    assert flags(
        {
            "model_lr": 1e-5,
            "mask_truncated": True,
            "overwrite": False,
            "rg_args": {"b": 1, "a": 2},
            "adam_betas": [0.9, 0.99],
        }
    ) == [
        "--model-lr",
        "1e-05",
        "--mask-truncated",
        "--no-overwrite",
        "--rg-args",
        '{"a": 2, "b": 1}',
        "--adam-betas",
        "0.9",
        "0.99",
    ]


def test_plan_is_methods_x_seeds_x_benchmarks_in_seed_order(tmp_path):
    cfg = load_experiment(write_config(tmp_path))
    jobs = plan(cfg)
    assert [j.id for j in jobs] == [
        "train.introllm.s0",
        "eval.sums.introllm.s0",
        "eval.sums.introllm-meanshift.s0",
        "train.head-only.s0",
        "eval.sums.head-only.s0",
        "eval.sums.fixed-0.6.s0",
        "train.introllm.s1",
        "eval.sums.introllm.s1",
        "eval.sums.introllm-meanshift.s1",
        "train.head-only.s1",
        "eval.sums.head-only.s1",
    ]
    by_id = {j.id: j for j in jobs}
    out = tmp_path / "out"
    train = by_id["train.introllm.s1"].argv
    assert train[:1] == ["train"] and "--seed" in train and train[train.index("--seed") + 1] == "1"
    assert train[train.index("--model") + 1] == "BASE" and train[train.index("--output") + 1] == str(
        out / "runs/introllm/seed1"
    )
    assert "--mask-truncated" in train and "--no-gradient-checkpointing" in train
    ev = by_id["eval.sums.introllm.s1"]
    assert ev.after == ["train.introllm.s1"] and ev.argv[ev.argv.index("--checkpoint") + 1] == str(
        out / "runs/introllm/seed1/final"
    )
    ms = by_id["eval.sums.introllm-meanshift.s1"]
    assert ms.after == [ev.id] and ms.argv[ms.argv.index("--meanshift-from") + 1] == ev.records
    assert ms.argv[ms.argv.index("--policy") + 1] == "meanshift" and ms.row == "introllm MeanShift"
    # placeholders: a head-only method evaluates the base model with its head
    head = by_id["eval.sums.head-only.s0"].argv
    assert head[head.index("--checkpoint") + 1] == "BASE"
    assert head[head.index("--instruction") + 1] == f"from {out / 'runs/head-only/seed0/final'}"
    fixed = by_id["eval.sums.fixed-0.6.s0"].argv
    assert fixed[fixed.index("--checkpoint") + 1] == "BASE" and fixed[fixed.index("--policy") + 1] == "fixed:0.6"
    assert check_tables(load_experiment(write_config(tmp_path, CONFIG))) == []


def test_check_tables_names_a_flag_the_cli_does_not_know(tmp_path):
    text = CONFIG.replace("steps = 2", "stepz = 2")
    problems = check_tables(load_experiment(write_config(tmp_path, text)))
    assert (
        len(problems) == 2
        and all("stepz" in p for p in problems)
        and problems[0].startswith("method introllm [train]:")
    )


def test_check_tables_names_a_value_out_of_range_before_anything_runs(tmp_path):
    problems = check_tables(load_experiment(write_config(tmp_path, CONFIG.replace("k = 2", "k = 0"))))
    assert problems and all("k: must be >= 1" in p for p in problems)


@pytest.mark.parametrize(
    "change, message",
    [
        (('baseline = "fixed 0.6"', 'baseline = "nope"'), "baseline: 'nope' is not a row"),
        (("seeds = [0, 1]", "seeds = []"), "experiment.seeds"),
        (("seeds = [0, 1]", "seeds = [1, 1]"), "must not repeat"),
        (
            ('policy = "fixed:0.6"', 'policy = "fixed:0.6"\nmeanshift = true'),
            "meanshift: needs a policy whose temperature varies",
        ),
        (('[[method]]\nname = "introllm"', '[[method]]\nname = "introllm"\ncolour = 1'), "unknown key(s) colour"),
        (("steps = 2", "output = 'x'"), "output are set by the experiment"),
        (('name = "head only"', 'name = "introllm"'), "names must differ"),
        (("[eval]", "[evals]"), "unknown table(s) evals"),
    ],
)
def test_bad_configs_fail_with_a_message_naming_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError) as e:
        load_experiment(write_config(tmp_path, CONFIG.replace(*change)))
    assert message in str(e.value)


def test_cli_dry_run_prints_the_plan_and_errors_are_one_line(tmp_path, capsys):
    from introllm.cli import main

    cfg = write_config(tmp_path)
    assert main(["experiment", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "11 jobs" in out and "[1/11] train.introllm.s0 (todo)" in out and "introllm eval" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert main(["experiment", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = write_config(tmp_path, CONFIG.replace("steps = 2", "stepz = 2"))
    assert main(["experiment", str(bad)]) == 2
    assert "unknown train flag(s) stepz" in capsys.readouterr().err


def test_runner_status_reads_markers_and_refuses_stale_ones(tmp_path):
    cfg = load_experiment(write_config(tmp_path))
    jobs = plan(cfg)
    runner = Runner(cfg, jobs)
    train = jobs[0]
    assert runner.status(train) == "todo"
    runner._write(runner.marker(train, "started"), {"argv": train.argv})
    assert runner.status(train) == "restart"  # started, no checkpoint yet
    ck = Path(train.run_dir) / "checkpoint-000002" / "trainer_state"
    ck.mkdir(parents=True)
    (ck / "state.json").write_text(json.dumps({"step": 2}))
    assert runner.status(train) == "resume checkpoint-000002"
    final = Path(train.run_dir) / "final" / "trainer_state"
    final.mkdir(parents=True)
    (final / "state.json").write_text(json.dumps({"step": 2}))
    assert runner.status(train) == "resume final"  # stopped between its final checkpoint and its marker
    runner.jobs = [train]
    runner.run()  # records it as finished without running anything
    assert runner.status(train) == "done"
    (tmp_path / "out/state" / f"{train.id}.done.json").unlink()
    assert runner.status(train) == "resume final"
    runner._write(runner.marker(train), {"argv": train.argv, "after": {}})
    assert runner.status(train) == "done"
    # an evaluation is done only after the very training it evaluated
    ev = jobs[1]
    assert ev.after == [train.id]
    runner._write(runner.marker(ev), {"argv": ev.argv, "after": {train.id: runner._digest(train)}})
    assert runner.status(ev) == "done"
    runner._write(runner.marker(train), {"argv": train.argv, "final": "redone"})  # the training ran again since
    assert runner.status(ev) == "todo" and not runner.is_done(ev)
    runner._write(runner.marker(train), {"argv": [*train.argv, "--steps", "9"]})  # the config changed since
    runner._write(runner.marker(train, "started"), {"argv": [*train.argv, "--steps", "9"]})
    assert runner.status(train) == "restart"


# --------------------------------------------------------------------------- the report's numbers


def test_report_scores_and_paired_differences_on_hand_made_records(tmp_path):
    cfg = load_experiment(write_config(tmp_path))
    jobs = plan(cfg)
    ev = {j.id: j for j in jobs if j.kind == "eval"}
    # two problems, k = n = 2. introllm: seed 0 p1 [1, 1] p2 [1, 0]; seed 1 p1 [1, 0] p2 [0, 0]
    #   per problem (mean over seeds): p1 Avg 0.75 Pass 1.0, p2 Avg 0.25 Pass 0.5 -> Avg 50.0, Pass 75.0
    # fixed 0.6 (seed 0 only): p1 [0, 0], p2 [1, 0] -> Avg 25.0, Pass 50.0; differences introllm - fixed:
    #   p1 Avg +0.75 Pass +1.0, p2 Avg -0.25 Pass -0.5 -> +25.0 and +25.0
    t = [0.7, 1.1]
    write_eval(
        Path(ev["eval.sums.introllm.s0"].records), [("p1", True, t), ("p1", True, t), ("p2", True, t), ("p2", False, t)]
    )
    write_eval(
        Path(ev["eval.sums.introllm.s1"].records),
        [("p1", True, t), ("p1", False, t), ("p2", False, t), ("p2", False, t)],
    )
    for s in (0, 1):  # MeanShift at 0.9: all wrong
        write_eval(
            Path(ev[f"eval.sums.introllm-meanshift.s{s}"].records),
            [("p1", False, [0.9])] * 2 + [("p2", False, [0.9])] * 2,
            policy="fixed:0.9",
        )
    write_eval(
        Path(ev["eval.sums.fixed-0.6.s0"].records),
        [("p1", False, [0.6])] * 2 + [("p2", True, [0.6]), ("p2", False, [0.6])],
        policy="fixed:0.6",
    )
    done = {j for j in ev if "head-only" not in j}
    text = write_report(cfg, jobs, done).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| introllm | 2 |"))
    assert "| 50.0 [" in row and "| 75.0 [" in row and "| 75.0, 25.0 |" in row and "| 0.900 |" in row
    fixed = next(line for line in text.splitlines() if line.startswith("| fixed 0.6 | 1 | 25.0 ["))
    assert "| 50.0 [" in fixed
    diff = next(line for line in text.splitlines() if line.startswith("| introllm | 2 | +25.0 ["))
    assert diff.count("| +25.0 [") == 2
    # the interval of the Avg difference: per-problem differences (+0.75, -0.25), 500 resamples with seed 0
    iv = bootstrap_interval([0.75, -0.25], resample_indices(2, num_resamples=500, seed=0))
    assert f"+25.0 [{100 * iv.lo:+.1f}, {100 * iv.hi:+.1f}]" in diff
    ms = next(line for line in text.splitlines() if line.startswith("| introllm | 0.9, 0.9 |"))
    assert "| +50.0 [" in ms and "| +75.0 [" in ms  # learned minus its MeanShift
    assert "Incomplete: 6 of 11 jobs" in text  # the head-only runs and the trainings never ran here
    assert "```toml" in text and 'baseline = "fixed 0.6"' in text and "introllm train " in text


# --------------------------------------------------------------------------- end to end, killed and restarted

E2E = """
[experiment]
name = "tiny"
output = "out"
seeds = [0, 1]
baseline = "grpo"
base = "{ckpt}"
bootstrap_resamples = 1000

[train]
dataset = "{data}"
reward = "{reward}"
eval_size = 4
batch_size = 2
group_size = 4
max_new_tokens = 6
steps = 6
save_every = 2
eval_samples = 2
sample_every = 1
device = "cpu"
model_lr = 1e-3
head_lr = 1e-3

[eval]
k = 2
n = 3
max_new_tokens = 6
batch_prompts = 4
limit = 6
reward = "{reward}"

[[benchmark]]
name = "sums"
dataset = "{data}"

[[method]]
name = "introllm"
train = {{method = "introllm"}}
meanshift = true

[[method]]
name = "grpo"
train = {{method = "grpo", fixed_tau = 1.0}}
policy = "fixed:1.0"
seeds = [0]
"""


def _experiment(cwd: Path, *extra: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "introllm", "experiment", "exp.toml", *extra],
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_a_killed_and_restarted_experiment_writes_the_same_report(tiny_ckpt, tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(24))
    )
    dirs = {}
    for name in ("straight", "stopped"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        (dirs[name] / "exp.toml").write_text(E2E.format(ckpt=tiny_ckpt, data=data, reward=REWARD))

    # the grid run straight through, and beside it (both at once: their jobs are mostly start-up
    # time; 135 s instead of 190 s on 2 cores) the same grid killed (SIGKILL: no clean-up of ours
    # runs) while the second seed's training is past its first checkpoint
    straight_log = tmp_path / "straight.log"
    with straight_log.open("w") as log_file:
        straight = _experiment(dirs["straight"], stdout=log_file)
    try:
        stopped = _experiment(dirs["stopped"])
        checkpoint = dirs["stopped"] / "out/runs/introllm/seed1/checkpoint-000002"
        deadline = time.monotonic() + 1800
        while not checkpoint.is_dir():
            assert stopped.poll() is None, stopped.stdout.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(stopped.pid, signal.SIGKILL)
        stopped.wait()
        stopped.stdout.close()
        assert not (dirs["stopped"] / "out/runs/introllm/seed1/final").exists()
        assert not (dirs["stopped"] / "out/report.md").exists()
        time.sleep(1)  # the training subprocess dies with its parent (PR_SET_PDEATHSIG); give the kernel a moment
        straight.wait(timeout=1800)
    finally:  # a failure above must not leave the straight run going
        if straight.poll() is None:
            straight.kill()
            straight.wait()
    out = straight_log.read_text()
    assert straight.returncode == 0, out[-3000:]
    assert "[8/8]" in out and "report: out/report.md" in out

    restarted = _experiment(dirs["stopped"])
    out2, _ = restarted.communicate(timeout=1800)
    assert restarted.returncode == 0, out2[-3000:]
    assert "[1/8] train.introllm.s0: done, skipped" in out2 and "[5/8] eval.sums.grpo.s0: done, skipped" in out2
    assert "[6/8] train.introllm.s1: resuming from checkpoint-" in out2
    log = (dirs["stopped"] / "out/logs/train.introllm.s1.log").read_text()
    assert "--resume out/runs/introllm/seed1" in log

    a = (dirs["straight"] / "out/report.md").read_text()
    b = (dirs["stopped"] / "out/report.md").read_text()
    assert a == b
    # the report holds what the issue asks for
    assert "| introllm | 2 |" in a and "| introllm MeanShift | 2 |" in a and "| grpo | 1 |" in a
    assert "Paired differences against **grpo**" in a and "Per-token temperature against its own mean" in a
    assert a.count("introllm train ") == 3 and a.count("introllm eval ") == 5
    assert all(
        (dirs["stopped"] / "out/figures/introllm" / f).stat().st_size > 5000
        for f in ("fig2_tau_by_level.png", "fig5_tau_training.png")
    )

    # run again: nothing left to do, the same report
    again = _experiment(dirs["stopped"])
    out3, _ = again.communicate(timeout=600)
    assert again.returncode == 0 and out3.count("done, skipped") == 8
    assert (dirs["stopped"] / "out/report.md").read_text() == a


@pytest.mark.slow
def test_a_failing_job_stops_the_experiment_with_its_log_tail(tmp_path, capsys):
    from introllm.cli import main

    cfg = tmp_path / "exp.toml"
    cfg.write_text(f"""
[experiment]
name = "broken"
output = "{tmp_path / "out"}"
seeds = [0]
baseline = "fixed 1.0"
[[benchmark]]
name = "missing"
dataset = "{tmp_path / "missing.jsonl"}"
[[method]]
name = "fixed 1.0"
policy = "fixed:1.0"
""")
    assert main(["experiment", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert (
        "eval.missing.fixed-1.0.s0 failed (exit 2)" in err
        and "missing.jsonl" in err
        and "logs/eval.missing.fixed-1.0.s0.log" in err
    )
    assert not (tmp_path / "out/state/eval.missing.fixed-1.0.s0.done.json").exists()
    assert not (tmp_path / "out/report.md").exists()


def test_rescore_rechecks_saved_samples_without_touching_them(tmp_path):
    """experiments/rescore.py: a sample the old checker counted for restating the question is
    reported as lost, a right one stays right, a wrong one stays wrong; the file is unchanged."""
    rows = [
        {"problem_id": "p1", "answer": "-5", "text": "2 + -7", "correct": True},  # the loophole
        {"problem_id": "p1", "answer": "-5", "text": "2 + -7 = -5", "correct": True},
        {"problem_id": "p2", "answer": "21", "text": "Answer: 20", "correct": False},
    ]
    path = tmp_path / "evals" / "bench" / "row" / "seed0.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = path.read_text()
    script = Path(__file__).resolve().parents[1] / "experiments" / "rescore.py"
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--json", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads((tmp_path / "r.json").read_text())[str(path)]
    assert (figures["recorded"], figures["rechecked"], figures["lost"], figures["gained"]) == (2 / 3, 1 / 3, 1, 0)
    assert "'2 + -7' (answer -5)" in out.stdout and path.read_text() == before
    bad = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "no evals/" in bad.stderr and "Traceback" not in bad.stderr


def test_report_to_reaches_each_training_job_but_not_its_identity(tmp_path, monkeypatch):
    """`introllm experiment --report-to tensorboard`: every train command gets the flag when it
    runs, while the job's recorded command (what makes a finished job finished) stays the same."""
    from introllm.experiment import runner as R

    cfg = load_experiment(write_config(tmp_path))
    jobs = plan(cfg)
    ran = []

    def fake(self, argv, log_path):
        ran.append(argv)
        log_path.write_text("failed on purpose\n")
        return 1

    monkeypatch.setattr(R.Runner, "_subprocess", fake)
    with pytest.raises(RuntimeError):
        R.Runner(cfg, jobs, report_to="tensorboard").run()
    train = jobs[0]
    assert train.kind == "train" and "--report-to" not in train.argv
    assert ran[0][ran[0].index("--report-to") + 1] == "tensorboard"
    assert json.loads((tmp_path / "out/state/train.introllm.s0.started.json").read_text())["argv"] == train.argv


def test_also_at_evaluates_every_seed_s_checkpoint_under_common_policies(tmp_path):
    text = CONFIG.replace("meanshift = true", 'meanshift = true\nalso_at = ["greedy", "fixed:0.3"]')
    cfg = load_experiment(write_config(tmp_path, text))
    by_id = {j.id: j for j in plan(cfg)}
    for policy, slugged in (("greedy", "greedy"), ("fixed:0.3", "fixed-0.3")):
        job = by_id[f"eval.sums.introllm-at-{slugged}.s1"]
        assert job.row == f"introllm at {policy}" and job.after == ["train.introllm.s1"]
        assert job.argv[job.argv.index("--policy") + 1] == policy
        assert job.argv[job.argv.index("--checkpoint") + 1] == str(tmp_path / "out/runs/introllm/seed1/final")
    assert cfg.row_names()[:4] == ["introllm", "introllm MeanShift", "introllm at greedy", "introllm at fixed:0.3"]
    assert check_tables(cfg) == []
    bad = load_experiment(write_config(tmp_path, text.replace('"fixed:0.3"', '"fixed:hot"')))
    assert [p for p in check_tables(bad) if "also_at 'fixed:hot'" in p]
    with pytest.raises(ConfigError, match="also_at"):
        load_experiment(write_config(tmp_path, text.replace('["greedy", "fixed:0.3"]', '"greedy"')))
