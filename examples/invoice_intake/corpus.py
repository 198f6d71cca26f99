"""Deterministic synthetic invoice corpus: three tenants, their vendor masters and invoices in
five layouts with ground truth.

About 12% of the invoices carry OCR-style noise (``Invoice.noise`` names what was done):
character confusions (O/0, l/1, S/5, B/8, rn/m) in ordinary words, labels, the vendor name
and occasionally inside the total, the invoice number or the invoice date; dropped or doubled
spaces; two lines run together. Ground truth is always what a careful human would record, i.e.
what was *meant*: a confused digit in the total leaves ``truth.total`` at the real amount, so
the extractor can get it wrong. PII (e-mail, phone, IBAN, person) is never touched by noise.

Everything is drawn from ``random.Random`` instances seeded with ints or strings (string seeds
are hashed with SHA-512 by ``random``, not with ``hash()``), so the corpus is byte-identical
across runs and processes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import date, timedelta

__all__ = [
    "CURRENCIES",
    "LAYOUTS",
    "NEW_LAYOUT",
    "NOISE_KINDS",
    "TENANTS",
    "Invoice",
    "Truth",
    "Vendor",
    "make_corpus",
    "shifted_corpus",
    "training_corpus",
    "vendor_master",
]

TENANTS: tuple[str, ...] = ("acme", "globex", "initech")
CURRENCIES = ("USD", "EUR", "GBP", "CHF", "JPY")
LAYOUTS = ("header", "table", "letter", "european", "compact")
PII_KINDS = ("email", "phone", "iban", "person")
# OCR-style noise applied to ~12% of the invoices (Invoice.noise lists the kinds applied).
# The ocr_total / ocr_invoice_number / ocr_date kinds garble the printed value of that field
# (its truth stays the meant value); the others never touch the printed field values.
NOISE_KINDS = ("ocr_word", "ocr_label", "ocr_name", "ocr_total", "ocr_invoice_number",
               "ocr_date", "space_drop", "space_double", "line_join", "line_break")
NUMBER_NOISE = frozenset({"ocr_total", "ocr_invoice_number", "ocr_date"})
NOISE_RATE = 0.12


@dataclass(frozen=True, slots=True)
class Vendor:
    id: str
    tenant: str
    name: str
    country: str
    currency: str
    iban: str | None


@dataclass(frozen=True, slots=True)
class Truth:
    vendor_id: str
    vendor_name: str  # as printed on the invoice
    invoice_number: str | None
    invoice_date: str | None  # ISO yyyy-mm-dd
    currency: str | None  # ISO code
    total: float | None


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    tenant: str
    text: str
    layout: str
    truth: Truth
    pii: tuple[str, ...]
    malformed: bool
    noise: tuple[str, ...] = ()  # OCR noise kinds applied (see NOISE_KINDS), in order


# --------------------------------------------------------------------------- vendor masters

_COUNTRIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "US": ("USD", ("Inc", "LLC", "Corp")),
    "GB": ("GBP", ("Ltd", "PLC")),
    "DE": ("EUR", ("GmbH", "AG")),
    "FR": ("EUR", ("SA", "SARL")),
    "SE": ("EUR", ("AB",)),
    "CH": ("CHF", ("AG", "SA")),
    "JP": ("JPY", ("KK",)),
}
_COUNTRY_ORDER = ("US", "US", "GB", "GB", "DE", "DE", "FR", "SE", "CH", "JP")
_PREFIXES = (
    "Nordic", "Alpine", "Atlas", "Blue River", "Summit", "Pacific", "Crescent", "Evergreen",
    "Granite", "Harbor", "Ironwood", "Juniper", "Keystone", "Lakeside", "Meridian", "Northwind",
    "Orion", "Pinnacle", "Quantum", "Redwood", "Silverline", "Tristar", "Union", "Vertex",
    "Westbrook", "Zenith", "Bavarian", "Helvetic", "Sakura", "Thames", "Golden Gate", "Red Oak",
    "Coastal", "Prairie", "Falcon", "Beacon", "Cedar", "Delta", "Emerald", "Fjord",
)
_PRODUCTS = (
    "Paper", "Supplies", "Logistics", "Systems", "Software", "Consulting", "Foods", "Metals",
    "Office", "Print", "Freight", "Electric", "Cleaning", "Catering", "Textiles", "Tools",
    "Packaging", "Analytics", "Chemicals", "Furniture", "Security", "Networks", "Energy",
)
_TWIN = {  # singular/plural twins for near-duplicate vendor names
    "Paper": "Papers", "Supplies": "Supply", "Logistics": "Logistic", "Systems": "System",
    "Foods": "Food", "Metals": "Metal", "Office": "Offices", "Print": "Prints",
    "Tools": "Tool", "Textiles": "Textile", "Networks": "Network", "Chemicals": "Chemical",
}
_FIXED: dict[str, tuple[tuple[str, str], ...]] = {
    "acme": (("Nordic Paper AB", "SE"), ("Nordic Papers AB", "SE"),
             ("Acme Supplies Ltd", "GB"), ("Acme Supply Ltd", "GB")),
    "globex": (("Alpine Office AG", "CH"), ("Alpine Offices AG", "CH"),
               ("Summit Logistics Inc", "US"), ("Summit Logistic Inc", "US")),
    "initech": (("Harbor Freight Systems LLC", "US"), ("Harbour Freight Systems LLC", "US"),
                ("Sakura Print KK", "JP"), ("Sakura Prints KK", "JP")),
}
_CUSTOMERS = {"acme": "Acme Corporation", "globex": "Globex Corporation",
              "initech": "Initech LLC"}


def _iban(rng: random.Random, country: str) -> str:
    digits = "".join(str(rng.randrange(10)) for _ in range(18))
    body = f"{country}{rng.randrange(10, 100)}{digits}"
    return " ".join(body[i:i + 4] for i in range(0, len(body), 4))


def _vendor(rng: random.Random, tenant: str, idx: int, name: str, country: str) -> Vendor:
    currency = _COUNTRIES[country][0]
    iban = _iban(rng, country) if rng.random() < 0.5 else None
    return Vendor(f"{tenant}-v{idx:03d}", tenant, name, country, currency, iban)


def vendor_master(tenant: str) -> list[Vendor]:
    """The tenant's vendor master (30 vendors), near-duplicate names included."""
    if tenant not in TENANTS:
        raise ValueError(f"unknown tenant {tenant!r}")
    rng = random.Random(f"vendor-master:{tenant}")
    out: list[Vendor] = []
    names: set[str] = set()
    for name, country in _FIXED[tenant]:
        out.append(_vendor(rng, tenant, len(out) + 1, name, country))
        names.add(name)
    twins = 0
    while len(out) < 30:
        country = rng.choice(_COUNTRY_ORDER)
        product = rng.choice(_PRODUCTS)
        name = f"{rng.choice(_PREFIXES)} {product} {rng.choice(_COUNTRIES[country][1])}"
        if name in names:
            continue
        out.append(_vendor(rng, tenant, len(out) + 1, name, country))
        names.add(name)
        twin = name.replace(f" {product} ", f" {_TWIN.get(product, product)} ")
        if twins < 3 and product in _TWIN and twin not in names and len(out) < 30:
            out.append(_vendor(rng, tenant, len(out) + 1, twin, country))
            names.add(twin)
            twins += 1
    return out


