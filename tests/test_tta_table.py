"""The TTA method-comparison table (analysis/tta.py, `fleetsim table`, `fleetsim match-budget`).

Hand-made run folders in the real format (events.parquet recorded with the engine's EventRecorder,
summary.json from its ``summarize``) carry known numbers; the expected cells are computed here by
hand. One tiny engine run checks that real files are read the same way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from analysis import tta
from simulator.cli import app
from simulator.metrics import EventRecorder, summarize

runner = CliRunner()
T_975_2DOF = 4.302652729911275  # Student-t 97.5% quantile, 2 degrees of freedom (3 seeds)
DEVICES = 2
HEADER = 64
SAMPLE_BYTES = 1000
DOWNLOAD_BYTES = 5000
SAMPLES = 100  # per domain, 50 per device

# method -> corruption -> correct samples out of 100, per seed 0, 1, 2
CORRECT = {
    ("none", "none"): {
        "gaussian_noise": [40, 38, 33],
        "fog": [70, 71, 72],
        "jpeg_compression": [60, 60, 66],
    },
    ("cema", "cema"): {
        "gaussian_noise": [75, 77, 76],
        "fog": [85, 84, 88],
        "jpeg_compression": [80, 81, 79],
    },
}
UPLOADED = {("none", "none"): 0, ("cema", "cema"): 20}  # per domain (10 per device)


def write_run(
    folder: Path,
    *,
    seed: int,
    adapter: str,
    policy: str,
    domains: dict[str, tuple[int, int]],
    severity: int = 5,
    params: dict | None = None,
    config: dict | None = None,
    batch_size: int = 50,
    header: int = HEADER,
) -> Path:
    """One run folder: ``domains`` maps corruption -> (correct, uploaded) of 100 samples, half on
    each device; each device sends one upload message per domain (header + 1000 B per sample)
    and receives one download per domain (5000 B) when it uploaded anything."""
    recorder = EventRecorder()
    t = 0.0
    for corruption, (correct, uploaded) in domains.items():
        domain = "clean" if corruption == "clean" else f"{corruption}/{severity}"
        for device in range(DEVICES):
            n = SAMPLES // DEVICES
            k = correct // DEVICES + (device < correct % DEVICES)
            u = uploaded // DEVICES
            t += 1.0
            recorder.samples(
                sim_time_s=t,
                device=device,
                batch=0,
                index=np.arange(n),
                domain=domain,
                label=np.zeros(n, dtype=np.int64),
                prediction=np.where(np.arange(n) < k, 0, 1),
                correct=np.arange(n) < k,
                entropy=np.full(n, 0.5, dtype=np.float32),
                uploaded=np.arange(n) < u,
                reason=np.where(np.arange(n) < u, "uploaded", "low_entropy"),
                version=0,
            )
            if u:
                recorder.message(
                    "upload",
                    sim_time_s=t + 0.5,
                    device=device,
                    batch=0,
                    samples=u,
                    bytes=header + SAMPLE_BYTES * u,
                    sent_s=t,
                )
                recorder.message(
                    "download", sim_time_s=t + 0.7, device=device, bytes=DOWNLOAD_BYTES, version=1
                )
    summary = summarize(recorder.frame())
    summary.update(scenario="fixture", seed=seed, devices=DEVICES, policy=policy, adapter=adapter)
    resolved = {
        "name": "fixture",
        "seed": seed,
        "fleet": {"devices": DEVICES},
        "stream": {
            "batch_size": batch_size,
            "corruptions": list(domains),
            "severity": severity,
            "schedule": "continual",
        },
        "network": {"uplink_mbps": 1.0, "header_bytes": header},
        "cloud": {"adapter": adapter},
        "policy": {"name": policy},
    }
    for dotted, value in (config or {}).items():
        node = resolved
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    folder.mkdir(parents=True)
    recorder.frame().to_parquet(folder / "events.parquet", index=False)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    (folder / "config.yaml").write_text(yaml.safe_dump(resolved))
    run_params = {"cloud.adapter": adapter, "policy.name": policy, **(params or {}), "seed": seed}
    (folder / "run.json").write_text(json.dumps({"params": run_params}))
    return folder


def reset_sweep(root: Path, severity: int = 5) -> Path:
    """One run per (method, corruption, seed), as `fleetsim sweep` names them."""
    for (adapter, policy), table in CORRECT.items():
        for corruption, per_seed in table.items():
            for seed, correct in enumerate(per_seed):
                name = f"c={corruption}__a={adapter}__p={policy}__s={seed}__sev={severity}"
                write_run(
                    root / name,
                    seed=seed,
                    adapter=adapter,
                    policy=policy,
                    domains={corruption: (correct, UPLOADED[(adapter, policy)])},
                    severity=severity,
                    params={"stream.corruptions": [corruption]},
                )
    return root


def continual_runs(root: Path) -> Path:
    """One run per (method, seed) whose stream holds the three corruptions (standard order
    deliberately broken: fog first)."""
    for (adapter, policy), table in CORRECT.items():
        for seed in range(3):
            domains = {
                c: (table[c][seed], UPLOADED[(adapter, policy)])
                for c in ("fog", "gaussian_noise", "jpeg_compression")
            }
            write_run(
                root / f"{adapter}-{policy}-{seed}",
                seed=seed,
                adapter=adapter,
                policy=policy,
                domains=domains,
            )
    return root


def hand_interval(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, T_975_2DOF * sd / math.sqrt(len(values))


# --------------------------------------------------------------------------------------------------
# Reset and continual


def test_reset_runs_make_one_row_per_method_with_hand_computed_errors(tmp_path):
    per_seed = tta.seed_table([reset_sweep(tmp_path / "sweep")])
    assert per_seed.attrs["protocol"] == "reset"
    assert per_seed.attrs["domains"] == ["gaussian_noise", "fog", "jpeg_compression"]
    assert per_seed["method"].tolist() == ["Source"] * 3 + ["CEMA"] * 3
    assert per_seed["seed"].tolist() == [0, 1, 2, 0, 1, 2]
    assert (per_seed["runs"] == 3).all() and (per_seed["severity"] == 5).all()
    cema = per_seed[per_seed["method"] == "CEMA"].set_index("seed")
    assert cema.loc[1, "gaussian_noise"] == pytest.approx(23.0)
    assert cema.loc[2, "fog"] == pytest.approx(12.0)
    assert cema.loc[0, "mean_error"] == pytest.approx((25 + 15 + 20) / 3)
    # 20 of 100 samples per corruption uploaded; bytes per device over the three runs
    assert cema.loc[0, "upload_pct"] == pytest.approx(20.0)
    assert cema.loc[0, "upload_bytes"] == pytest.approx(3 * (HEADER + SAMPLE_BYTES * 10))
    assert cema.loc[0, "download_bytes"] == pytest.approx(3 * DOWNLOAD_BYTES)
    source = per_seed[per_seed["method"] == "Source"]
    assert (source["upload_pct"] == 0).all() and (source["upload_bytes"] == 0).all()


def test_table_cells_are_mean_and_t_interval_over_three_seeds(tmp_path):
    per_seed = tta.seed_table([reset_sweep(tmp_path / "sweep")])
    table = tta.tta_table(per_seed, decimals=2)
    assert list(table.columns) == [
        "Method",
        "Sev.",
        "Seeds",
        "Gauss.",
        "Fog",
        "JPEG",
        "Mean err. %",
        "Upload %",
        "Up MB/dev",
        "Down MB/dev",
    ]
    source = table[table["Method"] == "Source"].iloc[0]
    mean, half = hand_interval([60.0, 62.0, 67.0])  # gaussian_noise errors of Source
    assert source["Gauss."] == f"{mean:.2f} ± {half:.2f}" == "63.00 ± 8.96"
    seed_means = [(60 + 30 + 40) / 3, (62 + 29 + 40) / 3, (67 + 28 + 34) / 3]
    mean, half = hand_interval(seed_means)
    assert source["Mean err. %"] == f"{mean:.2f} ± {half:.2f}"
    assert source["Seeds"] == "3" and source["Sev."] == "5"
    cema = table[table["Method"] == "CEMA"].iloc[0]
    assert cema["Upload %"] == "20.00 ± 0.00"
    assert cema["Up MB/dev"] == "0.0302 ± 0.0000"  # 3 x 10,064 B
    assert cema["Down MB/dev"] == "0.0150 ± 0.0000"
    assert source["Up MB/dev"] == "0 ± 0"
    narrow = tta.tta_table(per_seed, decimals=2, ci="summary").iloc[0]
    assert narrow["Gauss."] == "63.00" and narrow["Mean err. %"] == source["Mean err. %"]
    assert "Corruption cells: mean over seeds" in tta.caption(tta.tta_table(per_seed, ci="summary"))


def test_continual_runs_give_the_same_cells_from_domains_inside_each_run(tmp_path):
    reset = tta.seed_table([reset_sweep(tmp_path / "reset")])
    continual = tta.seed_table([continual_runs(tmp_path / "continual")])
    assert continual.attrs["protocol"] == "continual"
    assert continual.attrs["domains"] == reset.attrs["domains"]  # standard order, not stream order
    columns = ["method", "seed", "gaussian_noise", "fog", "jpeg_compression", "mean_error"]
    columns += ["upload_pct", "upload_bytes", "download_bytes"]
    assert continual[columns].equals(reset[columns])
    assert (continual["runs"] == 1).all()


def test_per_domain_errors_from_events_equal_those_of_the_summary(tmp_path):
    run = continual_runs(tmp_path / "c") / "cema-cema-1"
    assert tta.domain_results_from_events(run) == tta.domain_results(run)
    summary = json.loads((run / "summary.json").read_text())
    del summary["per_domain"]
    (run / "summary.json").write_text(json.dumps(summary))
    per_seed = tta.seed_table([run])
    assert per_seed.loc[0, "fog"] == pytest.approx(16.0)


def test_severities_are_separate_rows_never_pooled(tmp_path):
    per_seed = tta.seed_table([reset_sweep(tmp_path / "s5", 5), reset_sweep(tmp_path / "s3", 3)])
    table = tta.tta_table(per_seed)
    assert table[["Method", "Sev."]].values.tolist() == [
        ["Source", "5"],
        ["CEMA", "5"],
        ["Source", "3"],
        ["CEMA", "3"],
    ]
    assert (table["Seeds"] == "3").all()


def test_bytes_for_the_whole_fleet_when_asked(tmp_path):
    per_seed = tta.seed_table([reset_sweep(tmp_path / "sweep")], bytes_per="total")
    cema = per_seed[per_seed["method"] == "CEMA"].iloc[0]
    assert cema["upload_bytes"] == pytest.approx(DEVICES * 3 * (HEADER + SAMPLE_BYTES * 10))
    assert "Up MB" in tta.tta_table(per_seed).columns


def test_labels_rename_methods_and_any_key_can_group(tmp_path):
    sweep = reset_sweep(tmp_path / "sweep")
    per_seed = tta.seed_table([sweep], labels={"cema/cema": "CEMA (ours)", "Source": "Src"})
    assert per_seed["method"].unique().tolist() == ["Src", "CEMA (ours)"]
    by_policy = tta.seed_table([sweep], by=["policy.name"])
    assert sorted(by_policy["policy.name"].unique()) == ["cema", "none"]


# --------------------------------------------------------------------------------------------------
# Output files


def test_markdown_and_latex_files_are_written_with_caption_and_booktabs(tmp_path):
    table = tta.tta_table(tta.seed_table([reset_sweep(tmp_path / "sweep")]))
    md, tex = tta.write_table(table, tmp_path / "out" / "cifar10c")
    assert (md.name, tex.name) == ("cifar10c.md", "cifar10c.tex")
    text = md.read_text()
    assert "reset protocol" in text.splitlines()[0]
    assert "| Method | Sev. | Seeds | Gauss. | Fog | JPEG | Mean err. % |" in text
    assert "| Source | 5 | 3 | 63.0 ± 9.0 |" in text
    latex = tex.read_text()
    for piece in (r"\toprule", r"\midrule", r"\bottomrule", r"63.0 $\pm$ 9.0", r"Mean err. \%"):
        assert piece in latex
    assert sorted(p.name for p in md.parent.iterdir()) == ["cifar10c.md", "cifar10c.tex"]


# --------------------------------------------------------------------------------------------------
# Errors


def test_a_missing_corruption_run_is_an_error_naming_it(tmp_path):
    sweep = reset_sweep(tmp_path / "sweep")
    victim = next(sweep.glob("c=fog__a=cema__p=cema__s=1*"))
    for child in victim.iterdir():
        child.unlink()
    victim.rmdir()
    with pytest.raises(tta.TableError, match="method=CEMA, severity=5, seed=1 lacks fog"):
        tta.seed_table([sweep])
    per_seed = tta.seed_table([sweep], allow_missing=True)
    cema = per_seed[per_seed["method"] == "CEMA"].set_index("seed")
    assert np.isnan(cema.loc[1, "fog"]) and np.isnan(cema.loc[1, "mean_error"])
    assert np.isnan(cema.loc[1, "upload_bytes"]) and cema.loc[1, "gaussian_noise"] == 23.0
    row = tta.tta_table(per_seed).set_index("Method").loc["CEMA"]
    # fog errors of seeds 0 and 2: 15 and 12; t(97.5%, 1 dof) = 12.7062 -> 12.7062 * 1.5 = 19.06
    assert row["Fog"] == "13.5 ± 19.1 (n=2)"
    assert row["Seeds"] == "3" and row["Gauss."].count("(n=") == 0


def test_runs_that_differ_in_an_unlisted_key_are_an_error_until_it_is_a_row_key(tmp_path):
    root = tmp_path / "runs"
    for mbps in (16.0, 4.0, 1.0):  # in numeric order in the table, not as text ("16" < "4")
        write_run(
            root / f"bw{mbps}",
            seed=0,
            adapter="cema",
            policy="cema",
            domains={"fog": (80, 20)},
            config={"network.uplink_mbps": mbps},
            params={"network.uplink_mbps": mbps},
        )
    with pytest.raises(tta.TableError, match="both give 'fog'.*network.uplink_mbps"):
        tta.seed_table([root])
    per_seed = tta.seed_table([root], by=["method", "network.uplink_mbps"])
    assert per_seed["network.uplink_mbps"].tolist() == ["1.0", "4.0", "16.0"]


def test_variants_in_separate_folders_get_rows_by_source(tmp_path):
    # the same method run twice with different thresholds, into two sweep folders
    for folder, correct in (("strict", 80), ("loose", 70)):
        for seed in range(2):
            write_run(
                tmp_path / folder / f"s{seed}",
                seed=seed,
                adapter="cema",
                policy="cema",
                domains={"fog": (correct + seed, 20)},
            )
    folders = [tmp_path / "strict", tmp_path / "loose"]
    with pytest.raises(tta.TableError, match="both give 'fog'"):
        tta.seed_table(folders)
    per_seed = tta.seed_table(folders, by=["method", "source"], labels={"loose": "e0 0.5"})
    assert per_seed["source"].tolist() == ["strict", "strict", "e0 0.5", "e0 0.5"]
    assert per_seed["fog"].tolist() == pytest.approx([20.0, 19.0, 30.0, 29.0])
    result = CliRunner().invoke(
        app,
        [
            "table",
            *map(str, folders),
            "--by",
            "method",
            "--by",
            "source",
            "--out",
            str(tmp_path / "t"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| Method | Runs |" in result.output and "| CEMA | strict |" in result.output


def test_mixed_protocols_and_wrong_protocol_are_errors(tmp_path):
    reset = reset_sweep(tmp_path / "reset")
    continual = continual_runs(tmp_path / "continual")
    with pytest.raises(tta.TableError, match="runs of both protocols"):
        tta.seed_table([reset, continual])
    with pytest.raises(tta.TableError, match="protocol reset needs one domain per run"):
        tta.seed_table([continual], protocol="reset")
    with pytest.raises(tta.TableError, match="protocol continual needs several domains"):
        tta.seed_table([reset], protocol="continual")


def test_cli_table_prints_markdown_writes_files_and_fails_clearly(tmp_path):
    sweep = reset_sweep(tmp_path / "sweep")
    out = tmp_path / "tables" / "t"
    result = runner.invoke(
        app, ["table", str(sweep), "--out", str(out), "--label", "cema/cema=CEMA (ours)"]
    )
    assert result.exit_code == 0, result.output
    assert "| CEMA (ours) | 5 | 3 |" in result.output
    assert out.with_suffix(".md").is_file() and out.with_suffix(".tex").is_file()
    missing = runner.invoke(app, ["table", str(tmp_path / "nowhere"), "--out", str(out)])
    assert missing.exit_code == 2 and "no such folder" in missing.output
    mixed = runner.invoke(app, ["table", str(sweep), str(continual_runs(tmp_path / "c"))])
    assert mixed.exit_code == 2 and "runs of both protocols" in mixed.output
    bad = runner.invoke(app, ["table", str(sweep), "--label", "nonsense"])
    assert bad.exit_code == 2 and "expected KEY=NAME" in bad.output
    for child in (victim := next(sweep.glob("c=fog__a=none*s=2*"))).iterdir():
        child.unlink()
    victim.rmdir()
    partial = runner.invoke(app, ["table", str(sweep), "--out", str(out)])
    assert partial.exit_code == 2 and "seed=2 lacks fog" in partial.output
    partial = runner.invoke(app, ["table", str(sweep), "--out", str(out), "--allow-missing"])
    assert partial.exit_code == 0 and "(n=2)" in out.with_suffix(".md").read_text()


# --------------------------------------------------------------------------------------------------
# Random upload at another run's budget


def test_matched_p_for_samples_is_the_uploaded_share_per_corruption_and_pooled(tmp_path):
    root = tmp_path / "cema"
    for corruption, uploaded in (("fog", 20), ("snow", 40)):
        for seed in range(2):
            write_run(
                root / f"{corruption}-{seed}",
                seed=seed,
                adapter="cema",
                policy="cema",
                domains={corruption: (80, uploaded)},
            )
    write_run(root / "source", seed=0, adapter="none", policy="none", domains={"fog": (50, 0)})
    with pytest.raises(tta.TableError, match="no runs of method 'EATA'"):
        tta.matched_random_p([root], method="EATA")
    found = tta.matched_random_p([root], match="samples", method="cema/cema")
    assert found == tta.matched_random_p([root], match="samples", method="CEMA")
    assert found.p == pytest.approx(60 / 200)
    assert found.per_domain == {"snow": pytest.approx(0.4), "fog": pytest.approx(0.2)}
    assert found.zip_args()[-3:] == [
        "stream.corruptions=[[snow],[fog]]",
        "--zip",
        "policy.random.p=0.4,0.2",
    ]


def test_matched_p_for_bytes_pays_the_headers_of_every_batch_random_touches(tmp_path):
    # CEMA sent 20 samples in 2 messages; random spreads picks over all 10 batches of 10, so with
    # 10 kB headers it must pick fewer samples to spend the same bytes.
    run = write_run(
        tmp_path / "cema",
        seed=0,
        adapter="cema",
        policy="cema",
        domains={"fog": (80, 20)},
        batch_size=10,
        header=10_000,
    )
    found = tta.matched_random_p([run], match="bytes")
    sent = 2 * (10_000 + SAMPLE_BYTES * 10)
    assert found.sent_bytes == sent
    p = found.p
    spent = 10_000 * 10 * (1 - (1 - p) ** 10) + SAMPLE_BYTES * p * 100
    assert spent == pytest.approx(sent, rel=1e-9)
    assert 0 < p < 0.2
    assert found.set_args() == ["--set", "policy.name=random", "--set", f"policy.random.p={p:.6g}"]


def test_cli_match_budget_prints_p_and_sweep_arguments(tmp_path):
    root = tmp_path / "cema"
    write_run(root / "a", seed=0, adapter="cema", policy="cema", domains={"fog": (80, 30)})
    result = runner.invoke(app, ["match-budget", str(root), "--match", "samples", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["p"] == pytest.approx(0.3) and record["per_domain"] == {"fog": 0.3}
    assert "policy.random.p=0.3" in record["set_args"]
    text = runner.invoke(app, ["match-budget", str(root)])
    assert text.exit_code == 0 and "--set policy.name=random" in text.output


# --------------------------------------------------------------------------------------------------
# Real files


def test_a_real_engine_run_is_read_and_random_at_its_budget_spends_about_as_much(tmp_path):
    from simulator.config import scenario_from_dict
    from simulator.engine import run_scenario
    from simulator.runs import write_run as write_engine_run
    from tests.conftest import tiny_scenario_dict

    def run(folder: Path, **changes) -> Path:
        data = tiny_scenario_dict(**changes)
        data["stream"].update(samples_per_device=64, segment_samples=32, batch_size=16)
        write_engine_run(run_scenario(scenario_from_dict(data)), folder)
        return folder

    cema = run(tmp_path / "cema")
    events = __import__("pandas").read_parquet(cema / "events.parquet")
    samples = events[events["kind"] == "sample"]
    per_seed = tta.seed_table([cema])
    assert per_seed.attrs["protocol"] == "continual"
    assert per_seed.attrs["domains"] == ["gaussian_noise", "contrast"]
    for corruption in ("gaussian_noise", "contrast"):
        rows = samples[samples["domain"] == f"{corruption}/5"]
        error = 100 * (1 - rows["correct"].astype(bool).mean())
        assert per_seed.loc[0, corruption] == pytest.approx(error)
    summary = json.loads((cema / "summary.json").read_text())
    assert per_seed.loc[0, "upload_bytes"] == pytest.approx(summary["upload_bytes"] / 2)
    assert per_seed.loc[0, "method"] == "CEMA"

    found = tta.matched_random_p([cema])
    # the source adapter (no cloud work) keeps the run cheap; upload bytes depend on the policy only
    random = run(
        tmp_path / "random",
        policy={"name": "random", "random": {"p": found.p}},
        cloud__adapter="none",
    )
    spent = json.loads((random / "summary.json").read_text())
    assert spent["upload_bytes"] == pytest.approx(found.sent_bytes, rel=0.3)
    both = tta.tta_table(tta.seed_table([cema, random]))
    assert both["Method"].tolist() == ["CEMA", "none/random"]  # known methods first


def test_clean_is_a_column_first_but_not_part_of_the_mean(tmp_path):
    write_run(
        tmp_path / "runs" / "cema",
        seed=0,
        adapter="cema",
        policy="cema",
        domains={"fog": (80, 20), "clean": (90, 0), "snow": (70, 20)},
    )
    per_seed = tta.seed_table([tmp_path / "runs"])
    assert per_seed.attrs["domains"] == ["clean", "snow", "fog"]
    assert per_seed.loc[0, "clean"] == pytest.approx(10.0)
    assert per_seed.loc[0, "mean_error"] == pytest.approx(25.0)  # (20 + 30) / 2
    assert per_seed.loc[0, "severity"] == 5
    assert per_seed.loc[0, "upload_pct"] == pytest.approx(40 / 300 * 100)
    table = tta.tta_table(per_seed)
    assert list(table.columns[3:6]) == ["Clean", "Snow", "Fog"]
    assert table.loc[0, "Seeds"] == "1" and table.loc[0, "Mean err. %"] == "25.0"


def test_folders_of_one_name_under_different_parents_are_named_apart_by_path(tmp_path):
    # two threshold variants, each swept into a folder called "runs" under its own parent
    for parent, errors in (("strict", {"fog": (80, 0)}), ("loose", {"fog": (85, 0)})):
        write_run(tmp_path / parent / "runs", seed=0, adapter="cema", policy="cema", domains=errors)
    folders = [tmp_path / "strict" / "runs", tmp_path / "loose" / "runs"]
    with pytest.raises(tta.TableError, match="two folders named 'runs'.*--label PATH=NAME"):
        tta.seed_table(folders, by=["method", "source"])
    labels = {str(folders[0]): "strict", str(folders[1]): "loose"}
    per_seed = tta.seed_table(folders, by=["method", "source"], labels=labels)
    assert per_seed["source"].tolist() == ["strict", "loose"]
    assert per_seed["mean_error"].tolist() == pytest.approx([20.0, 15.0])


def test_folders_merged_under_one_label_keep_the_differ_hint_and_method_labels_stay_methods(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for name, mbps in (("cema/cema", 1.0), ("loose", 4.0)):  # a folder named like a method key
        write_run(
            Path(name) / "r",
            seed=0,
            adapter="cema",
            policy="cema",
            domains={"fog": (80, 0)},
            config={"network.uplink_mbps": mbps},
        )
    folders = ["cema/cema", "loose"]
    # merged on purpose under one label, the runs differ in a key: that is what the error says
    with pytest.raises(tta.TableError, match="differ in network.uplink_mbps"):
        tta.seed_table(folders, by=["method", "source"], labels={"cema": "X", "loose": "X"})
    # a method label that happens to read as a given folder's path renames the method only
    per_seed = tta.seed_table(folders, by=["method", "source"], labels={"cema/cema": "Ours"})
    assert per_seed[["method", "source"]].values.tolist() == [["Ours", "cema"], ["Ours", "loose"]]


def test_a_numeric_row_key_with_a_missing_value_still_sorts_as_numbers(tmp_path):
    root = tmp_path / "runs"
    for value in ("16", "NaN", "4"):
        write_run(
            root / f"v{value}",
            seed=0,
            adapter="cema",
            policy="cema",
            domains={"fog": (80, 0)},
            params={"policy.cema.e0": value},
        )
    per_seed = tta.seed_table([root], by=["method", "policy.cema.e0"])
    assert per_seed["policy.cema.e0"].tolist() == ["4", "16", "NaN"]
