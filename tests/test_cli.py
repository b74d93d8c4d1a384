"""CLI: ``--version`` and ``--help`` work for the program and every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qkdpp import __version__
from qkdpp.cli import build_parser, main


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[union-attr]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"qkdpp {__version__}"


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert command in capsys.readouterr().out


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "qkdpp", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "COMMAND" in out.stdout


def test_unknown_command_fails() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_config_check(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.toml"
    good.write_text('[session]\nlanes = 2\n[reconcile]\nmethod = "ldpc"\n')
    assert main(["config", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "reconcile → verify" in out and "lanes 2" in out
    for text, why in (
        ("[verify]\neps_cor = -1\n", "eps_cor must be in"),
        ('[privacy_amplification]\ncolour = "blue"\n', "colour"),
        ("[sesion]\n", "unknown section"),
        ("[session]\nlanes = 0\n", "lanes must be a positive integer"),
        ("[session]\ntail_fraction = 1.5\n", "tail_fraction must be a number in [0, 1]"),
        ('[session]\ntail_fraction = "all"\n', "tail_fraction must be a number in [0, 1]"),
    ):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        assert main(["config", "check", str(bad)]) == 1
        assert why in capsys.readouterr().err


def test_bench_host_line_names_cpu_extensions_and_kernel_paths() -> None:
    """`qkdpp bench` heads its table with the host: numbers from CPUs with different vector
    extensions do not compare (the AVX-512 and AVX2 development hosts differed 2-2.4x)."""
    from qkdpp.cli.commands import bench
    from qkdpp.kernels import toeplitz
    from qkdpp.kernels.ldpc import simd

    data = {
        "machine_info": {
            "cpu": {"brand_raw": "Test CPU", "count": 2, "flags": ["avx2", "fma", "vpclmulqdq"]}
        }
    }
    host = bench.host_summary(data)
    assert host["cpu"] == "Test CPU" and host["cpus"] == 2
    assert host["simd"] == {
        "avx512f": False,
        "avx2": True,
        "fma": True,
        "pclmulqdq": False,
        "vpclmulqdq": True,
    }
    paths = host["kernels"]
    if "compiled" in toeplitz.available_backends():
        cy = toeplitz.impl("compiled")
        want = "avx512" if cy.HAVE_AVX512 else "avx2" if cy.HAVE_AVX2 else "pclmul"
        assert paths["toeplitz"] == want
    assert paths["ldpc"] == {512: "avx512", 256: "avx2", 0: "portable"}.get(
        simd.simd_level(), "not built"
    )
    from qkdpp.kernels import sifting

    if sifting.BACKEND == "compiled":
        assert paths["sifting"] == ("pext" if sifting.FAST_PEXT else "scalar")
    line = bench.format_host(host)
    assert line.startswith("host: Test CPU (2 CPUs); avx2 fma vpclmulqdq; kernels: ")
    assert f"toeplitz {paths['toeplitz']}" in line and f"ldpc {paths['ldpc']}" in line
    assert f"sifting {paths['sifting']}" in line


def test_bench_ratio_compares_rates_when_the_baseline_runs_another_size() -> None:
    from qkdpp.cli.commands.bench import summarise

    def bench(name: str, mean: float, n_bits: int) -> dict:
        return {
            "name": name,
            "group": "g",
            "stats": {"mean": mean},
            "extra_info": {"bits_per_s": n_bits / mean},
        }

    # the compiled kernel on 1e6 bits in 0.05 s, the reference on 1e4 bits in 0.1 s
    rows = summarise(
        {"benchmarks": [bench("k[compiled]", 0.05, 10**6), bench("k[reference]", 0.1, 10**4)]}
    )
    (row,) = rows
    assert row["baseline"] == "k[reference]"
    assert row["ratio"] == pytest.approx((10**6 / 0.05) / (10**4 / 0.1))  # 200x, not 2x


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("nan", "is not a whole number"),
        ("inf", "is not a whole number"),
        ("4.5", "is not a whole number"),
        ("0", "is below 1"),
        ("-3", "is below 1"),
        ("lots", "is not a number"),
    ],
)
@pytest.mark.parametrize("command", ["demo", "simulate"])
def test_slot_counts_are_checked(
    command: str, value: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before 2026-11-28 ``qkdpp demo --slots nan`` (or inf) ended in a traceback and 4.5 ran
    4 slots."""
    with pytest.raises(SystemExit) as exc:
        main([command, f"--slots={value}"])
    assert exc.value.code == 2
    assert f"argument --slots: {value!r} {problem}" in capsys.readouterr().err


def test_float_notation_slot_counts_and_seeds_are_whole_numbers() -> None:
    for command in ("demo", "simulate"):
        args = build_parser().parse_args([command, "--slots", "4e8", "--seed", "2e0"])
        assert (args.slots, args.seed) == (400_000_000, 2)
        assert type(args.slots) is int
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "--seed", "-1"])


def test_simulating_more_than_memory_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """1e30 slots: a ConfigError naming the memory needed (was numpy's "Maximum allowed
    dimension exceeded" traceback), before any compile helper starts."""
    assert main(["demo", "--slots", "1e30"]) == 1
    err = capsys.readouterr().err
    assert "GiB for Alice's record alone" in err and "simulate fewer slots" in err