# --------------------------------------------------------------------------- printing helpers

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
_SYMBOL = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CHF": "CHF "}
_FIRST = ("Anna", "Ben", "Carla", "David", "Elena", "Felix", "Greta", "Hiro", "Ines", "Jonas",
          "Karin", "Liam", "Maria", "Noah", "Olga", "Paul", "Rita", "Sven", "Tara", "Yuki")
_LAST = ("Andersson", "Brown", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen",
         "Ito", "Jones", "Keller", "Lopez", "Meyer", "Novak", "Olsen", "Petit", "Rossi",
         "Schmidt", "Tanaka", "Weber")
_STREETS = ("Main Street", "High Street", "Market Road", "Harbour Way", "Industriestraße",
            "Bahnhofstrasse", "Rue de Lyon", "Storgatan", "Mill Lane", "Park Avenue")
_CITIES = {"US": ("Springfield", "Denver", "Austin"), "GB": ("London", "Leeds", "Bristol"),
           "DE": ("München", "Hamburg", "Köln"), "FR": ("Paris", "Lyon", "Lille"),
           "SE": ("Stockholm", "Malmö", "Uppsala"), "CH": ("Zürich", "Basel", "Bern"),
           "JP": ("Tokyo", "Osaka", "Kyoto")}
_PHONE_CC = {"US": "1", "GB": "44", "DE": "49", "FR": "33", "SE": "46", "CH": "41", "JP": "81"}
_ITEMS = ("Paper A4 (box)", "Consulting hours", "Freight charge", "Toner cartridge",
          "Cleaning service", "Software licence", "Office chairs", "Steel brackets",
          "Catering lunch", "Packaging material", "Network switch", "Support plan",
          "Safety gloves", "Cable set", "Printing job")


def _fmt_number(value: float, currency: str, style: str) -> str:
    """style: "us" 1,440.00 | "eu" 1.440,00 | "space" 1 440,00 | "plain" 1440.00
    (JPY: no decimals)."""
    decimals = 0 if currency == "JPY" else 2
    s = f"{value:,.{decimals}f}"
    if style == "eu":
        s = s.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    elif style == "space":
        s = s.replace(",", "\x00").replace(".", ",").replace("\x00", " ")
    elif style == "plain":
        s = s.replace(",", "")
    return s


def _fmt_date(d: date, fmt: str) -> str:
    if fmt == "iso":
        return d.isoformat()
    if fmt == "dmy_slash":
        return f"{d.day:02d}/{d.month:02d}/{d.year}"
    if fmt == "dmy_dot":
        return f"{d.day:02d}.{d.month:02d}.{d.year}"
    if fmt == "long_dmy":
        return f"{d.day} {MONTHS[d.month - 1]} {d.year}"
    return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"  # long_mdy


def _typo(rng: random.Random, name: str) -> str:
    words = name.split(" ")
    idx = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not idx:
        return name
    i = rng.choice(idx)
    w = words[i]
    pos = rng.randrange(1, len(w))
    if rng.random() < 0.5:
        w = w[:pos] + w[pos + 1:]
    else:
        w = w[:pos] + rng.choice("aeinorst") + w[pos + 1:]
    words[i] = w
    return " ".join(words)


_SUFFIX_VARIANTS = {"Ltd": ("Ltd.", "Limited"), "Inc": ("Inc.", "Incorporated"),
                    "Corp": ("Corp.", "Corporation"), "LLC": ("L.L.C.",), "PLC": ("plc",)}


def _printed_name(rng: random.Random, name: str) -> str:
    r = rng.random()
    if r < 0.66:
        return name
    if r < 0.74:
        return name.upper()
    head, _, suffix = name.rpartition(" ")
    if r < 0.83 and suffix in _SUFFIX_VARIANTS:
        return f"{head} {rng.choice(_SUFFIX_VARIANTS[suffix])}"
    if r < 0.90:
        return head
    out = _typo(rng, name)
    return out if out != name else head


