"""``python -m examples.invoice_intake``: the main job. ``--help`` explains the options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from examples.invoice_intake.reviewer import DEFAULT_SAMPLE
from examples.invoice_intake.run import PROFILES, run

EPILOG = """\
examples:
  python -m examples.invoice_intake                     embedded defaults, 540 invoices
  python -m examples.invoice_intake --n 60              a quick run
  python -m examples.invoice_intake --profile servers   the same job on real servers
  python -m examples.invoice_intake --profile gateway   the same job through the gateway
  python -m examples.invoice_intake --config my.toml    your own profile

afterwards:
  open STATE/report.html                                the report with plots
  aios-mesh review list --config STATE/aios-mesh.toml   invoices waiting for a human
  aios-mesh audit verify --config STATE/aios-mesh.toml  re-check the audit chain
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.invoice_intake",
        description="Invoice intake end to end: train and register the models, index the "
                    "vendor masters, run the Flyte workflow over generated invoices from three "
                    "tenants through aios-mesh, then print a summary and write an HTML report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--profile", choices=sorted(p.stem for p in PROFILES.glob("*.toml")),
                       default="embedded", help="config profile in %(prog)s's profiles/ "
                                                "folder (default: %(default)s)")
    which.add_argument("--config", type=Path, help="a profile file of your own")
    parser.add_argument("--n", type=int, default=540, help="invoices to generate and process "
                                                           "(default: %(default)s)")
    parser.add_argument("--batch", type=int, default=30,
                        help="invoices per workflow run (default: %(default)s)")
    parser.add_argument("--state", type=Path, default=Path(".aios-mesh/invoice-intake"),
                        help="state folder, recreated on every run (default: %(default)s)")
    parser.add_argument("--briefs", type=int, default=6,
                        help="invoices routed to humans that an LLM (Gemma 3 270M on "
                             "llama.cpp) drafts a review brief for; a sample, since each "
                             "takes seconds on a CPU (default: %(default)s; 0: none)")
    parser.add_argument("--reviewer-sample", type=int, default=DEFAULT_SAMPLE, metavar="N",
                        help="review items a SIMULATED reviewer decides against the corpus's "
                             "ground truth, so quality from reviewers has labels; at most "
                             "half the queue (default: %(default)s; 0: none)")
    parser.add_argument("--private-servers", action="store_true",
                        help="start every server on a free port, with a private NATS, Redis "
                             "and a throw-away PostgreSQL database (what the tests do)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.batch < 1 or args.briefs < 0 or args.reviewer_sample < 0:
        parser.error("--n and --batch must be at least 1, --briefs and --reviewer-sample "
                     "at least 0")
    profile = args.config or PROFILES / f"{args.profile}.toml"
    if not profile.is_file():
        parser.error(f"profile {profile} does not exist")
    return run(profile=profile, state=args.state, n=args.n, batch=args.batch,
               private_servers=args.private_servers, briefs=args.briefs,
               reviewer_sample=args.reviewer_sample).exit_code


if __name__ == "__main__":
    sys.exit(main())
