"""The platform's seed data: OAuth client, prescribers, clinic, pharmacies, medicines.

These exact values are relied upon by the service's seed scripts (contract §1, §3).
They are plain frozen dataclasses; nothing here changes at runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OAuthClient:
    """A client-credentials OAuth client (contract §1a)."""

    client_id: str
    client_secret: str
    scope: str


@dataclass(frozen=True)
class Clinic:
    """A clinic: ``id`` is the internal id the API wants, ``display_id`` the dashboard's (§3)."""

    id: int
    display_id: str
    name: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "display_id": self.display_id, "name": self.name}


@dataclass(frozen=True)
class Prescriber:
    """A prescriber with login credentials and the secure PIN that signs prescriptions (§1b, §3)."""

    id: int
    email: str
    password: str
    secure_pin: str
    clinic_ids: tuple[int, ...]


@dataclass(frozen=True)
class Address:
    line1: str
    city: str
    post_code: str


@dataclass(frozen=True)
class Pharmacy:
    """A pharmacy contact of the prescriber, identified by its platform branch id (§3)."""

    branch_id: int
    name: str
    group: str
    email: str
    address: Address

    def to_json(self) -> dict[str, Any]:
        return {
            "branch_id": self.branch_id,
            "name": self.name,
            "group": self.group,
            "email": self.email,
            "address": {
                "line1": self.address.line1,
                "city": self.address.city,
                "post_code": self.address.post_code,
            },
        }


@dataclass(frozen=True)
class Medicine:
    """A dm+d virtual medicinal product; ``controlled_schedule`` is "2".."5" or None (§3)."""

    vpid: str
    description: str
    controlled_schedule: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "vpid": self.vpid,
            "description": self.description,
            "controlled_schedule": self.controlled_schedule,
        }


OAUTH_CLIENT = OAuthClient(
    client_id="erx-sandbox-client", client_secret="erx-sandbox-secret", scope="prescriptions"
)

CLINICS: tuple[Clinic, ...] = (
    Clinic(id=994, display_id="201334", name="Harley Street Weight Clinic"),
)

PRESCRIBERS: tuple[Prescriber, ...] = (
    Prescriber(
        id=5531,
        email="dr.jones@example.test",
        password="sandbox-jones-pass",
        secure_pin="481516",
        clinic_ids=(994,),
    ),
    Prescriber(
        id=5532,
        email="dr.patel@example.test",
        password="sandbox-patel-pass",
        secure_pin="234223",
        clinic_ids=(994,),
    ),
)

OTHER_GROUP = "All Other Pharmacies"
BOOTS_GROUP = "Boots"


def _pharmacy(branch_id: int, name: str, line1: str, city: str, post_code: str) -> Pharmacy:
    group = BOOTS_GROUP if name.startswith("Boots ") else OTHER_GROUP
    return Pharmacy(
        branch_id=branch_id,
        name=name,
        group=group,
        email=f"branch{branch_id}@pharmacy.example.test",
        address=Address(line1=line1, city=city, post_code=post_code),
    )