def _invoice_number(rng: random.Random, d: date, layout: str) -> str:
    n = rng.randrange(100, 100000)
    kind = rng.randrange(7)
    if layout == "european" and kind < 4:
        return f"RE-{d.year}-{n:05d}" if kind < 2 else f"{d.year}{n:05d}"
    if kind == 0:
        return f"INV-{d.year}-{n:04d}"
    if kind == 1:
        return str(rng.randrange(1000, 999999))
    if kind == 2:
        return f"A-{n:05d}"
    if kind == 3:
        return f"{d.year}/{n:04d}"
    if kind == 4:
        return f"F{d.year}-{n:04d}"
    if kind == 5:
        return f"SI{n:06d}"
    return f"{rng.choice('BKMT')}{rng.choice('LXZ')}{n}"


# --------------------------------------------------------------------------- invoice builder


@dataclass(slots=True)
class _Ctx:
    rng: random.Random
    vendor: Vendor
    printed: str
    tenant: str
    number: str
    issued: date
    currency: str
    total: float
    subtotal: float
    tax: float
    rate: int
    items: list[tuple[str, int, float]]
    style: str
    mark: str  # "symbol" | "symbol_suffix" | "code_suffix" | "code_prefix" | "none"
    pii: set[str]
    person: str
    email: str
    phone: str
    iban: str
    po: str
    customer_no: str
    with_total: bool
    extras: frozenset[str]  # distractors: "paid", "previous", "second_date", "ref", "period"
    ref_number: str  # an earlier invoice this one refers to, when "ref" in extras
    paid: float  # amount already paid (deposit / cash handed over), when "paid" in extras
    previous: float  # previous balance carried forward, when "previous" in extras
    other_date: date  # delivery / letter date, when "second_date" in extras

    def nd(self) -> int:
        return 0 if self.currency == "JPY" else 2

    def money(self, value: float) -> str:
        num = _fmt_number(value, self.currency, self.style)
        if self.mark == "symbol":
            return f"{_SYMBOL[self.currency]}{num}"
        if self.mark == "symbol_suffix":
            return f"{num} {_SYMBOL[self.currency].strip()}"
        if self.mark == "code_suffix":
            return f"{num} {self.currency}"
        if self.mark == "code_prefix":
            return f"{self.currency} {num}"
        return num

    def currency_line(self) -> list[str]:
        if self.mark != "none":
            return []
        label = self.rng.choice(("Currency: {}", "All amounts in {}", "Currency {}"))
        return [label.format(self.currency)]

    def fmt_date(self, d: date, choices: tuple[str, ...]) -> str:
        return _fmt_date(d, self.rng.choice(choices))

    def address(self) -> str:
        c = self.vendor.country
        return (f"{self.rng.randrange(1, 200)} {self.rng.choice(_STREETS)}, "
                f"{self.rng.choice(_CITIES[c])}")


def _balance_lines(c: _Ctx, sep: str) -> list[str]:
    """Distractor lines after the invoice total: a payment already made and/or a previous
    balance, and the resulting amount due (never the invoice total)."""
    rng = c.rng
    due = c.total
    lines = []
    if "previous" in c.extras:
        lines.append(f"{rng.choice(('Previous balance', 'Balance brought forward'))}{sep}"
                     f"{c.money(c.previous)}")
        due += c.previous
    if "paid" in c.extras:
        lines.append(f"{rng.choice(('Amount paid', 'Less amount paid', 'Deposit received'))}"
                     f"{sep}{c.money(c.paid)}")
        due -= c.paid
    label = rng.choice(("Balance due", "Amount due", "Total amount due", "Please pay"))
    lines.append(f"{label}{sep}{c.money(round(due, c.nd()))}")
    return lines


def _label(rng: random.Random, common: tuple[str, ...], rare: tuple[str, ...]) -> str:
    """Mostly a common label, sometimes one from a long tail of rarer spellings."""
    return rng.choice(rare if rng.random() < 0.12 else common)


_RARE_TOTAL = ("Total payable", "Amount payable", "Total amount", "To pay", "Sum total",
               "Total (incl. VAT)", "Total incl. tax", "Gross amount", "Net payable",
               "Total EUR/USD", "Amount")
_RARE_DATE = ("Tax point: {}", "Billing date: {}", "Invoice dt: {}", "Date issued: {}",
              "Dated: {}", "Doc. date: {}")
_RARE_NUMBER = ("Ref: {}", "Our ref.: {}", "Bill No: {}", "Invoice ID: {}", "Document #: {}",
                "No.: {}", "Reference: {}")


def _period(c: _Ctx, fmt: str) -> str:
    start = c.issued.replace(day=1) - timedelta(days=1)
    return f"{_fmt_date(start.replace(day=1), fmt)} - {_fmt_date(start, fmt)}"