def test_environment_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output folder that cannot be created: one line naming it (was a FileNotFoundError
    traceback); a folder given as a key store: named as such."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "sim"  # below a regular file: cannot be created
    assert main(["simulate", "--out", str(out), "--slots", "1e5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qkdpp simulate: error: ") and str(blocker) in err
    assert "Traceback" not in err
    assert main(["keystore", "stats", str(tmp_path)]) == 1
    assert "is not a file" in capsys.readouterr().err


@pytest.mark.parametrize("distance", ["-5", "nan", "inf"])
def test_keyrate_refuses_impossible_distances(
    distance: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before 2026-11-28 a negative or NaN distance printed a row of nonsense."""
    assert main(["keyrate", "--distances", distance, "--block-sizes", "1e6"]) == 1
    assert "distances must be finite and >= 0 km" in capsys.readouterr().err


def test_process_names_an_address_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qkdpp.engine.inputs import save_alice_record
    from qkdpp.io.simulator import LinkParams, alice_record

    rec = tmp_path / "alice.npz"
    save_alice_record(rec, alice_record(LinkParams(), 6400, 1))
    peer = "tcp://no-such-host.invalid:7000"
    cfg = tmp_path / "link.toml"
    cfg.write_text(_INTENSITIES)
    argv = ["process", str(rec), "--role", "alice", "--peer", peer, "--config", str(cfg)]
    assert main(argv) == 1
    assert f"cannot listen on {peer}: " in capsys.readouterr().err


_INTENSITIES = """
[timing]
mu = [0.5, 0.1, 2e-4]
[key_length]
mu = [0.5, 0.1, 2e-4]
p_mu = [0.7, 0.2, 0.1]
"""


def test_unknown_source_intensities_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Alice's record carries no intensities: without them in the configuration `qkdpp
    process` refuses to run (before 2026-11-28 the timing pilot took μ 0.5 / 0.1 and the key
    length μ 0.6 / 0.2, the stages' own defaults, for a source nobody had described)."""
    from qkdpp.engine.inputs import save_alice_record
    from qkdpp.io.simulator import LinkParams, alice_record

    rec = tmp_path / "alice.npz"
    save_alice_record(rec, alice_record(LinkParams(), 6400, 1))
    argv = ["process", str(rec), "--role", "alice", "--peer", "tcp://127.0.0.1:7000"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "the source's intensities are unknown" in err
    assert "[key_length] mu, [key_length] p_mu, [timing] mu" in err
    cfg = tmp_path / "partial.toml"
    cfg.write_text("[key_length]\nmu = [0.5, 0.1, 2e-4]\n")
    assert main([*argv, "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "gives no [key_length] p_mu, [timing] mu;" in err


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["node", "--role", "alice", "--speed", "nan"], "argument --speed: 'nan' is not a finite"),
        (["node", "--role", "alice", "--speed", "-1"], "argument --speed: '-1' is not a finite"),
        (["node", "--role", "alice", "--max-chunks", "-1"], "argument --max-chunks: '-1' is below"),
        (["inspect", "x.ptu", "--chunk-events", "0"], "argument --chunk-events: '0' is below 1"),
    ],
)
def test_counts_and_paces_are_checked(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before 2026-11-28 a negative or NaN --speed ran a node that never paced, and
    --chunk-events 0 was a ValueError traceback."""
    with pytest.raises(SystemExit):
        main(argv)
    assert problem in capsys.readouterr().err


@pytest.mark.parametrize("command", ["config check", "keyrate --profile", "kme serve"])
def test_binary_file_given_as_text_is_a_clear_error(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A capture passed where a configuration belongs (was a UnicodeDecodeError traceback)."""
    p = tmp_path / "link.toml"
    p.write_bytes(b"QKDP\x00\x01\xf5\xff" * 8)
    assert main([*command.split(), str(p)]) == 1
    err = capsys.readouterr().err
    assert str(p) in err and "utf-8" in err.lower()


def test_simulate_defaults_are_the_demo_link() -> None:
    """`qkdpp simulate` with no options simulates the demo's link (intensities, their
    probabilities, basis choice) long enough for key blocks: before 2026-11-28 its own
    defaults (μ 0.5 / 0.1, p 0.7 / 0.2 / 0.1, p_z 0.9, 1e7 slots) gave no key at 1e6-bit
    blocks: 94 000 sifted bits at 1e7 slots, and at 2e8 slots both blocks failed with
    s1_nonpositive."""
    from qkdpp.engine.demo import DEMO_MU, DEMO_P_MU, DEMO_P_Z

    args = build_parser().parse_args(["simulate"])
    assert list(args.mu) == DEMO_MU and list(args.p_mu) == DEMO_P_MU and args.p_z == DEMO_P_Z
    assert args.slots >= 150_000_000  # ≥ 1e6 sifted key bits at 25 km


def test_demo_explains_too_few_slots_for_a_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3e7 slots at 25 km give ≈ 2e5 sifted key bits, less than the shortest last block: the
    demo says so and what to do (before 2026-11-28: '0/0 blocks' and nothing else)."""
    assert main(["demo", "--slots", "3e7", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0/0 blocks" in out
    assert "sifted key bits formed no key block" in out and "simulate more (--slots)" in out