PHARMACIES: tuple[Pharmacy, ...] = (
    _pharmacy(17, "Marylebone Pharmacy", "48 Marylebone High Street", "London", "W1U 5HS"),
    _pharmacy(101, "Clifton Village Pharmacy", "7 Princess Victoria Street", "Bristol", "BS8 4BX"),
    _pharmacy(102, "Jesmond Pharmacy", "81 St George's Terrace", "Newcastle upon Tyne", "NE2 2SY"),
    _pharmacy(103, "Headingley Pharmacy", "22 Otley Road", "Leeds", "LS6 2AL"),
    _pharmacy(104, "Kings Heath Chemist", "140 High Street", "Birmingham", "B14 7LG"),
    _pharmacy(105, "Roath Pharmacy", "96 Albany Road", "Cardiff", "CF24 3RX"),
    _pharmacy(106, "Morningside Pharmacy", "211 Morningside Road", "Edinburgh", "EH10 4QP"),
    _pharmacy(107, "Byres Road Pharmacy", "320 Byres Road", "Glasgow", "G12 8AN"),
    _pharmacy(108, "Ecclesall Road Pharmacy", "410 Ecclesall Road", "Sheffield", "S11 8PX"),
    _pharmacy(109, "Lark Lane Pharmacy", "35 Lark Lane", "Liverpool", "L17 8US"),
    _pharmacy(110, "West Bridgford Pharmacy", "54 Central Avenue", "Nottingham", "NG2 5GR"),
    _pharmacy(111, "Jericho Pharmacy", "68 Walton Street", "Oxford", "OX2 6AG"),
    _pharmacy(112, "Mill Road Pharmacy", "175 Mill Road", "Cambridge", "CB1 3AN"),
    _pharmacy(113, "Heavitree Pharmacy", "19 Fore Street", "Exeter", "EX1 2QJ"),
    _pharmacy(114, "Southsea Pharmacy", "88 Albert Road", "Portsmouth", "PO5 2SN"),
    _pharmacy(115, "Hove Pharmacy", "42 George Street", "Hove", "BN3 3YB"),
    _pharmacy(116, "Clarendon Park Pharmacy", "61 Queens Road", "Leicester", "LE2 1TT"),
    _pharmacy(117, "Bishopthorpe Road Pharmacy", "43 Bishopthorpe Road", "York", "YO23 1NA"),
    _pharmacy(118, "Widcombe Pharmacy", "6 Widcombe Parade", "Bath", "BA2 4JT"),
    _pharmacy(119, "Uplands Pharmacy", "12 Uplands Crescent", "Swansea", "SA2 0PB"),
    _pharmacy(120, "Lisburn Road Pharmacy", "140 Lisburn Road", "Belfast", "BT9 6AJ"),
    _pharmacy(121, "Rosemount Pharmacy", "55 Rosemount Place", "Aberdeen", "AB25 2XD"),
    _pharmacy(122, "Broughty Ferry Pharmacy", "190 Brook Street", "Dundee", "DD5 1DQ"),
    _pharmacy(123, "Cold Bath Road Pharmacy", "27 Cold Bath Road", "Harrogate", "HG2 0NA"),
    _pharmacy(124, "Beverley Road Pharmacy", "301 Beverley Road", "Hull", "HU5 1LQ"),
    _pharmacy(125, "Unthank Road Pharmacy", "103 Unthank Road", "Norwich", "NR2 2PE"),
    _pharmacy(126, "Mutley Plain Pharmacy", "58 Mutley Plain", "Plymouth", "PL4 6LF"),
    _pharmacy(127, "Chorlton Pharmacy", "480 Barlow Moor Road", "Manchester", "M21 0BQ"),
    _pharmacy(128, "Wincheap Pharmacy", "33 Wincheap", "Canterbury", "CT1 3TB"),
    _pharmacy(129, "Hartshill Pharmacy", "150 Hartshill Road", "Stoke-on-Trent", "ST4 7NW"),
    _pharmacy(130, "Boots Manchester Market Street", "32 Market Street", "Manchester", "M1 1PL"),
    _pharmacy(131, "Boots Birmingham New Street", "67 New Street", "Birmingham", "B2 4DU"),
    _pharmacy(132, "Boots Leeds Briggate", "40 Briggate", "Leeds", "LS1 6HD"),
    _pharmacy(133, "Boots Glasgow Argyle Street", "200 Argyle Street", "Glasgow", "G2 8BU"),
    _pharmacy(134, "Boots Cardiff Queen Street", "36 Queen Street", "Cardiff", "CF10 2RG"),
    _pharmacy(135, "Boots Bristol Broadmead", "59 Broadmead", "Bristol", "BS1 3EA"),
    _pharmacy(136, "Boots London Regent Street", "44 Regent Street", "London", "W1B 5RA"),
    _pharmacy(137, "Boots Edinburgh Princes Street", "101 Princes Street", "Edinburgh", "EH2 3AA"),
    _pharmacy(138, "Lord Street Pharmacy", "412 Lord Street", "Southport", "PR9 0AG"),
    _pharmacy(139, "Penny Street Pharmacy", "29 Penny Street", "Lancaster", "LA1 1XF"),
)