def _header(c: _Ctx) -> list[str]:
    rng = c.rng
    fmts = ("iso", "dmy_slash", "long_dmy", "long_mdy")
    fmt = rng.choice(fmts)
    dated = _label(rng, ("Invoice Date: {}", "Date: {}", "Issued: {}", "Date of issue: {}"),
                   _RARE_DATE).format(_fmt_date(c.issued, fmt))
    groups = [
        [_label(rng, ("Invoice No: {}", "Invoice Number: {}", "Invoice #: {}", "Inv. No.: {}",
                      "Invoice: {}", "Document No.: {}"), _RARE_NUMBER).format(c.number)],
        [dated],
    ]
    if "ref" in c.extras:  # a reference to an earlier invoice
        groups.append([rng.choice(("Replaces invoice: {}", "Ref. invoice: {}",
                                   "Previous invoice: {}", "Credit note for invoice {}"))
                       .format(c.ref_number)])
    if "period" in c.extras:
        groups.append([f"{rng.choice(('Service period', 'Period'))}: {_period(c, fmt)}"])
    if "second_date" in c.extras:  # a delivery date right next to the invoice date
        other = rng.choice(("Delivery Date: {}", "Delivery date: {}", "Date of supply: {}",
                            "Shipped: {}")).format(_fmt_date(c.other_date, fmt))
        if rng.random() < 0.4:
            groups[1] = [f"{dated}   {other}"]
        else:
            groups[1].insert(rng.randrange(2), other)
    if rng.random() < 0.7:
        groups.append(["Due Date: " + c.fmt_date(c.issued + timedelta(days=30), fmts)])
    if rng.random() < 0.6:
        groups.append([f"PO Number: {c.po}"])
    if rng.random() < 0.5:
        groups.append([f"Customer No: {c.customer_no}"])
    rng.shuffle(groups)
    meta = [line for g in groups for line in g]
    lines = [c.printed, c.address()]
    if "phone" in c.pii:
        lines.append(f"Tel: {c.phone}")
    if "email" in c.pii:
        lines.append(f"Contact: {c.email}")
    lines += ["", rng.choice(("INVOICE", "Invoice", "TAX INVOICE")), *meta,
              f"Bill to: {_CUSTOMERS[c.tenant]}"]
    if "person" in c.pii:
        lines.append(f"Attn: {c.person}")
    lines += ["", "Description                     Amount"]
    lines += [f"{d:<30}  {c.money(a)}" for d, _, a in c.items]
    lines += ["", f"Subtotal: {c.money(c.subtotal)}",
              f"{rng.choice(('VAT', 'Tax', 'Sales tax'))} {c.rate}%: {c.money(c.tax)}"]
    if c.with_total and c.extras & {"paid", "previous"}:
        lines.append(f"{rng.choice(('Invoice total', 'Total', 'Current charges'))}: "
                     f"{c.money(c.total)}")
        lines += _balance_lines(c, ": ")
    elif c.with_total:
        label = _label(rng, ("Total", "Amount due", "Balance due", "Grand total", "Total due",
                             "Invoice total", "TOTAL"), _RARE_TOTAL)
        lines.append(f"{label}: {c.money(c.total)}")
    lines += c.currency_line()
    if "iban" in c.pii:
        lines.append(f"IBAN: {c.iban}")
    lines.append(rng.choice(("Thank you for your business.", "Payment terms: 30 days net.")))
    return lines


def _table(c: _Ctx) -> list[str]:
    rng = c.rng
    fmts = ("iso", "dmy_slash")
    fmt = rng.choice(fmts)
    cols = [(_label(rng, ("Invoice #", "Invoice No", "Number", "Document No"),
                    ("Ref", "Bill No", "Invoice ID", "No.")), c.number),
            (_label(rng, ("Date", "Invoice Date", "Issue Date"),
                    ("Tax point", "Billing date", "Doc. date")), _fmt_date(c.issued, fmt))]
    if "ref" in c.extras:
        cols.append((rng.choice(("Ref. invoice", "Replaces")), c.ref_number))
    if "period" in c.extras:
        cols.append(("Period", _period(c, fmt)))
    if "second_date" in c.extras:
        cols.insert(2, (rng.choice(("Delivery Date", "Delivery", "Ship Date")),
                        c.fmt_date(c.other_date, fmts)))
    if rng.random() < 0.7:
        cols.append(("Due", c.fmt_date(c.issued + timedelta(days=30), fmts)))
    if rng.random() < 0.6:
        cols.append(("Customer No", c.customer_no))
    if rng.random() < 0.5:
        cols.append(("PO Number", c.po))
    rng.shuffle(cols)
    lines = [c.printed, c.address()]
    if "phone" in c.pii:
        lines.append(f"Phone: {c.phone}")
    lines += [rng.choice(("TAX INVOICE", "INVOICE")),
              " | ".join(h for h, _ in cols), " | ".join(v for _, v in cols),
              f"Bill to: {_CUSTOMERS[c.tenant]}"]
    if "person" in c.pii:
        lines.append(f"Attn: {c.person}")
    if "email" in c.pii:
        lines.append(f"E-mail: {c.email}")
    lines += ["", "Description | Qty | Amount"]
    lines += [f"{d} | {q} | {c.money(a)}" for d, q, a in c.items]
    heads = ["Subtotal", f"{rng.choice(('VAT', 'Tax'))} {c.rate}%"]
    vals = [c.money(c.subtotal), c.money(c.tax)]
    if c.with_total and c.extras & {"paid", "previous"}:
        heads.append(rng.choice(("Invoice total", "Total")))
        vals.append(c.money(c.total))
        due = c.total
        if "previous" in c.extras:
            heads.append("Previous balance")
            vals.append(c.money(c.previous))
            due += c.previous
        if "paid" in c.extras:
            heads.append(rng.choice(("Paid", "Amount paid")))
            vals.append(c.money(c.paid))
            due -= c.paid
        heads.append(rng.choice(("Balance due", "Amount due")))
        vals.append(c.money(round(due, c.nd())))
    elif c.with_total:
        heads.append(_label(rng, ("Amount due", "Total", "Balance due", "Grand total"),
                            _RARE_TOTAL))
        vals.append(c.money(c.total))
    lines += ["", " | ".join(heads), " | ".join(vals)]
    lines += c.currency_line()
    if "iban" in c.pii:
        lines.append(f"Bank: IBAN {c.iban}")
    return lines


