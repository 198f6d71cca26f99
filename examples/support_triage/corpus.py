"""Generated support tickets, each tenant's knowledge base and order book — nothing downloaded.

Three tenants (the invoice job's ``acme``, ``globex``, ``initech``) run web shops with their
own policies: a different return window, shipping times, payment methods. Each has a small
knowledge base (one short article per topic, ids like ``acme/returns``) and an order book.

Tickets come from templates with varied phrasing, greetings, signatures and typos; a share
carries personal data (an e-mail address, a phone number, a card number) that must never
reach a model. Every ticket knows its truth (:class:`Truth`): the category, the knowledge
base article that answers it, the order it is about. Categories:

================  ==============================================  ===========================
category          example                                         handled by
================  ==============================================  ===========================
``shipping``      "How long does delivery to Canada take?"        retrieve + grounded draft
``returns``       "Can I send back the headphones?"               retrieve + grounded draft
``account``       "I forgot my password"                          retrieve + grounded draft
``billing``       "Which payment methods do you take?"            retrieve + grounded draft
``order_status``  "Where is order AC-10042?"                      the exception agent
``refund``        "Order AC-10042 arrived broken, refund please"  the exception agent
``spam``          "Cheap followers, click here"                   refused by policy
================  ==============================================  ===========================

    >>> tickets = make_tickets(14)
    >>> len(tickets), sorted({t.tenant for t in tickets}) == list(TENANTS)
    (14, True)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["ANSWERABLE", "CATEGORIES", "EXCEPTIONS", "TENANTS", "Article", "Order", "Ticket",
           "Truth", "knowledge_base", "make_tickets", "order_book", "training_tickets"]

TENANTS: tuple[str, ...] = ("acme", "globex", "initech")
#: Categories a grounded draft answers.
ANSWERABLE: tuple[str, ...] = ("shipping", "returns", "account", "billing")
#: Categories the exception agent handles (it needs the order book).
EXCEPTIONS: tuple[str, ...] = ("order_status", "refund")
CATEGORIES: tuple[str, ...] = (*ANSWERABLE, *EXCEPTIONS, "spam")
#: How often each category comes up (the same order as :data:`CATEGORIES`).
_WEIGHTS = (0.2, 0.18, 0.16, 0.16, 0.11, 0.11, 0.08)

_PREFIX = {"acme": "AC", "globex": "GX", "initech": "IN"}
_SHOP = {"acme": {"standard": 3, "express": 1, "fee": 9, "window": 30, "refund_days": 5,
                  "methods": "Visa, Mastercard and PayPal", "hold": 3},
         "globex": {"standard": 5, "express": 2, "fee": 15, "window": 14, "refund_days": 10,
                    "methods": "Visa and bank transfer", "hold": 5},
         "initech": {"standard": 4, "express": 2, "fee": 12, "window": 60, "refund_days": 7,
                     "methods": "Mastercard, PayPal and Apple Pay", "hold": 2}}


@dataclass(frozen=True, slots=True)
class Article:
    """One knowledge-base chunk: ``id`` is ``tenant/topic``."""

    id: str
    tenant: str
    category: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    tenant: str
    product: str
    status: str  # "delivered", "shipped", "delayed"
    amount: float
    refundable: bool


@dataclass(frozen=True, slots=True)
class Truth:
    """What a ticket really is: its category, the article that answers it (answerable
    categories), the order it is about (exceptions), whether it carries personal data."""

    category: str
    article: str | None
    order_id: str | None
    pii: bool


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    tenant: str
    text: str
    truth: Truth


def knowledge_base(tenant: str) -> list[Article]:
    """The tenant's articles: one or two per answerable topic, with the tenant's numbers."""
    s = _SHOP[tenant]
    rows = [
        ("shipping", "shipping", "Shipping times",
         f"Standard shipping takes {s['standard']} business days. Express shipping takes "
         f"{s['express']} business days and costs {s['fee']} dollars."),
        ("returns", "returns", "Returns",
         f"You can return any item within {s['window']} days of delivery. Start a return on "
         "the Orders page and print the free return label."),
        ("account", "password", "Password reset",
         "To reset your password, click Forgot password on the sign-in page. We send a reset "
         "link to the email address on your account."),
        ("account", "email-change", "Changing your email",
         "To change your email address, open Settings, then Account, and enter the new "
         "address. We send a confirmation link to the new address."),
        ("billing", "payment", "Payment methods",
         f"We accept {s['methods']}. You pay when the order ships."),
        ("billing", "double-charge", "Charged twice",
         f"A second charge is usually a pending authorization. It disappears within "
         f"{s['hold']} days without any action."),
    ]
    return [Article(f"{tenant}/{topic}", tenant, category, title, text)
            for category, topic, title, text in rows]


_PRODUCTS = ("headphones", "coffee grinder", "desk lamp", "backpack", "keyboard",
             "running shoes", "water bottle", "phone case")


def order_book(tenant: str, n: int = 40) -> list[Order]:
    """The tenant's recent orders (a fixed seed per tenant)."""
    rng = random.Random(f"orders/{tenant}")
    orders = []
    for i in range(n):
        status = rng.choice(("delivered", "delivered", "shipped", "delayed"))
        orders.append(Order(f"{_PREFIX[tenant]}-{10000 + 37 * i}", tenant,
                            rng.choice(_PRODUCTS), status, round(rng.uniform(12, 480), 2),
                            refundable=status == "delivered" and rng.random() < 0.8))
    return orders