MEDICINES: tuple[Medicine, ...] = (
    Medicine(
        "39929811000001101",
        "Semaglutide 250micrograms/0.19ml solution for injection 1.5ml pre-filled disposable devices",
        None,
    ),
    Medicine(
        "39929911000001106",
        "Semaglutide 1mg/0.75ml solution for injection 3ml pre-filled disposable devices",
        None,
    ),
    Medicine(
        "43003211000001108",
        "Tirzepatide 2.5mg/0.5ml solution for injection pre-filled disposable devices",
        None,
    ),
    Medicine(
        "43003311000001101",
        "Tirzepatide 5mg/0.5ml solution for injection pre-filled disposable devices",
        None,
    ),
    Medicine(
        "36447711000001109",
        "Liraglutide 6mg/ml solution for injection 3ml pre-filled disposable devices",
        None,
    ),
    Medicine("319984000", "Orlistat 120mg capsules", None),
    Medicine("317896006", "Metformin 500mg tablets", None),
    Medicine("323509004", "Amoxicillin 500mg capsules", None),
    Medicine("317331001", "Omeprazole 20mg gastro-resistant capsules", None),
    Medicine("320000009", "Atorvastatin 20mg tablets", None),
    Medicine("321944000", "Sertraline 50mg tablets", None),
    Medicine("320176004", "Salbutamol 100micrograms/dose inhaler CFC free", None),
    Medicine("324252006", "Ondansetron 4mg orodispersible tablets sugar free", None),
    Medicine("320148001", "Sildenafil 50mg tablets", None),
    Medicine("41944111000001103", "Finasteride 1mg tablets", None),
    Medicine("327096008", "Levonorgestrel 1.5mg tablets", None),
    Medicine("321211002", "Diazepam 2mg tablets", "4"),
    Medicine("322503009", "Morphine sulfate 10mg/5ml oral solution", "2"),
    Medicine("322773001", "Oxycodone 5mg capsules", "2"),
    Medicine("321217004", "Temazepam 10mg tablets", "3"),
)

BLOCKED_SCHEDULES = frozenset({"2", "3"})
"""Schedules that cannot be issued electronically (contract §2)."""

_PRESCRIBERS_BY_EMAIL = {p.email.lower(): p for p in PRESCRIBERS}
_PRESCRIBERS_BY_ID = {p.id: p for p in PRESCRIBERS}
_PHARMACIES_BY_BRANCH = {p.branch_id: p for p in PHARMACIES}
_MEDICINES_BY_VPID = {m.vpid: m for m in MEDICINES}


def prescriber_by_email(email: str) -> Prescriber | None:
    """The prescriber whose login email matches (case-insensitive), or None."""
    return _PRESCRIBERS_BY_EMAIL.get(email.strip().lower())


def prescriber_by_id(prescriber_id: int) -> Prescriber | None:
    """The prescriber with this platform id, or None."""
    return _PRESCRIBERS_BY_ID.get(prescriber_id)


def clinics_for(prescriber: Prescriber) -> list[Clinic]:
    """The clinics the prescriber may issue to (by internal id)."""
    return [c for c in CLINICS if c.id in prescriber.clinic_ids]


def clinic_by_id(clinic_id: int) -> Clinic | None:
    """The clinic with this internal id, or None."""
    return next((c for c in CLINICS if c.id == clinic_id), None)


def pharmacy_by_branch(branch_id: int) -> Pharmacy | None:
    """The pharmacy contact with this branch id, or None."""
    return _PHARMACIES_BY_BRANCH.get(branch_id)


def search_pharmacies(query: str | None) -> list[Pharmacy]:
    """Pharmacies whose name, group, city, postcode, email or branch id matches ``query``.

    Case-insensitive substring match; postcodes also match without spaces.
    An empty query returns every pharmacy.
    """
    q = (query or "").strip().lower()
    if not q:
        return list(PHARMACIES)
    compact = q.replace(" ", "")
    found = []
    for p in PHARMACIES:
        haystack = " ".join(
            (p.name, p.group, p.email, p.address.line1, p.address.city, p.address.post_code)
        ).lower()
        if (
            q in haystack
            or compact in p.address.post_code.replace(" ", "").lower()
            or q == str(p.branch_id)
        ):
            found.append(p)
    return found


def medicine_by_vpid(vpid: str) -> Medicine | None:
    """The medicine with this VPID, or None (unknown VPIDs are still accepted on issue)."""
    return _MEDICINES_BY_VPID.get(vpid)


def search_medicines(search: str | None) -> list[Medicine]:
    """Medicines whose description contains ``search`` (case-insensitive) or whose VPID starts with it."""
    q = (search or "").strip().lower()
    if not q:
        return list(MEDICINES)
    return [m for m in MEDICINES if q in m.description.lower() or m.vpid.startswith(q)]