def _letter(c: _Ctx) -> list[str]:
    rng = c.rng
    issued = c.fmt_date(c.issued, ("long_dmy", "long_mdy", "iso"))
    due = c.fmt_date(c.issued + timedelta(days=30), ("long_dmy", "long_mdy", "iso"))
    lines = [f"From: {c.printed}", c.address(), f"To: {_CUSTOMERS[c.tenant]}"]
    if "second_date" in c.extras:  # the letter is written a few days after the invoice
        place = rng.choice(_CITIES[c.vendor.country])
        lines.append(f"{place}, {c.fmt_date(c.other_date, ('long_dmy', 'long_mdy', 'iso'))}")
    if "person" in c.pii:
        lines.append(f"Attn: {c.person}")
    lines += ["", "Dear Sir or Madam,", ""]
    total = c.money(c.total)
    v = rng.randrange(3)
    if not c.with_total:
        lines.append(f"Please find our invoice {c.number} dated {issued} attached. "
                     f"Payment is due by {due}.")
    elif v == 0:
        lines.append(f"Please find our invoice {c.number} dated {issued} for the amount of "
                     f"{total}.")
        lines.append(f"Payment is due by {due}.")
    elif v == 1:
        lines.append(f"We enclose invoice no. {c.number} of {issued}. The total amount of "
                     f"{total} (including VAT of {c.money(c.tax)}) is due by {due}.")
    else:
        lines.append(f"This letter accompanies invoice {c.number}, issued on {issued}, "
                     f"totalling {total}. Your order reference is {c.po}.")
    if c.with_total and "paid" in c.extras:
        rest = c.money(round(c.total - c.paid, c.nd()))
        lines.append(f"We have already received a payment of {c.money(c.paid)}, so the "
                     f"remaining {rest} is outstanding.")
    if c.with_total and "previous" in c.extras:
        owed = c.money(round(c.total + c.previous, c.nd()))
        lines.append(f"Together with the previous balance of {c.money(c.previous)}, "
                     f"{owed} is now outstanding.")
    if "ref" in c.extras:
        lines.append(f"This invoice replaces our invoice {c.ref_number}, which is void.")
    if "period" in c.extras:
        lines.append(f"It covers the period {_period(c, 'iso')}.")
    lines += c.currency_line()
    if "iban" in c.pii:
        lines.append(f"Please remit payment to IBAN {c.iban}.")
    if "email" in c.pii:
        lines.append(f"Questions? Write to {c.email}.")
    if "phone" in c.pii:
        lines.append(f"Or call us on {c.phone}.")
    lines += ["", "Kind regards,", "Accounts Receivable", c.printed]
    return lines


def _european(c: _Ctx) -> list[str]:
    rng = c.rng
    lines = [c.printed, c.address(), rng.choice(("RECHNUNG", "Rechnung", "Facture"))]
    meta = [rng.choice(("Rechnung Nr. {}", "Rechnungsnummer: {}", "Facture n° {}"))
            .format(c.number),
            rng.choice(("Datum: {}", "Rechnungsdatum: {}", "Date: {}"))
            .format(_fmt_date(c.issued, "dmy_dot")),
            f"Kundennummer: {c.customer_no}"]
    if rng.random() < 0.6:
        meta.append("Lieferdatum: " + _fmt_date(c.issued - timedelta(days=rng.randrange(1, 9)),
                                                "dmy_dot"))
    if rng.random() < 0.5:
        meta.append(f"Bestellnummer: {c.po}")
    if "ref" in c.extras:
        meta.append(f"{rng.choice(('Bezug: Rechnung', 'Storno zu Rechnung'))} {c.ref_number}")
    if "period" in c.extras:
        meta.append(f"Leistungszeitraum: {_period(c, 'dmy_dot')}")
    rng.shuffle(meta)
    lines += meta
    if "phone" in c.pii:
        lines.append(f"Telefon: {c.phone}")
    if "email" in c.pii:
        lines.append(f"E-Mail: {c.email}")
    if "person" in c.pii:
        lines.append(f"Attn: {c.person}")
    lines.append("")
    lines += [f"{q} x {d}  {c.money(a)}" for d, q, a in c.items]
    lines += ["", f"Nettobetrag: {c.money(c.subtotal)}", f"MwSt {c.rate}%: {c.money(c.tax)}"]
    if c.with_total:
        label = rng.choice(("Gesamtbetrag", "Rechnungsbetrag", "Endbetrag", "TOTAL TTC",
                            "Summe"))
        lines.append(f"{label}: {c.money(c.total)}")
        if "previous" in c.extras:
            lines.append(f"Saldovortrag: {c.money(c.previous)}")
        if "paid" in c.extras:
            lines.append(f"{rng.choice(('Anzahlung', 'Bereits bezahlt'))}: "
                         f"{c.money(c.paid)}")
        if c.extras & {"paid", "previous"}:
            due = c.total + c.previous * ("previous" in c.extras) - c.paid * ("paid" in c.extras)
            lines.append(f"{rng.choice(('Zu zahlen', 'Restbetrag'))}: "
                         f"{c.money(round(due, c.nd()))}")
    lines += c.currency_line()
    lines.append("Zahlbar bis: " + _fmt_date(c.issued + timedelta(days=14), "dmy_dot"))
    if "iban" in c.pii:
        lines.append(f"IBAN: {c.iban}")
    return lines


