"""The measured tables of ``docs/performance.md``, written from the bench's JSON files: ``python -m bench.report``.

Every number in those tables comes from a JSON file under ``bench/`` that a bench command wrote, together with
the machine and the date it was measured on, so a figure lives once (beside the run that made it) and the doc
cannot drift from it. The doc's prose stays hand-written; each table sits between two markers::

    <!-- bench.report: NAME -->
    ... (rewritten by this module) ...
    <!-- /bench.report: NAME -->

``python -m bench.report`` rewrites every block from the JSON files; ``--check`` only compares and exits 1
naming each stale block (a test runs it, so a JSON file and the doc change together). ``make bench`` rewrites
the blocks after it writes ``bench/latest.json``. Reading JSON only: no torch, no environments.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.goals import verdicts

BENCH = Path(__file__).resolve().parent
DOC = BENCH.parent / "docs" / "performance.md"
ISA_NAMES = {"avx512f": "AVX-512", "avx2": "AVX2", "avx": "AVX"}  # bench.common.machine()'s "isa" values


class ReportError(Exception):
    """A JSON file or a block marker the report cannot use; its message is one line naming the file."""


def _load(name: str) -> dict[str, Any]:
    path = BENCH / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ReportError(f"{path}: cannot read it as JSON ({error})") from None


def measured_on(machine: Mapping[str, Any], source: str) -> str:
    """One line: the machine, the date and the file a table's numbers come from."""
    isa = f", {ISA_NAMES.get(machine['isa'], machine['isa'])}" if machine.get("isa") else ""
    gpu = f", {machine['cuda']}" if machine.get("cuda") else ""
    date = machine.get("date", "date not recorded")
    return (
        f"*Measured on {machine['cpu']} (CPU family/model {machine['cpu_family_model']}{isa}), "
        f"{machine['cores']} cores{gpu}, torch {machine['torch']}, {date}; `bench/{source}`.*"
    )


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _goal(goals: Mapping[str, Any], name: str) -> str:
    goal = goals.get(name)
    return f"{goal['goal']}: {'met' if goal['met'] else '**not met**'}" if goal else ""


# ------------------------------------------------------------------ the blocks
def latest_table() -> str:
    """``make bench``'s headline figures (``bench/latest.json``)."""
    report = _load("latest.json")
    r, g = report["results"], report.get("goals", {})
    lines = [
        measured_on(report["machine"], "latest.json")
        + f" `{report['command']}`, {report['seconds'] / 60:.1f} min"
        + (" (QUICK: smoke numbers only)." if report.get("quick") else "."),
        "",
        _row("metric", "value", "goal"),
        _row("---", "---", "---"),
        _row(
            "`pixel_update_ms` (batch 256, defaults, MA-BN)", f"{r['pixel_update_ms']:.0f}", _goal(g, "pixel_update_ms")
        ),
        _row("reference-style update, same run, taking turns", f"{r['reference_pixel_update_ms']:.0f}", ""),
        _row(
            "ours against the reference-style update",
            f"{r['pixel_update_speedup_vs_reference']:.2f}×",
            _goal(g, "pixel_update_speedup_vs_reference"),
        ),
        _row("`pixel_fps` (whole loop after the seed frames)", f"{r['pixel_fps']:.2f}", _goal(g, "pixel_fps")),
        _row("reference-style loop, same run", f"{r['reference_pixel_fps']:.2f}", ""),
        _row(
            "our loop against the reference-style loop",
            f"{r['pixel_fps_speedup_vs_reference']:.2f}×",
            _goal(g, "pixel_fps_speedup_vs_reference"),
        ),
        _row("`state_fps` (hidden 1024, batch 256)", f"{r['state_fps']:.1f}", ""),
        _row(
            "`state_update_ms` (alone / inside the loop)",
            f"{r['state_update_ms']:.0f} / {r['state_loop_update_ms']:.0f}",
            "",
        ),
        _row("`loop_overhead_pct` (state loop)", f"{r['loop_overhead_pct']:.1f}", _goal(g, "loop_overhead_pct")),
        _row(
            "`env_step_ms` (agent step, action repeat 2) / `render_ms` (84×84, software EGL)",
            f"{r['env_step_ms']:.2f} / {r['render_ms']:.1f}",
            "",
        ),
        _row(
            "`replay_bytes_per_transition` pixels / states",
            f"{r['replay_bytes_per_transition_pixels']:,.0f} / {r['replay_bytes_per_transition_states']:.0f}",
            _goal(g, "replay_bytes_per_transition_pixels")
            + (f" (a stacked-frame store: {r['stacked_store_bytes_per_transition_pixels']:,})"),
        ),
        _row(
            "`concurrency_speedup` (2 single-thread state trials against 1, hidden 256)",
            f"{r['concurrency_speedup']:.2f}",
            _goal(g, "concurrency_speedup"),
        ),
    ]
    return "\n".join(lines)