_TEMPLATES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "shipping": (("How long does shipping take?", "shipping"),
                 ("How many days until my package arrives with standard shipping?",
                  "shipping"),
                 ("What does express shipping cost and how fast is it?", "shipping"),
                 ("Do you offer express delivery? How long does it take?", "shipping")),
    "returns": (("Can I return the {product} I bought?", "returns"),
                ("How many days do I have to return an item?", "returns"),
                ("I want to send back my {product}, how do I start a return?", "returns"),
                ("Is there a return label for returns?", "returns")),
    "account": (("I forgot my password and cannot sign in.", "password"),
                ("How do I reset my password?", "password"),
                ("How can I change the email address on my account?", "email-change"),
                ("I need to update my email in my account settings.", "email-change")),
    "billing": (("Which payment methods do you accept?", "payment"),
                ("Can I pay with PayPal or a credit card?", "payment"),
                ("I was charged twice for one purchase.", "double-charge"),
                ("There are two charges on my statement, why?", "double-charge")),
    "order_status": (("Where is my order {order}? It has not arrived yet.", None),
                     ("What is the status of order {order}?", None),
                     ("My order {order} is late, when will it come?", None)),
    "refund": (("Order {order} arrived broken. I want a refund.", None),
               ("Please refund order {order}, the {product} does not work.", None),
               ("I want my money back for order {order}.", None)),
    "spam": (("Buy cheap followers now!!! Click here for 90% off crypto deals", None),
             ("Congratulations, you won a free cruise. Send your bank details to claim.",
              None),
             ("SEO services: rank first on every search engine, cheap price", None)),
}
_GREETINGS = ("", "Hi, ", "Hello, ", "Hey team, ", "Good morning. ", "Dear support, ")
_SIGNOFFS = ("", " Thanks.", " Thank you!", " Regards, Sam", " Cheers, Alex", " Best, Jordan")
_PII = ("My email is {first}.{last}@example.com.", "Call me at +1 415 555 {num:04d}.",
        "I paid with card 4111 1111 1111 {num:04d}.", "You can reach me on {first}@mail.test.")
_FIRST = ("jane", "omar", "li", "maria", "tom", "aisha", "pedro", "nina")
_LAST = ("doe", "khan", "wei", "garcia", "smith", "okafor", "silva", "berg")


def _typo(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    i = rng.randrange(len(words))
    word = words[i]
    if len(word) > 4 and word.isalpha():
        j = rng.randrange(1, len(word) - 2)
        words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2:]
    return " ".join(words)


def _ticket(rng: random.Random, ticket_id: str, tenant: str, category: str,
            orders: list[Order]) -> Ticket:
    template, topic = rng.choice(_TEMPLATES[category])
    order = rng.choice(orders)
    body = template.format(order=order.id, product=order.product)
    pii = rng.random() < 0.3 and category != "spam"
    if pii:
        body += " " + rng.choice(_PII).format(first=rng.choice(_FIRST), last=rng.choice(_LAST),
                                              num=rng.randrange(10_000))
    if rng.random() < 0.2:
        body = _typo(rng, body)
    text = rng.choice(_GREETINGS) + body + rng.choice(_SIGNOFFS)
    uses_order = "{order}" in template
    return Ticket(ticket_id, tenant, text, Truth(
        category, f"{tenant}/{topic}" if topic else None, order.id if uses_order else None,
        pii))


def _tickets(n: int, seed: int, prefix: str) -> list[Ticket]:
    rng = random.Random(seed)
    books = {tenant: order_book(tenant) for tenant in TENANTS}
    out = []
    for i in range(n):
        tenant = TENANTS[i % len(TENANTS)]
        category = rng.choices(CATEGORIES, weights=_WEIGHTS)[0]
        out.append(_ticket(rng, f"{prefix}-{i:05d}", tenant, category, books[tenant]))
    return out


def make_tickets(n: int = 30, *, seed: int = 13) -> list[Ticket]:
    """``n`` tickets, tenants in turn, from a fixed seed (the same on every run and profile)."""
    return _tickets(n, seed, "T")


def training_tickets(n: int = 1200, *, seed: int = 4321) -> list[Ticket]:
    """Labelled tickets for the classifier: a different seed than :func:`make_tickets`."""
    return _tickets(n, seed, "TR")