def _compact(c: _Ctx) -> list[str]:
    rng = c.rng
    lines = [c.printed, rng.choice(_CITIES[c.vendor.country])]
    if "phone" in c.pii:
        lines.append(f"TEL {c.phone}")
    lines.append(f"{c.fmt_date(c.issued, ('iso', 'dmy_slash'))} "
                 f"{rng.randrange(7, 22):02d}:{rng.randrange(60):02d}")
    lines.append(rng.choice(("No {}", "#{}", "Receipt {}", "Bon {}")).format(c.number))
    lines += [f"{q}x {d[:18]} {c.money(a)}" for d, q, a in c.items]
    lines += [f"SUB {c.money(c.subtotal)}", f"TAX {c.rate}% {c.money(c.tax)}"]
    if c.with_total:
        lines.append(f"{rng.choice(('TOTAL', 'TOTAL TTC', 'SUM', 'AMOUNT DUE'))} "
                     f"{c.money(c.total)}")
    lines += c.currency_line()
    if c.with_total and "paid" in c.extras:  # cash handed over and change given
        lines += [f"CASH {c.money(c.paid)}", f"CHANGE {c.money(round(c.paid - c.total, c.nd()))}"]
    else:
        lines.append(rng.choice(("CASH", f"CARD ****{rng.randrange(1000, 10000)}")))
    if "person" in c.pii:
        lines.append(f"SERVED BY {c.person}")
    if "email" in c.pii:
        lines.append(c.email)
    lines.append("THANK YOU")
    return lines


_BUILDERS = {"header": _header, "table": _table, "letter": _letter, "european": _european,
             "compact": _compact}


def _total(rng: random.Random, currency: str) -> float:
    value = min(max(rng.lognormvariate(7.8, 1.3), 5.0), 400000.0)
    return float(round(value)) if currency == "JPY" else round(value, 2)


def _split(rng: random.Random, amount: float, k: int, currency: str) -> list[float]:
    nd = 0 if currency == "JPY" else 2
    weights = [rng.uniform(0.2, 1.0) for _ in range(k)]
    parts = [round(amount * w / sum(weights), nd) for w in weights[:-1]]
    parts.append(round(amount - sum(parts), nd))
    return parts