# The timeline rows of a pack's two placements: (label, the metrics joined by " / ", decimals, unit).
WORKER_ROWS = (
    ("cycle / update (host) / waiting for env steps, ms", ("cycle_ms", "update_ms", "wait_env_steps_ms"), 1, ""),
    ("env step p50 / p99, ms", ("env_step_p50_ms", "env_step_p99_ms"), 2, ""),
    ("overlap fraction (env-step time the update hid)", ("overlap_fraction",), 2, ""),
    ("cycle time no named part accounts for", ("unaccounted_pct",), 2, "%"),
)


def workers_table() -> str:
    """A pack of 2 in worker processes against the same pack in one process (``bench/latest.json``)."""
    report = _load("latest.json")
    r = report["results"]
    lines = [
        measured_on(report["machine"], "latest.json") + f" `{report['command']}`.",
        "",
        _row(
            "pack of 2, cartpole_swingup, hidden 256", "in one process", "in worker processes", "workers / in process"
        ),
        _row("---", "---", "---", "---"),
    ]
    for obs in ("states", "pixels"):
        if f"{obs}_k2_workers_fps" not in r:
            continue
        a, b = f"{obs}_k2_in_process", f"{obs}_k2_workers"
        lines.append(
            _row(
                f"{obs}, aggregate frames/s",
                f"{r[a + '_fps']:.2f}",
                f"{r[b + '_fps']:.2f}",
                f"{r[b + '_vs_in_process']:.2f}",
            )
        )
        for label, metrics, digits, unit in WORKER_ROWS:
            lines.append(
                _row(
                    f"{obs}: {label}",
                    *(" / ".join(f"{r[f'{side}_{m}']:.{digits}f}{unit}" for m in metrics) for side in (a, b)),
                    "",
                )
            )
    if "tensor_ops_per_update_k16" in r:
        lines += [
            "",
            f"Tensor operations per packed update (ATen calls, pixels): K = 1: {r['tensor_ops_per_update_k1']:,.0f}; "
            f"K = 16: **{r['tensor_ops_per_update_k16']:,.0f}** when the members share their learning rates, against "
            f"{r['tensor_ops_per_update_k16_per_member_slices']:,.0f} with one optimizer slice per member.",
        ]
    return "\n".join(lines)


def baseline_line() -> str:
    """A pack of one against the worker at an earlier commit (``bench/baseline_*.json``)."""
    [path] = sorted(BENCH.glob("baseline_*.json"))
    report = _load(path.name)
    r = report["results"]
    goals = verdicts(r)  # the goals make bench judges the same section by (bench.goals)
    return "\n".join(
        [
            measured_on(report["machine"], path.name) + f" `{report['command']}`.",
            "",
            _row("pack of one against the worker at", "frames/s (ours)", "frames/s (then)", "ratio", "goal"),
            _row("---", "---", "---", "---", "---"),
            *(
                _row(
                    f"{r['baseline_rev']}, {obs}",
                    f"{r[f'k1_{obs}_fps']:.2f}",
                    f"{r[f'baseline_{obs}_fps']:.2f}",
                    f"{r[f'k1_{obs}_fps_vs_baseline']:.2f}×",
                    _goal(goals, f"k1_{obs}_fps_vs_baseline"),
                )
                for obs in ("states", "pixels")
            ),
        ]
    )


def gpu_table() -> str:
    """Packed pixel members on a GPU (``bench/gpu_h200.json``, ``python -m bench.packed``), one row per run."""
    report = _load("gpu_h200.json")
    lines = [
        measured_on(report["machine"], "gpu_h200.json") + f" `{report['command']}`.",
        "",
        _row(
            "call",
            "K",
            "frame_codec",
            "frames (seed + learning)",
            "frames/s (all members)",
            "× K=1 of the call",
            "update ms (all members)",
            "peak GPU memory",
        ),
        _row(*["---"] * 8),
    ]
    for call, run in enumerate(report["runs"], 1):
        args, results = run["args"], run["results"]
        codec = re.search(r"--frame-codec (\S+)", args)
        seed, frames = re.search(r"--seed-frames (\d+)", args), re.search(r"--frames (\d+)", args)
        for k in sorted({int(m) for m in re.findall(r"gpu_pixels_k(\d+)_fps", " ".join(results))}):
            prefix = f"gpu_pixels_k{k}"
            speedup = results.get(f"{prefix}_speedup_vs_k1")
            lines.append(
                _row(
                    call,
                    k,
                    codec.group(1) if codec else "",
                    f"{seed.group(1)} + {frames.group(1)}" if seed and frames else "",
                    f"{results[prefix + '_fps']:.0f}",
                    f"{speedup:.2f}" if speedup is not None else "(no K=1 in this call)",
                    f"{results[prefix + '_update_ms']:.1f}",
                    f"{results[prefix + '_gpu_mib'] / 1024:.1f} GiB",
                )
            )
    return "\n".join(lines)


