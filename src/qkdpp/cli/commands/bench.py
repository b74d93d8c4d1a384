"""``qkdpp bench``: run the benchmark suite and print one table of every stage's throughput.

Each benchmark group holds qkdpp's kernel and a baseline (the NumPy reference, scipy, or a public
library) measured in the same run; the table shows both rates and their ratio, and the
reconciliation efficiency ``f`` where a benchmark reports it (``extra_info["f"]``). The first
line names the host: its CPU, the vector extensions the compiled kernels choose from, and the
paths they take there (numbers from hosts with different extensions do not compare: the
AVX-512 and AVX2 hosts of the development VM differed by 2–2.4x, docs/DEVELOPING.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from qkdpp.errors import ConfigError

BASELINE_WORDS = ("reference", "baseline", "numpy", "scipy", "ldpc_pkg", "naive")
QUICK_FILES = (
    "test_bench_bits.py",
    "test_bench_pa.py",
    "test_bench_sifting.py",
    "test_bench_cascade.py",
    "test_bench_ldpc.py",
    "test_bench_ptu.py",
    "test_bench_e2e.py",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run the benchmark suite and print throughput, baseline and ratio per stage",
        description="Runs benchmarks/ with pytest-benchmark (a quick subset by default) and prints "
        "one table: stage, size, rate, baseline rate, ratio, and f for reconciliation.",
    )
    p.add_argument("--full", action="store_true", help="run every benchmark, more rounds")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument(
        "--path",
        type=Path,
        default=None,
        help="benchmarks folder (default: ./benchmarks or the source checkout's)",
    )
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression to select")
    p.set_defaults(func=run)


def _find_benchmarks(path: Path | None) -> Path:
    candidates = (
        [path]
        if path
        else [
            Path.cwd() / "benchmarks",
            Path(__file__).resolve().parents[4] / "benchmarks",
        ]
    )
    for c in candidates:
        if c is not None and c.is_dir() and any(c.glob("test_bench_*.py")):
            return c
    raise ConfigError(
        "no benchmarks/ folder found: run `qkdpp bench` from a qkdpp source checkout or pass "
        "--path to its benchmarks folder"
    )


def run(args: argparse.Namespace) -> int:
    folder = _find_benchmarks(args.path)
    files = sorted(folder.glob("test_bench_*.py"))
    if not args.full:
        files = [f for f in files if f.name in QUICK_FILES] or files
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            *map(str, files),
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-enable",
            "--benchmark-only",
            f"--benchmark-json={out}",
            "-m",
            "not hardware",
            "-o",
            "addopts=",
        ]
        if not args.full:
            cmd += [
                "--benchmark-max-time=0.2",
                "--benchmark-min-rounds=1",
                "-k",
                args.keyword or "not full",
            ]
        elif args.keyword:
            cmd += ["-k", args.keyword]
        proc = subprocess.run(
            cmd, cwd=folder.parent, capture_output=True, text=True, env={**os.environ}
        )
        if not out.exists():
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise ConfigError(f"benchmark run failed (pytest exit {proc.returncode})")
        data = json.loads(out.read_text())
        rows = summarise(data)
        host = host_summary(data)
    if args.json:
        print(json.dumps({"host": host, "benchmarks": rows}, indent=2))
    else:
        print(format_host(host))
        print(format_table(rows))
    if proc.returncode not in (0, 5):
        sys.stderr.write(proc.stdout[-3000:])
        return 1
    return 0


SIMD_FLAGS = ("avx512f", "avx2", "fma", "pclmulqdq", "vpclmulqdq")


def host_summary(data: dict[str, Any]) -> dict[str, Any]:
    """The host of a benchmark run (from pytest-benchmark's ``machine_info``): CPU name and
    count, which of :data:`SIMD_FLAGS` it has, and the paths the C kernels take on it (this
    process runs on the same host)."""
    cpu = data.get("machine_info", {}).get("cpu", {})
    flags = set(cpu.get("flags", []))
    return {
        "cpu": cpu.get("brand_raw") or data.get("machine_info", {}).get("processor", "?"),
        "cpus": cpu.get("count"),
        "simd": {f: f in flags for f in SIMD_FLAGS},
        "kernels": kernel_paths(),
    }


def kernel_paths() -> dict[str, str]:
    """The vector path each C kernel takes in this process (``"not built"`` without it), and
    whether the compiled sifting kernels compact by BMI2 PEXT (``"pext"``) or one by one
    (``"scalar"``)."""
    from qkdpp.kernels import sifting, toeplitz
    from qkdpp.kernels.ldpc import simd

    out = {"toeplitz": "not built"}
    if "compiled" in toeplitz.available_backends():
        cy = toeplitz.impl("compiled")
        out["toeplitz"] = "avx512" if cy.HAVE_AVX512 else "avx2" if cy.HAVE_AVX2 else "pclmul"

    level = simd.simd_level()
    out["ldpc"] = {512: "avx512", 256: "avx2", 0: "portable"}.get(level, "not built")
    out["sifting"] = (
        "reference" if sifting.BACKEND != "compiled" else "pext" if sifting.FAST_PEXT else "scalar"
    )
    return out


def format_host(host: dict[str, Any]) -> str:
    """One line: CPU, its vector extensions, the kernels' paths."""
    have = " ".join(f for f, on in host["simd"].items() if on) or "none of " + " ".join(SIMD_FLAGS)
    paths = ", ".join(f"{k} {v}" for k, v in host["kernels"].items())
    return f"host: {host['cpu']} ({host['cpus']} CPUs); {have}; kernels: {paths}"


def _rate(b: dict[str, Any]) -> tuple[float | None, str]:
    info = b.get("extra_info", {})
    for key, unit in (("bits_per_s", "bit/s"), ("events_per_s", "events/s")):
        if key in info:
            return float(info[key]), unit
    mean = b["stats"]["mean"]
    n = info.get("n_bits") or info.get("n_events")
    if n and mean:
        return float(n) / mean, "bit/s" if "n_bits" in info else "events/s"
    return None, ""


def _is_baseline(b: dict[str, Any]) -> bool:
    name = b["name"].lower()
    return any(w in name for w in BASELINE_WORDS)


def summarise(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per non-baseline benchmark with its group's baseline and the ratio."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for b in data.get("benchmarks", []):
        groups.setdefault(b.get("group") or b["name"], []).append(b)
    rows = []
    for group, items in sorted(groups.items()):
        base = next((b for b in items if _is_baseline(b)), None)
        for b in items:
            if b is base and len(items) > 1:
                continue
            rate, unit = _rate(b)
            brate, bunit = _rate(base) if base is not None and base is not b else (None, "")
            if base is None or base is b:
                ratio = None
            elif rate and brate and unit == bunit:
                ratio = rate / brate  # (a baseline may run a smaller size: compare rates)
            else:
                ratio = base["stats"]["mean"] / b["stats"]["mean"]
            rows.append(
                {
                    "group": group,
                    "name": b["name"],
                    "mean_s": b["stats"]["mean"],
                    "rate": rate,
                    "unit": unit,
                    "baseline": base["name"] if base is not None and base is not b else None,
                    "baseline_rate": brate,
                    "ratio": ratio,
                    "f": b.get("extra_info", {}).get("f"),
                }
            )
    return rows


def _fmt_rate(rate: float | None, unit: str) -> str:
    if rate is None:
        return "-"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= scale:
            return f"{rate / scale:.1f} {prefix}{unit}"
    return f"{rate:.1f} {unit}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of :func:`summarise` rows."""
    head = f"{'benchmark':58s} {'rate':>16s} {'baseline':>16s} {'ratio':>8s} {'f':>6s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r['ratio']:.1f}x" if r["ratio"] else "-"
        f = f"{r['f']:.3f}" if isinstance(r["f"], (int, float)) else "-"
        lines.append(
            f"{r['name'][:58]:58s} {_fmt_rate(r['rate'], r['unit']):>16s} "
            f"{_fmt_rate(r['baseline_rate'], r['unit']):>16s} {ratio:>8s} {f:>6s}"
        )
    return "\n".join(lines)
