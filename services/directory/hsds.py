"""The directory in and out of Open Referral HSDS 3.0 (Human Services Data Specification).

An agency is an HSDS ``organization``:

- ``id``: the agency's record id (a UUID derived from the agency id); the agency id itself is
  an ``organization_identifiers`` entry of scheme ``ketnoi``;
- ``name`` is the Vietnamese name, ``alternate_name`` the English one;
- its kind is an ``attributes`` entry whose ``taxonomy_term`` comes from the taxonomy
  ``ketnoi-agency-kind`` (code: the ``AgencyKind`` value), and whether it is active one from
  ``ketnoi-agency-status`` (``active``/``inactive``);
- its jurisdiction is the address of its one ``location``: ``country`` (ISO 3166-1 alpha-2),
  ``state_province`` (the province slug, or ``*`` for a national agency), ``city`` (the
  district); its postal address is ``address_1``;
- its contact: ``email``, ``website``, and one ``phones`` entry;
- each service it offers is an HSDS ``service`` with an attribute from the taxonomy
  ``ketnoi-service-type`` (code: the ``ServiceType`` value), ``status`` active or inactive.

The export is an HSDS ``organization_list`` page holding every agency. The import takes such a
page, a list of organizations or one organization; it reads the kind and services from the
taxonomies above, and accepts a province written as a name ("Đồng Tháp" -> ``dong-thap``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid5

from pydantic import ValidationError

from contracts.directory import AgencyContact, AgencyDetails, agency_record_id
from contracts.envelope import AGENCY_ID_PATTERN, KETNOI_NAMESPACE
from contracts.vocabulary import AgencyKind, ServiceType
from services.directory.application import DirectoryService
from services.directory.domain import Agency
from services.runtime.aggregate import CommandContext

HSDS_VERSION = "3.0"
ID_SCHEME = "ketnoi"
ID_TYPE = "agency_id"
KIND_TAXONOMY = "ketnoi-agency-kind"
STATUS_TAXONOMY = "ketnoi-agency-status"
SERVICE_TAXONOMY = "ketnoi-service-type"


class HsdsError(ValueError):
    """An HSDS document Ketnoi cannot read; the message names the organization and field."""


@dataclass(frozen=True)
class ImportedAgency:
    agency_id: str
    details: AgencyDetails
    active: bool
    skipped_services: tuple[str, ...] = ()


# -- export -----------------------------------------------------------------------------------


def export_organizations(agencies: Iterable[Agency]) -> dict[str, Any]:
    """Every agency as one HSDS ``organization_list`` page."""
    contents = [organization(a) for a in agencies]
    return {
        "total_items": len(contents),
        "total_pages": 1,
        "page_number": 1,
        "size": len(contents),
        "first_page": True,
        "last_page": True,
        "empty": not contents,
        "contents": contents,
    }


def organization(agency: Agency) -> dict[str, Any]:
    """One agency as an HSDS organization with its services."""
    d = agency.current
    org_id = str(agency.id)

    def child(what: str) -> str:
        return str(uuid5(agency.id, what))

    status = "active" if agency.active else "inactive"
    location_id = child("location")
    org: dict[str, Any] = {
        "id": org_id,
        "name": d.name_vi,
        "alternate_name": d.name_en,
        "description": f"{d.name_en}: {_label(d.kind)}, {_jurisdiction(d)}.",
        "email": d.contact.email,
        "website": d.contact.website,
        "organization_identifiers": [
            {
                "id": child("identifier"),
                "organization_id": org_id,
                "identifier_scheme": ID_SCHEME,
                "identifier_type": ID_TYPE,
                "identifier": agency.agency_id,
            }
        ],
        "phones": [{"id": child("phone"), "organization_id": org_id, "number": d.contact.phone}]
        if d.contact.phone
        else [],
        "locations": [
            {
                "id": location_id,
                "location_type": "physical",
                "organization_id": org_id,
                "name": d.name_en,
                "addresses": [
                    {
                        "id": child("address"),
                        "location_id": location_id,
                        "address_1": d.contact.address or "",
                        "city": d.district or "",
                        "state_province": d.province,
                        "postal_code": "",
                        "country": d.country,
                        "address_type": "physical",
                    }
                ],
            }
        ],
        "attributes": [
            _attribute(agency.id, "organization", KIND_TAXONOMY, d.kind.value, _label(d.kind)),
            _attribute(agency.id, "organization", STATUS_TAXONOMY, status, status),
        ],
        "services": [
            {
                "id": child(f"service/{s.value}"),
                "organization_id": org_id,
                "name": _label(s),
                "status": status,
                "attributes": [
                    _attribute(
                        uuid5(agency.id, f"service/{s.value}"),
                        "service",
                        SERVICE_TAXONOMY,
                        s.value,
                        _label(s),
                    )
                ],
            }
            for s in d.services
        ],
    }
    return org


def _attribute(link_id: UUID, entity: str, taxonomy: str, code: str, name: str) -> dict[str, Any]:
    term_id = str(uuid5(KETNOI_NAMESPACE, f"hsds/{taxonomy}/{code}"))
    return {
        "id": str(uuid5(link_id, f"attribute/{taxonomy}")),
        "link_id": str(link_id),
        "link_type": taxonomy,
        "link_entity": entity,
        "taxonomy_term_id": term_id,
        "value": code,
        "taxonomy_term": {
            "id": term_id,
            "code": code,
            "name": name,
            "description": f"{name} ({taxonomy})",
            "taxonomy": taxonomy,
        },
    }


def _label(value: AgencyKind | ServiceType) -> str:
    return value.value.replace("_", " ").capitalize()


def _jurisdiction(d: AgencyDetails) -> str:
    where = "national" if d.province == "*" else d.province
    return f"{where}, {d.country}"


# -- import -----------------------------------------------------------------------------------


def parse_organizations(document: Any) -> list[ImportedAgency]:
    """Read the agencies of an HSDS document; raises HsdsError naming what is wrong where."""
    if isinstance(document, dict) and "contents" in document:
        orgs = document["contents"]
    elif isinstance(document, dict):
        orgs = [document]
    else:
        orgs = document
    if not isinstance(orgs, list) or not all(isinstance(o, dict) for o in orgs):
        msg = "expected an HSDS organization, a list of them, or an organization_list page"
        raise HsdsError(msg)
    parsed = [_agency_of(org, index) for index, org in enumerate(orgs)]
    seen: set[str] = set()
    for agency in parsed:
        if agency.agency_id in seen:
            msg = f"the agency id {agency.agency_id!r} appears twice"
            raise HsdsError(msg)
        seen.add(agency.agency_id)
    return parsed


def _agency_of(org: dict[str, Any], index: int) -> ImportedAgency:
    where = f"organization {index} ({org.get('name') or org.get('id') or '?'})"
    agency_id = next(
        (
            i.get("identifier")
            for i in org.get("organization_identifiers") or ()
            if i.get("identifier_scheme") == ID_SCHEME or i.get("identifier_type") == ID_TYPE
        ),
        None,
    )
    if not agency_id:
        msg = f"{where}: no organization_identifiers entry of scheme {ID_SCHEME!r}"
        raise HsdsError(msg)
    if not re.match(AGENCY_ID_PATTERN, str(agency_id)) or len(str(agency_id)) > 120:
        msg = f"{where}: the agency id {agency_id!r} must be a lower-case slug"
        raise HsdsError(msg)
    kind_code = _term(org.get("attributes"), KIND_TAXONOMY)
    if kind_code not in {k.value for k in AgencyKind}:
        msg = (
            f"{where}: its kind must be an attribute from the taxonomy {KIND_TAXONOMY!r}, "
            f"one of {', '.join(k.value for k in AgencyKind)} (got {kind_code!r})"
        )
        raise HsdsError(msg)
    address = _first_address(org)
    services: list[ServiceType] = []
    skipped: list[str] = []
    statuses: list[str] = []
    for service in org.get("services") or ():
        statuses.append(str(service.get("status") or "active"))
        code = _term(service.get("attributes"), SERVICE_TAXONOMY) or _slug(
            str(service.get("name") or ""), "_"
        )
        if code in {s.value for s in ServiceType}:
            if ServiceType(code) not in services:
                services.append(ServiceType(code))
        else:
            skipped.append(str(service.get("name") or service.get("id") or "?"))
    status = _term(org.get("attributes"), STATUS_TAXONOMY)
    # No status attribute: active unless every service it lists is not.
    active = status == "active" if status is not None else (not statuses or "active" in statuses)
    phones = org.get("phones") or ()
    province = str(address.get("state_province") or "")
    try:
        details = AgencyDetails(
            kind=AgencyKind(kind_code),
            name_vi=str(org.get("name") or ""),
            name_en=str(org.get("alternate_name") or org.get("name") or ""),
            country=str(address.get("country") or "").upper(),
            province=province if province == "*" else _slug(province, "-"),
            district=address.get("city") or None,
            services=tuple(services),
            contact=AgencyContact(
                phone=phones[0].get("number") if phones else None,
                email=org.get("email") or None,
                address=address.get("address_1") or None,
                website=org.get("website") or None,
            ),
        )
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        msg = f"{where}: check {fields} (country and state_province come from its address)"
        raise HsdsError(msg) from None
    return ImportedAgency(str(agency_id), details, active, tuple(skipped))


def _term(attributes: Any, taxonomy: str) -> str | None:
    for attribute in attributes or ():
        term = attribute.get("taxonomy_term") or {}
        if term.get("taxonomy") == taxonomy or attribute.get("link_type") == taxonomy:
            code = term.get("code") or attribute.get("value")
            return str(code) if code is not None else None
    return None


def _first_address(org: dict[str, Any]) -> dict[str, Any]:
    for location in org.get("locations") or ():
        for address in location.get("addresses") or ():
            if isinstance(address, dict):
                return address
    return {}


def _slug(text: str, separator: str) -> str:
    """'Đồng Tháp' -> 'dong-thap': lower case, no diacritics, words joined."""
    plain = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D"))
    ascii_only = "".join(c for c in plain if not unicodedata.combining(c)).lower()
    words = "".join(c if c.isalnum() else " " for c in ascii_only).split()
    return separator.join(words)


def import_agencies(
    directory: DirectoryService, ctx: CommandContext, agencies: Iterable[ImportedAgency]
) -> dict[str, str]:
    """Make the directory hold these agencies as given; returns agency id -> ``registered``,
    ``changed`` or ``unchanged``. Importing the same document again changes nothing."""
    outcomes = {}
    for agency in agencies:
        result = directory.ensure(ctx, agency.agency_id, agency.details, active=agency.active)
        outcomes[agency.agency_id] = str(result["outcome"])
    return outcomes


def organization_id(agency_id: str) -> str:
    """The HSDS organization id of an agency."""
    return str(agency_record_id(agency_id))
