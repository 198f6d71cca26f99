"""``python -m examples.support_triage``: the second main job. ``--help`` explains the options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from examples.support_triage.reviewer import DEFAULT_SAMPLE
from examples.support_triage.run import PROFILES, run

EPILOG = """\
examples:
  python -m examples.support_triage                      embedded defaults, 30 tickets
  python -m examples.support_triage --tickets 15         a quick run
  python -m examples.support_triage --profile servers    the same job on real servers
  python -m examples.support_triage --config my.toml     your own profile

afterwards:
  open STATE/report.html                                 the report with plots
  aios-mesh review list --config STATE/aios-mesh.toml    answers waiting for a human
  aios-mesh audit verify --config STATE/aios-mesh.toml   re-check the audit chain
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.support_triage",
        description="Support triage end to end: train and register a ticket classifier and "
                    "a knowledge-base embedder, index each tenant's articles, then classify "
                    "generated tickets from three tenants, draft grounded answers with an "
                    "LLM (Gemma 3 270M on llama.cpp), let an agent handle tickets about "
                    "orders, route by policy, and print a summary and write an HTML report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--profile", choices=sorted(p.stem for p in PROFILES.glob("*.toml")),
                       default="embedded", help="config profile in the job's profiles/ "
                                                "folder (default: %(default)s)")
    which.add_argument("--config", type=Path, help="a profile file of your own")
    parser.add_argument("--tickets", type=int, default=30,
                        help="tickets to generate and triage (default: %(default)s)")
    parser.add_argument("--state", type=Path, default=Path(".aios-mesh/support-triage"),
                        help="state folder, recreated on every run (default: %(default)s)")
    parser.add_argument("--reviewer-sample", type=int, default=DEFAULT_SAMPLE, metavar="N",
                        help="review items a SIMULATED reviewer decides against the ground "
                             "truth; at most half the queue (default: %(default)s; 0: none)")
    parser.add_argument("--private-servers", action="store_true",
                        help="start every server on a free port, with a private NATS, Redis "
                             "and a throw-away PostgreSQL database (what the tests do)")
    args = parser.parse_args(argv)
    if args.tickets < 1 or args.reviewer_sample < 0:
        parser.error("--tickets must be at least 1, --reviewer-sample at least 0")
    profile = args.config or PROFILES / f"{args.profile}.toml"
    if not profile.is_file():
        parser.error(f"profile {profile} does not exist")
    return run(profile=profile, state=args.state, tickets=args.tickets,
               private_servers=args.private_servers,
               reviewer_sample=args.reviewer_sample).exit_code


if __name__ == "__main__":
    sys.exit(main())
