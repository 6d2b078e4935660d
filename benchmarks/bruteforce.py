"""
What the device policy buys against credential stuffing behind a shared
address, on simulated time.

    python -m benchmarks.bruteforce [--accounts 500] [--hours 24]
        [--pairs 10000] [--bots 20] [--chart docs/bruteforce.png]
        [--jobs N] [--smoke]

Runs every strategy (no protection, fail2ban-style address lockout, and
our C{learn}, C{tofu} and C{allowlist} modes with default limits) against
every attacker variant (no CLIENTID, one fixed token per bot, a fresh
random token per attempt, the last spread over 1,000 addresses), through
the project's real C{ClientIDChecker}, C{DevicePolicy} and C{MemoryStore}
on a C{Clock}; see L{benchmarks._simulation} for the model.

Prints a table, writes a PNG chart when matplotlib is installed, and prints
as its last line one JSON object whose key C{results} holds the grid: one
entry per strategy and variant with C{honest_success_rate},
C{compromised_accounts}, C{attacker_logins} and C{alerts_raised} (and
details: C{compromises_alerted}, the rules that refused honest users and
right passwords).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

from attrs import asdict, evolve

from benchmarks._simulation import STRATEGIES, VARIANTS, Scenario, runCell

SMOKE = {"accounts": 50, "hours": 2.0, "pairs": 1000}
"""A tiny run: 50 accounts, 2 simulated hours, 1,000 leaked pairs."""


def _cell(arguments: tuple[str, str, Scenario]) -> dict[str, Any]:
    return runCell(*arguments)


def runGrid(scenario: Scenario, jobs: int, extra: list[str] = []) -> list[dict[str, Any]]:
    """
    Every strategy (and C{extra} ones) against every variant, C{jobs}
    cells at a time.
    """
    cells = [(s, v, scenario) for s in [*STRATEGIES, *extra] for v in VARIANTS]
    if jobs <= 1:
        return [_cell(c) for c in cells]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return pool.map(_cell, cells, chunksize=1)


def goals(results: list[dict[str, Any]]) -> dict[str, bool]:
    """
    The issue's goals, each true or false.
    """
    by = {(r["strategy"], r["variant"]): r for r in results}
    lockout = [by["address-lockout", v]["honest_success_rate"] for v in VARIANTS]
    strict = [by[s, v] for s in ("tofu", "allowlist") for v in VARIANTS]
    learn = [by["learn", v] for v in VARIANTS]
    return {
        "lockout_hurts_honest": min(lockout) < 0.99,
        "tofu_allowlist_honest_999": all(r["honest_success_rate"] >= 0.999 for r in strict),
        "tofu_allowlist_no_compromise": all(r["compromised_accounts"] == 0 for r in strict),
        "learn_alerts_every_compromise": all(
            r["compromises_alerted"] == r["compromised_accounts"] for r in learn
        ),
    }


def table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'strategy':<16}{'variant':<14}{'honest ok':>10}{'compromised':>12}"
        f"{'atk logins':>11}{'alerts':>8}{'alerted':>8}  refused honest / right passwords by"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        why = _reasons(r["honest_refusals"]) + " / " + _reasons(r["attacker_right_password_refusals"])
        lines.append(
            f"{r['strategy']:<16}{r['variant']:<14}{100 * r['honest_success_rate']:>9.2f}%"
            f"{r['compromised_accounts']:>12}{r['attacker_logins']:>11}{r['alerts_raised']:>8}"
            f"{r['compromises_alerted']:>8}  {why}"
        )
    return "\n".join(lines)


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in counts.items()) or "-"


def chart(results: list[dict[str, Any]], path: Path, scenario: Scenario) -> str:
    """
    Write a PNG with honest success and compromised accounts per strategy,
    one bar per attacker variant.

    @return: What happened, for the table.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib)"
    by = {(r["strategy"], r["variant"]): r for r in results}
    strategies = list(dict.fromkeys(r["strategy"] for r in results))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True)
    width = 0.8 / len(VARIANTS)
    for i, variant in enumerate(VARIANTS):
        xs = [n + (i - (len(VARIANTS) - 1) / 2) * width for n in range(len(strategies))]
        top.bar(xs, [100 * by[s, variant]["honest_success_rate"] for s in strategies],
                width, label=variant)
        bottom.bar(xs, [by[s, variant]["compromised_accounts"] for s in strategies],
                   width, label=variant)
    top.set_ylabel("honest logins that succeed (%)")
    top.set_ylim(0, 105)
    top.axhline(99.9, color="grey", linewidth=0.8, linestyle="--")
    top.legend(title="attacker", fontsize=8, loc="lower right")
    bottom.set_ylabel("compromised accounts")
    bottom.set_xticks(range(len(strategies)), strategies, fontsize=8)
    figure.suptitle(
        f"Credential stuffing behind one shared address: {scenario.accounts} accounts, "
        f"{scenario.hours:g} h, {scenario.bots} bots, {scenario.pairs} leaked pairs "
        f"({100 * scenario.rightFraction:g}% right)",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return f"chart written to {path}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Scenario()
    parser.add_argument("--accounts", type=int, default=defaults.accounts)
    parser.add_argument("--hours", type=float, default=defaults.hours)
    parser.add_argument("--pairs", type=int, default=defaults.pairs)
    parser.add_argument("--right", type=float, default=defaults.rightFraction,
                        help="fraction of the leaked pairs that are right")
    parser.add_argument("--bots", type=int, default=defaults.bots)
    parser.add_argument("--bot-interval", type=float, default=defaults.botInterval,
                        help="seconds between one bot's attempts")
    parser.add_argument("--spread", type=int, default=defaults.spreadAddresses,
                        help="addresses of the spread variant")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--chart", type=Path, default=None,
                        help="PNG to write (default: bruteforce.png in a temporary directory "
                             "for --smoke, docs/bruteforce.png otherwise)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--extra", action="append", default=[], metavar="MODE+attackN",
                        help="also run a device mode with attack_failures_per_minute = N "
                             "(e.g. learn+attack60); not part of the goals")
    parser.add_argument("--smoke", action="store_true", help="50 accounts, 2 h, 1,000 pairs")
    args = parser.parse_args(argv)
    scenario = evolve(
        defaults, accounts=args.accounts, hours=args.hours, pairs=args.pairs,
        rightFraction=args.right, bots=args.bots, botInterval=args.bot_interval,
        spreadAddresses=args.spread, seed=args.seed,
    )
    if args.smoke:
        scenario = evolve(scenario, **SMOKE)
    chartPath = args.chart
    if chartPath is None:
        if args.smoke:
            import tempfile

            chartPath = Path(tempfile.mkdtemp(prefix="clientid-bench-")) / "bruteforce.png"
        else:
            chartPath = Path(__file__).resolve().parent.parent / "docs" / "bruteforce.png"

    started = time.perf_counter()
    results = runGrid(scenario, max(1, args.jobs), args.extra)
    seconds = time.perf_counter() - started
    print(table(results))
    print(chart(results, chartPath, scenario))
    met = goals(results)
    for name, ok in met.items():
        print(f"goal {name}: {'holds' if ok else 'MISSED'}")
    print(f"{len(results)} cells in {seconds:.1f} s")
    summary = {"results": results, "goals": met, "scenario": asdict(scenario),
               "seconds": round(seconds, 1)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