def codec_levels_table() -> str:
    """lz4 frames on the five tasks at level 10 (kept) and fast mode (``bench/replay_codec_levels.json``)."""
    report = _load("replay_codec_levels.json")
    high, fast = report["level_10"], report["level_0_fast"]
    settings = high["settings"]
    raw_bytes = next(iter(high["tasks"].values()))["none"]["bytes_per_transition"]  # the same on every task
    lines = [
        measured_on(high["machine"], "replay_codec_levels.json") + f" `{report['command']}`",
        "",
        f"Real rendered frames, a {settings['policy']} policy, {settings['filled']:,} transitions through a "
        f"ring of {settings['capacity']:,} slots, batches of {settings['batch_size']}; every lz4 batch "
        + ("was" if all(t["lz4"]["identical_to_uncompressed"] for t in high["tasks"].values()) else "was **not**")
        + " bit-identical to the uncompressed one.",
        "",
        _row(
            "task",
            "bytes/transition, level 10",
            f"of {raw_bytes:,.0f}",
            "at 1M transitions",
            "sample ms lz4 / raw",
            "fast mode bytes",
            "fast / level 10",
            "encode ms per frame, level 10 / fast",
        ),
        _row(*["---"] * 8),
    ]
    for task, codecs in high["tasks"].items():
        lz4, raw, quick = codecs["lz4"], codecs["none"], fast["tasks"][task]["lz4"]
        lines.append(
            _row(
                task,
                f"{lz4['bytes_per_transition']:,.0f}",
                f"{lz4['ratio']:.1%}",
                f"{lz4['gb_at_1m']:.1f} GB",
                f"{lz4['sample_ms_median']:.1f} / {raw['sample_ms_median']:.1f}",
                f"{quick['bytes_per_transition']:,.0f}",
                f"+{quick['bytes_per_transition'] / lz4['bytes_per_transition'] - 1:.0%}",
                f"{lz4['add_ms_mean']:.2f} / {quick['add_ms_mean']:.2f}",
            )
        )
    return "\n".join(lines)


def large_replay_line() -> str:
    """A batch from a replay larger than the cache (``bench/replay_codec_100k.json``)."""
    report = _load("replay_codec_100k.json")
    s = report["settings"]
    rows = []
    for task, codecs in report["tasks"].items():
        raw, lz4 = codecs["none"], codecs["lz4"]
        rows.append(
            f"{task}, {s['capacity']:,} transitions ({s['filled']:,} added), batches of {s['batch_size']}: "
            f"{raw['sample_ms_median']:.1f} ms raw and {lz4['sample_ms_median']:.1f} ms with lz4, "
            + ("bit-identical." if lz4["identical_to_uncompressed"] else "**not** identical.")
        )
    return "\n".join([measured_on(report["machine"], "replay_codec_100k.json"), "", *rows])


BLOCKS: dict[str, Callable[[], str]] = {
    "latest": latest_table,
    "workers": workers_table,
    "baseline": baseline_line,
    "gpu": gpu_table,
    "codec-levels": codec_levels_table,
    "large-replay": large_replay_line,
}
BLOCK = re.compile(r"(<!-- bench\.report: ([a-z-]+) -->\n)(.*?)(<!-- /bench\.report: \2 -->)", re.DOTALL)


def render(text: str, doc: Path = DOC) -> tuple[str, list[str]]:
    """``text`` with every block rewritten, and the names of the blocks that changed."""
    found = [m.group(2) for m in BLOCK.finditer(text)]
    unknown = sorted(set(found) - set(BLOCKS))
    if unknown:
        raise ReportError(f"{doc}: unknown bench.report block(s) {', '.join(unknown)} (known: {', '.join(BLOCKS)})")
    missing = sorted(set(BLOCKS) - set(found))
    if missing:
        raise ReportError(f"{doc}: no bench.report block for {', '.join(missing)}")
    changed: list[str] = []

    def rewrite(match: re.Match[str]) -> str:
        body = BLOCKS[match.group(2)]() + "\n"
        if body != match.group(3):
            changed.append(match.group(2))
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(rewrite, text), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--doc", type=Path, default=DOC, help="the Markdown file whose blocks are rewritten")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 naming each stale block")
    args = parser.parse_args(argv)
    try:
        text = args.doc.read_text()
        new, changed = render(text, args.doc)
    except OSError as error:
        print(f"error: {args.doc}: {error.strerror}", file=sys.stderr)
        return 2
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        if changed:
            print(
                f"{args.doc}: stale bench.report block(s): {', '.join(changed)}; run python -m bench.report",
                file=sys.stderr,
            )
            return 1
        print(f"{args.doc}: every bench.report block matches its JSON")
        return 0
    if changed:
        args.doc.write_text(new)
    print(
        f"{args.doc}: {len(changed)} of {len(BLOCKS)} blocks rewritten"
        + (f" ({', '.join(changed)})" if changed else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
