"""Deterministic synthetic support tickets with ground truth (no downloads, seeded)."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["QUEUES", "TENANTS", "Ticket", "make_tickets", "training_set"]

TENANTS = ("acme", "globex", "initech")
QUEUES = ("billing", "technical", "account", "shipping")

_PHRASES = {
    "billing": ["invoice {n} was charged twice", "refund for order {n}",
                "wrong VAT on invoice {n}", "payment failed on card", "credit note missing",
                "overcharged on my last bill", "please resend invoice {n}"],
    "technical": ["the app crashes on login", "error 500 when exporting",
                  "sync stopped working", "API returns timeout", "cannot upload attachment",
                  "dashboard is blank after update", "integration webhook fails"],
    "account": ["reset my password", "add a new user to our workspace",
                "change the account owner", "close my account", "two-factor code not arriving",
                "update company address", "cannot access my profile"],
    "shipping": ["parcel {n} has not arrived", "tracking number invalid",
                 "delivery to wrong address", "package damaged in transit",
                 "change delivery date for order {n}", "customs hold on shipment {n}"],
}
_OPENERS = ["Hi team,", "Hello,", "Urgent:", "Dear support,", "", "Quick question -"]
_PII = ["Reach me at {name}@example.com.", "Call me on +49 30 {a} {b}.",
        "My card 4111 1111 1111 1111 was used.", "IBAN DE89 3704 0044 0532 0130 00 for refund."]
_NAMES = ["jane.doe", "max.mustermann", "li.wei", "ana.garcia", "o.brien"]


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    tenant: str
    text: str
    queue: str  # ground truth
    has_pii: bool


def _ticket(rng: random.Random, i: int, tenant: str) -> Ticket:
    queue = rng.choice(QUEUES)
    body = rng.choice(_PHRASES[queue]).format(n=rng.randint(1000, 9999))
    if rng.random() < 0.15:  # ambiguous tickets mix two queues: low model confidence
        other = rng.choice([q for q in QUEUES if q != queue])
        body += " and also " + rng.choice(_PHRASES[other]).format(n=rng.randint(1000, 9999))
    pii = rng.random() < 0.3
    extra = rng.choice(_PII).format(name=rng.choice(_NAMES), a=rng.randint(1000, 9999),
                                    b=rng.randint(1000, 9999)) if pii else ""
    text = " ".join(p for p in (rng.choice(_OPENERS), body + ".", extra) if p)
    return Ticket(f"T-{i:05d}", tenant, text, queue, pii)


def make_tickets(n: int, seed: int = 7) -> list[Ticket]:
    """``n`` tickets spread over the three tenants; same seed, same tickets."""
    rng = random.Random(seed)
    return [_ticket(rng, i, TENANTS[i % len(TENANTS)]) for i in range(n)]


def training_set(n: int = 1200, seed: int = 11) -> tuple[list[str], list[str]]:
    tickets = make_tickets(n, seed)
    return [t.text for t in tickets], [t.queue for t in tickets]
