"""Paired comparison of two methods over seeds (analysis/paired.py, `fleetsim compare`).

Run folders come from the method-table tests' builder (known correct counts per corruption and
seed); the expected differences, intervals and p-values are computed here by hand.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from typer.testing import CliRunner

from analysis.paired import describe, paired_comparison
from analysis.stats import student_t_two_sided_p
from analysis.tta import TableError, seed_table
from simulator.cli import app
from tests.test_tta_table import CORRECT, continual_runs, hand_interval, reset_sweep, write_run

runner = CliRunner()
CEMA = CORRECT[("cema", "cema")]
# random's correct counts relative to CEMA's per corruption and seed 0, 1, 2: gaussian level,
# fog 2 better on every seed, jpeg 3 / 1 / 5 worse
RANDOM_DELTA = {"gaussian_noise": [0, 0, 0], "fog": [2, 2, 2], "jpeg_compression": [-3, -1, -5]}


def cema_reset_runs(root, policy, correct, corruptions=tuple(CEMA), seeds=range(3)):
    """One ``cema/<policy>`` run per (corruption, seed) with ``correct(corruption, seed)`` of 100
    samples right and 20 uploaded."""
    for corruption in corruptions:
        for seed in seeds:
            write_run(
                root / f"{policy}-{corruption}-{seed}",
                seed=seed,
                adapter="cema",
                policy=policy,
                domains={corruption: (correct(corruption, seed), 20)},
                params={"stream.corruptions": [corruption]},
            )
    return root


def random_runs(root):
    return cema_reset_runs(root, "random", lambda c, s: CEMA[c][s] + RANDOM_DELTA[c][s])


def test_two_sided_p_matches_the_closed_forms_for_one_and_two_degrees_of_freedom():
    for t in (0.0, 0.3, 1.0, 2.5, 12.0, -4.0):
        assert student_t_two_sided_p(t, 2) == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2))
        assert student_t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(abs(t)))
    assert student_t_two_sided_p(math.inf, 3) == 0.0
    with pytest.raises(ValueError, match="degrees of freedom"):
        student_t_two_sided_p(1.0, 0)


def test_advantage_interval_p_and_cell_signs_are_those_computed_by_hand(tmp_path):
    sweep, random = reset_sweep(tmp_path / "sweep"), random_runs(tmp_path / "random")
    [result] = paired_comparison([sweep, random], a="CEMA", b="cema/random")
    assert (result.a, result.b, result.severity, result.protocol) == ("CEMA", "Random", 5, "reset")
    assert result.seeds == [0, 1, 2]
    cema_error = [sum(100 - CEMA[c][s] for c in CEMA) / 3 for s in range(3)]
    assert result.a_error == pytest.approx(cema_error)
    # B's error minus A's, per seed: (0 - 2 + 3) / 3, (0 - 2 + 1) / 3, (0 - 2 + 5) / 3
    advantage = [1 / 3, -1 / 3, 1.0]
    assert result.advantage == pytest.approx(advantage)
    mean, half = hand_interval(advantage)
    assert result.interval == pytest.approx((mean, half))
    sd = math.sqrt(sum((v - mean) ** 2 for v in advantage) / 2)
    t = mean / (sd / math.sqrt(3))
    assert result.p_value == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2))
    assert result.cells == (3, 3, 3)  # jpeg lower, gaussian level, fog higher on each seed
    assert result.corruptions == (1, 1, 1)
    assert result.a_upload_pct == pytest.approx([20.0] * 3)
    assert result.bytes_ratio == pytest.approx(1.0)
    text = describe(result)
    assert "| 0 | 20.00 | 20.33 | +0.33 | 20.0 | 20.0 |" in text
    assert f"lower than Random's by {mean:.2f} ± {half:.2f} points" in text
    assert "in 3 / 3 / 3 (corruption, seed) cells, and in 1 / 1 / 1 corruptions" in text
    # A sent nothing (Source against an uploading method): no ratio, B's bytes instead
    silent = dataclasses.replace(result, a_upload_bytes=[0.0, 0.0, 0.0])
    megabytes = sum(result.b_upload_bytes) / 3 / 1e6
    assert f"CEMA sent no upload bytes; Random sent {megabytes:.3g} MB per device." in (
        describe(silent)
    )
    # downlinks of one kind (states both) are not mentioned; whole models against states are
    assert "Downlink" not in text
    models = dataclasses.replace(result, a_download_bytes=[3e6] * 3, b_download_bytes=[1e5] * 3)
    assert "Downlink: CEMA received 3 MB per device, Random 0.1 MB (30x)." in describe(models)
    assert models.as_dict()["a_download_bytes_per_device"] == [3e6] * 3


def test_the_same_numbers_from_continual_runs_and_two_methods_need_no_names(tmp_path):
    reset = paired_comparison([reset_sweep(tmp_path / "r")])
    continual = paired_comparison([continual_runs(tmp_path / "c")])
    for result in (reset[0], continual[0]):
        # the baseline is the method listed first in the table: Source, then CEMA
        assert (result.a, result.b) == ("CEMA", "Source")
        assert result.cells == (9, 0, 0) and result.corruptions == (3, 0, 0)
        assert result.p_value is not None and result.p_value < 0.001
        assert result.bytes_ratio == 0.0  # Source uploads nothing
    assert continual[0].protocol == "continual"
    assert continual[0].advantage == pytest.approx(reset[0].advantage)


def test_one_comparison_per_severity_and_only_common_seeds(tmp_path):
    reset_sweep(tmp_path / "s5", severity=5)
    reset_sweep(tmp_path / "s3", severity=3)
    results = paired_comparison([tmp_path / "s5", tmp_path / "s3"], a="CEMA", b="Source")
    assert [r.severity for r in results] == [5, 3]
    assert results[0].advantage == pytest.approx(results[1].advantage)
    only_seed_0 = cema_reset_runs(tmp_path / "one", "random", lambda c, s: 50, seeds=[0])
    [single] = paired_comparison([tmp_path / "s5", only_seed_0], a="CEMA", b="Random")
    assert single.seeds == [0] and single.p_value is None and single.interval[1] == 0.0
    assert "one seed: no interval" in describe(single)


def test_unclear_requests_are_errors_that_say_what_to_do(tmp_path):
    sweep, random = reset_sweep(tmp_path / "sweep"), random_runs(tmp_path / "random")
    with pytest.raises(TableError, match="3 methods .*name the two"):
        paired_comparison([sweep, random])
    with pytest.raises(TableError, match="name both methods"):
        paired_comparison([sweep], a="CEMA")
    with pytest.raises(TableError, match="no runs of method 'EATA'; the runs hold: Source, CEMA"):
        paired_comparison([sweep], a="EATA", b="CEMA")
    with pytest.raises(TableError, match="both sides are 'CEMA'"):
        paired_comparison([sweep], a="cema/cema", b="CEMA")


def test_cli_compare_prints_the_table_and_json_and_fails_clearly(tmp_path):
    sweep, random = reset_sweep(tmp_path / "sweep"), random_runs(tmp_path / "random")
    args = ["compare", str(sweep), str(random), "--a", "cema/cema", "--b", "Random"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "CEMA against Random, severity 5, reset protocol, 3 paired seeds" in result.output
    assert "| 2 | 19.00 | 20.00 | +1.00 |" in result.output
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    [record] = json.loads(as_json.output)
    assert record["advantage"] == pytest.approx([1 / 3, -1 / 3, 1.0])
    assert record["cells_lower_level_higher"] == [3, 3, 3]
    label = ["--label", "cema/random=Random (CEMA bytes)"]
    renamed = runner.invoke(app, [*args[:5], "--b", "Random (CEMA bytes)", *label])
    assert renamed.exit_code == 0, renamed.output
    assert "CEMA against Random (CEMA bytes)" in renamed.output
    # the adapter/policy key names the renamed row too
    by_key = runner.invoke(app, [*args[:5], "--b", "cema/random", *label])
    assert by_key.exit_code == 0, by_key.output
    assert "CEMA against Random (CEMA bytes)" in by_key.output
    unnamed = runner.invoke(app, [*args[:3], *label])
    assert unnamed.exit_code == 2 and "3 methods" in unnamed.output
    missing = runner.invoke(app, ["compare", str(sweep), "--a", "EATA", "--b", "CEMA"])
    assert missing.exit_code == 2 and "no runs of method 'EATA'" in missing.output
    assert "Traceback" not in missing.output


def test_by_a_key_gives_one_comparison_per_value_and_the_cli_names_it(tmp_path):
    # two bandwidths; at 2 Mbit/s CEMA is 5 correct better per corruption, at 8 Mbit/s 1 worse
    for mbps, delta in ((2, 5), (8, -1)):
        for policy, shift in (("cema", delta), ("random", 0)):
            for seed in range(3):
                write_run(
                    tmp_path / f"bw{mbps}-{policy}-{seed}",
                    seed=seed,
                    adapter="cema",
                    policy=policy,
                    domains={
                        c: (CEMA[c][seed] + (shift if policy == "cema" else 0), 20) for c in CEMA
                    },
                    config={"network.uplink_mbps": mbps},
                    params={"network.uplink_mbps": mbps},
                )
    with pytest.raises(TableError, match="add the key to --by"):
        paired_comparison([tmp_path], a="CEMA", b="Random")
    results = paired_comparison([tmp_path], a="CEMA", b="Random", by=["network.uplink_mbps"])
    assert [r.group for r in results] == [
        {"network.uplink_mbps": "2"},
        {"network.uplink_mbps": "8"},
    ]
    assert results[0].advantage == pytest.approx([5.0] * 3)
    assert results[1].advantage == pytest.approx([-1.0] * 3)
    assert results[1].p_value == 0.0 and results[1].cells == (0, 0, 9)
    out = runner.invoke(
        app,
        ["compare", str(tmp_path), "--a", "CEMA", "--b", "Random", "--by", "network.uplink_mbps"],
    )
    assert out.exit_code == 0, out.output
    assert "CEMA against Random, network.uplink_mbps=8, severity 5" in out.output
    assert "higher than Random's by 1.00 ± 0.00 points" in out.output


def test_a_baseline_folder_compares_two_variants_of_one_method(tmp_path):
    sweep = reset_sweep(tmp_path / "sweep")  # Source and CEMA
    # CEMA again, 4 more correct per corruption on seed 1
    variant = cema_reset_runs(
        tmp_path / "cema_variant", "cema", lambda c, s: CEMA[c][s] + 4 * (s == 1)
    )
    [result] = paired_comparison([variant], b="CEMA", baseline=[sweep])
    assert (result.a, result.b) == ("CEMA [cema_variant]", "CEMA [sweep]")
    assert result.advantage == pytest.approx([0.0, 4.0, 0.0])
    assert result.cells == (3, 6, 0)
    [other] = paired_comparison([variant], b="Source", baseline=[sweep])
    assert (other.a, other.b) == ("CEMA", "Source")
    with pytest.raises(TableError, match="the baseline's runs hold 2 methods"):
        paired_comparison([variant], baseline=[sweep])
    with pytest.raises(TableError, match="the runs are continual and the baseline's reset"):
        paired_comparison([continual_runs(tmp_path / "c")], a="CEMA", b="CEMA", baseline=[sweep])
    fewer = cema_reset_runs(tmp_path / "fewer", "cema", lambda c, s: 80, corruptions=["fog"])
    with pytest.raises(TableError, match="cover different corruptions"):
        paired_comparison([fewer], b="CEMA", baseline=[sweep])
    out = runner.invoke(
        app, ["compare", str(variant), "--baseline", str(sweep), "--b", "cema/cema", "--json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["advantage"] == pytest.approx([0.0, 4.0, 0.0])


def test_identical_runs_read_as_equal_not_as_lower_or_higher(tmp_path):
    sweep = reset_sweep(tmp_path / "sweep")
    same = cema_reset_runs(tmp_path / "same", "cema", lambda c, s: CEMA[c][s])
    [result] = paired_comparison([same], b="CEMA", baseline=[sweep])
    assert result.advantage == pytest.approx([0.0, 0.0, 0.0])
    text = describe(result)
    assert "CEMA [same]'s mean error equals CEMA [sweep]'s (difference 0.00 ± 0.00 points" in text
    assert "than" not in text.split("\n\n")[-1].splitlines()[0]


def test_by_source_pairs_the_folders_named_alike(tmp_path):
    # two threshold variants, each with its CEMA and random runs in separate sweep folders
    for variant, shift in (("strict", 0), ("loose", 3)):
        cema_reset_runs(tmp_path / variant, "cema", lambda c, s, k=shift: CEMA[c][s] + k)
        random_runs(tmp_path / f"{variant}_random")
    folders = [tmp_path / n for n in ("strict", "strict_random", "loose", "loose_random")]
    with pytest.raises(TableError, match="same name \\(--label FOLDER=NAME for each\\)"):
        paired_comparison(folders, a="CEMA", b="Random", by=["source"])
    labels = {"strict_random": "strict", "loose_random": "loose"}
    results = paired_comparison(folders, a="CEMA", b="Random", by=["source"], labels=labels)
    assert [r.group for r in results] == [{"source": "strict"}, {"source": "loose"}]
    strict, loose = (r.advantage for r in results)
    assert [b - a for a, b in zip(strict, loose, strict=True)] == pytest.approx([3.0] * 3)


def test_a_table_by_another_key_alone_says_to_keep_method(tmp_path):
    # --by replaces the default key: two methods at one bandwidth collide, and the message names
    # the fix (keep method among the keys) instead of a list of config keys that differ
    for policy in ("cema", "random"):
        write_run(
            tmp_path / f"bw2-{policy}",
            seed=0,
            adapter="cema",
            policy=policy,
            domains={c: (CEMA[c][0], 20) for c in CEMA},
            config={"network.uplink_mbps": 2},
            params={"network.uplink_mbps": 2},
        )
    with pytest.raises(TableError, match="two methods .*--by method --by network.uplink_mbps"):
        seed_table([tmp_path], by=["network.uplink_mbps"])
    assert set(seed_table([tmp_path], by=["method", "network.uplink_mbps"])["method"]) == {
        "CEMA",
        "Random",
    }