def _garble(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    start = max(2, len(lines) // 2)
    for i in range(start, len(lines)):
        lines[i] = "".join(ch if ch == " " or rng.random() > 0.3 else rng.choice("#@%&?~*")
                           for ch in lines[i])
    return "\n".join(lines)


# --------------------------------------------------------------------------- OCR noise

# what OCR confuses: (printed, read) -- letters read as digits in words, digits read as
# letters in numbers, and rn/m both ways
_WORD_SWAPS = (("O", "0"), ("o", "0"), ("l", "1"), ("I", "1"), ("S", "5"), ("s", "5"),
               ("B", "8"), ("rn", "m"), ("m", "rn"))
_DIGIT_SWAPS = (("0", "O"), ("1", "l"), ("5", "S"), ("8", "B"))
_ID_SWAPS = (*_DIGIT_SWAPS, ("O", "0"), ("I", "1"), ("S", "5"), ("B", "8"))
_NOISE_WEIGHTS = {"ocr_word": 2.0, "ocr_label": 2.5, "ocr_name": 1.5, "ocr_total": 5.0,
                  "ocr_invoice_number": 3.5, "ocr_date": 3.5, "space_drop": 1.5,
                  "space_double": 1.5, "line_join": 1.2, "line_break": 1.2}
_LABEL_WORDS = frozenset({
    "invoice", "inv", "total", "date", "amount", "due", "subtotal", "sub", "balance", "number",
    "vat", "tax", "issued", "issue", "grand", "document", "customer", "description", "rechnung",
    "rechnungsnummer", "datum", "rechnungsdatum", "gesamtbetrag", "rechnungsbetrag", "summe",
    "endbetrag", "nettobetrag", "mwst", "kundennummer", "facture", "receipt", "bill", "paid",
    "previous", "delivery", "currency", "amounts", "payment", "dated",
})


def _confuse(rng: random.Random, s: str, swaps: tuple[tuple[str, str], ...]) -> str | None:
    """``s`` with one OCR confusion applied, or None when none applies."""
    options = [(i, a, b) for a, b in swaps for i in range(len(s)) if s.startswith(a, i)]
    if not options:
        return None
    i, a, b = rng.choice(options)
    return s[:i] + b + s[i + len(a):]


def _find_all(text: str, needles: list[str]) -> list[tuple[int, int]]:
    out = []
    for needle in needles:
        start = text.find(needle) if needle else -1
        while start >= 0:
            out.append((start, start + len(needle)))
            start = text.find(needle, start + 1)
    return out


def _free(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return not any(s < end and start < e for s, e in spans)


def _noise_op(rng: random.Random, text: str, kind: str, fields: dict[str, list[str]],
              pii: list[str]) -> str | None:
    """Apply one kind of noise; None when it finds nothing to apply to."""
    pii_spans = _find_all(text, pii)
    protected = pii_spans + _find_all(text, [s for v in fields.values() for s in v])
    if kind in fields:  # confuse a character inside one printed occurrence of a field value
        spans = [sp for sp in _find_all(text, fields[kind]) if _free(*sp, pii_spans)]
        if not spans:
            return None
        start, end = spans[-1] if kind == "ocr_total" else rng.choice(spans)
        swaps = {"ocr_name": _WORD_SWAPS, "ocr_invoice_number": _ID_SWAPS}.get(kind,
                                                                              _DIGIT_SWAPS)
        new = _confuse(rng, text[start:end], swaps)
        return None if new is None else text[:start] + new + text[end:]
    if kind in ("ocr_word", "ocr_label"):
        words = [m for m in re.finditer(r"[A-Za-z]{2,}", text) if _free(*m.span(), protected)
                 and (m.group(0).lower() in _LABEL_WORDS) == (kind == "ocr_label")]
        rng.shuffle(words)
        for m in words:
            new = _confuse(rng, m.group(0), _WORD_SWAPS)
            if new is not None:
                return text[:m.start()] + new + text[m.end():]
        return None
    if kind in ("space_drop", "space_double"):
        # space_drop runs two words together ("InvoiceDate", "Date:March")
        pat = r"(?<=[A-Za-z0-9:.]) (?=[A-Za-z])" if kind == "space_drop" else r"(?<=\S) (?=\S)"
        spots = [m.start() for m in re.finditer(pat, text) if _free(m.start(), m.end(), protected)]
        if not spots:
            return None
        for i in sorted(rng.sample(spots, min(len(spots), rng.randrange(1, 4))), reverse=True):
            text = text[:i] + ("" if kind == "space_drop" else "  ") + text[i + 1:]
        return text
    if kind == "line_break":  # a spurious line break ("Total:" / "1,440.00 EUR")
        spots = [m.start() for m in re.finditer(r"(?<=\S) (?=\S)", text)
                 if _free(m.start(), m.end(), protected)]
        if not spots:
            return None
        i = rng.choice(spots)
        return text[:i] + "\n" + text[i + 1:]
    # line_join: a lost line break runs two neighbouring non-empty lines together
    lines = text.split("\n")
    joinable = [i for i in range(len(lines) - 1) if lines[i].strip() and lines[i + 1].strip()
                and not any(p in lines[i] or p in lines[i + 1] for p in pii)]
    if not joinable:
        return None
    i = rng.choice(joinable)
    lines[i:i + 2] = [f"{lines[i]} {lines[i + 1]}"]
    return "\n".join(lines)


def _add_noise(rng: random.Random, text: str, fields: dict[str, list[str]],
               pii: list[str]) -> tuple[str, tuple[str, ...]]:
    """1-3 kinds of OCR noise; returns the new text and the kinds actually applied."""
    kinds = list(_NOISE_WEIGHTS)
    weights = list(_NOISE_WEIGHTS.values())
    wanted = rng.choices(kinds, weights=weights, k=1 + (rng.random() < 0.6)
                         + (rng.random() < 0.3))
    applied: list[str] = []
    for kind in dict.fromkeys(wanted):
        new = _noise_op(rng, text, kind, fields, pii)
        if new is not None and new != text:
            text = new
            applied.append(kind)
    return text, tuple(applied)


def _make_invoice(rng: random.Random, inv_id: str, tenant: str,
                  vendors: list[Vendor]) -> Invoice:
    vendor = rng.choice(vendors)
    layout = rng.choice(LAYOUTS)
    currency = vendor.currency if rng.random() < 0.9 else rng.choice(CURRENCIES)
    issued = date(2023, 1, 1) + timedelta(days=rng.randrange(730))
    total = _total(rng, currency)
    rate = rng.choice((0, 7, 10, 19, 20))
    nd = 0 if currency == "JPY" else 2
    subtotal = round(total / (1 + rate / 100), nd)
    tax = round(total - subtotal, nd)
    items = [(rng.choice(_ITEMS), rng.randrange(1, 12), a)
             for a in _split(rng, subtotal, rng.randrange(1, 4), currency)]
    if layout == "european":
        style = "space" if rng.random() < 0.3 else "eu"
        mark = rng.choice(("code_suffix", "symbol_suffix", "none"))
    elif layout == "compact":
        style = "plain"
        mark = rng.choice(("code_suffix", "symbol", "none"))
    else:
        r = rng.random()
        style = "us"
        if currency in ("EUR", "CHF") and r < 0.4:
            style = "eu" if r < 0.25 else "space"
        elif r < 0.06:
            style = "space"
        mark = rng.choice(("symbol", "code_suffix", "code_prefix", "none"))
    if mark.startswith("symbol") and currency == "CHF":
        mark = "code_prefix"
    pii: set[str] = set()
    if rng.random() < 0.25:
        pii = {k for k in PII_KINDS if rng.random() < 0.5 and (k != "iban" or vendor.iban)}
        pii = pii or {"email"}
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    domain = vendor.name.split(" ")[0].lower() + rng.choice((".com", ".example", ".co"))
    cc = _PHONE_CC[vendor.country]
    malformed = rng.random() < 0.05
    kind = rng.choice(("no_total", "truncated", "garbled")) if malformed else ""
    printed = _printed_name(rng, vendor.name)
    if layout == "compact" and rng.random() < 0.5:
        printed = printed.upper()
    extras: set[str] = set()
    if rng.random() < 0.10:
        extras.add("paid")
    if layout != "compact" and rng.random() < 0.07:
        extras.add("previous")
    if layout in ("header", "table", "letter") and rng.random() < 0.3:
        extras.add("second_date")
    if layout != "compact" and rng.random() < 0.06:
        extras.add("ref")
    if layout != "compact" and rng.random() < 0.08:
        extras.add("period")
    ref_number = _invoice_number(rng, issued - timedelta(days=rng.randrange(20, 90)), layout)
    if layout == "compact":  # cash handed over: the next round amount above the total
        step = 1000 if currency == "JPY" else rng.choice((10, 20, 50, 100))
        paid = float((int(total // step) + 1) * step)
    else:  # a deposit
        paid = round(total * rng.choice((0.1, 0.2, 0.25, 0.3, 0.5)), nd)
    previous = _total(rng, currency)
    other_date = issued + (timedelta(days=rng.randrange(1, 6)) if layout == "letter"
                           else -timedelta(days=rng.randrange(1, 10)))
    ctx = _Ctx(
        rng=rng, vendor=vendor, printed=printed, tenant=tenant,
        number=_invoice_number(rng, issued, layout), issued=issued, currency=currency,
        total=total, subtotal=subtotal, tax=tax, rate=rate, items=items, style=style,
        mark=mark, pii=pii, person=f"{first} {last}",
        email=f"{first}.{last}@{domain}".lower(),
        phone=f"+{cc} {rng.randrange(10, 100)} {rng.randrange(1000, 10000)} "
              f"{rng.randrange(1000, 10000)}",
        iban=vendor.iban or "", po=f"PO-{rng.randrange(10000, 99999)}",
        customer_no=rng.choice(("C-{}", "KD-{}", "CUST{}")).format(rng.randrange(1000, 99999)),
        with_total=kind != "no_total", extras=frozenset(extras), ref_number=ref_number,
        paid=paid, previous=previous, other_date=other_date,
    )
    text = "\n".join(_BUILDERS[layout](ctx)) + "\n"
    date_strs = {_fmt_date(issued, f) for f in ("iso", "dmy_slash", "dmy_dot", "long_dmy",
                                                "long_mdy")}
    if kind == "truncated":
        text = text[: int(len(text) * rng.uniform(0.3, 0.6))]
    elif kind == "garbled":
        text = _garble(rng, text)
    marks = {currency, _SYMBOL[currency].strip()}
    truth = Truth(
        vendor_id=vendor.id,
        vendor_name=printed,
        invoice_number=ctx.number if ctx.number in text else None,
        invoice_date=issued.isoformat() if any(s in text for s in date_strs) else None,
        currency=currency if any(m in text for m in marks) else None,
        total=total if kind != "no_total" and ctx.money(total) in text else None,
    )
    noise: tuple[str, ...] = ()
    if rng.random() < NOISE_RATE:
        pii_strs = [s for k, s in (("email", ctx.email), ("phone", ctx.phone),
                                   ("iban", ctx.iban), ("person", ctx.person)) if k in pii]
        fields = {"ocr_name": [printed], "ocr_invoice_number": [ctx.number],
                  "ocr_date": sorted(date_strs, key=len, reverse=True),
                  "ocr_total": [_fmt_number(total, currency, style)]}
        text, noise = _add_noise(rng, text, fields, pii_strs)
    return Invoice(id=inv_id, tenant=tenant, text=text, layout=layout, truth=truth,
                   pii=tuple(k for k in PII_KINDS if k in pii), malformed=malformed,
                   noise=noise)


def _corpus(n: int, seed: int, prefix: str) -> list[Invoice]:
    rng = random.Random(seed)
    masters = {t: vendor_master(t) for t in TENANTS}
    counters = dict.fromkeys(TENANTS, 0)
    out: list[Invoice] = []
    for _ in range(n):
        tenant = rng.choices(TENANTS, weights=(0.45, 0.35, 0.20))[0]
        counters[tenant] += 1
        inv_id = f"{prefix}{tenant}-{counters[tenant]:04d}"
        out.append(_make_invoice(rng, inv_id, tenant, masters[tenant]))
    return out


def make_corpus(n: int = 540, *, seed: int = 7) -> list[Invoice]:
    """The evaluation corpus: ids "acme-0001", "globex-0001", ..."""
    return _corpus(n, seed, "")


def training_corpus(n: int = 1500, *, seed: int = 1234) -> list[Invoice]:
    """A disjoint training corpus (different seed; ids "train-acme-0001", ...)."""
    return _corpus(n, seed, "train-")


# --------------------------------------------------------------------------- drift scenario

#: A layout neither corpus has: a marketplace's e-mail receipt (drift tests and benchmarks).
NEW_LAYOUT = "marketplace"


def _marketplace(rng: random.Random, inv: Invoice) -> str:
    t = inv.truth
    assert t.currency is not None and t.total is not None
    amount = _fmt_number(t.total, t.currency, "us")
    lines = [rng.choice(("From: receipts@marketplace.example", "From: no-reply@shop.example")),
             f"Subject: Your order with {t.vendor_name} - invoice {t.invoice_number}", "",
             rng.choice(("Hello,", "Hi there,", "Dear customer,")), "",
             f"thank you for your order from {t.vendor_name}, sold via our marketplace.",
             f"Invoice {t.invoice_number} was issued on {t.invoice_date}.", "",
             f"Order total: {amount} {t.currency}",
             rng.choice(("Paid with card.", "Payment by invoice, due in 14 days.",
                         "Paid with marketplace credit.")), "",
             "Questions? Reply to this e-mail.", "-- the marketplace team"]
    return "\n".join(lines) + "\n"


def shifted_corpus(n: int = 500, *, seed: int = 99,
                   currencies: tuple[str, ...] = ("JPY", "CHF")) -> list[Invoice]:
    """Invoices the evaluation corpus does not look like: printed in :data:`NEW_LAYOUT` and
    in ``currencies`` only (a currency mix far from the usual one) — what a drift monitor
    should notice (ids "shift-acme-0001", ...). Truth is the meant values, as elsewhere."""
    rng = random.Random(f"shifted:{seed}")
    masters = {t: vendor_master(t) for t in TENANTS}
    counters = dict.fromkeys(TENANTS, 0)
    out: list[Invoice] = []
    while len(out) < n:
        tenant = rng.choices(TENANTS, weights=(0.45, 0.35, 0.20))[0]
        base = _make_invoice(rng, "", tenant, masters[tenant])
        t = base.truth
        if (t.currency not in currencies or t.total is None or t.invoice_number is None
                or t.invoice_date is None or base.noise):
            continue
        counters[tenant] += 1
        out.append(Invoice(id=f"shift-{tenant}-{counters[tenant]:04d}", tenant=tenant,
                           text=_marketplace(rng, base), layout=NEW_LAYOUT, truth=t, pii=(),
                           malformed=False))
    return out
