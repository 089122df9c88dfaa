"""How Customer.io knows a person: by ``id`` (the distinct_id) or, with ``IDENTIFY_BY_EMAIL``, by email;
and every identifier a person may have (deletes and suppressions reach them all).
"""

from __future__ import annotations

import re
from typing import Any

from ..state import PersonState
from .config import MappingConfig

__all__ = ["is_email", "known_identifiers", "person_identifiers"]


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def is_email(value: Any) -> bool:
    """True when ``value`` is a string shaped like an email address."""
    return isinstance(value, str) and len(value) <= 254 and _EMAIL.match(value) is not None


def person_identifiers(state: PersonState, config: MappingConfig) -> dict[str, str]:
    if config.identify_by_email and state.email_sent:
        return {"email": state.email_sent}
    return {"id": state.distinct_id}


def known_identifiers(distinct_id: str, person: PersonState) -> list[dict[str, str]]:
    """Every Customer.io identifier a person may have: its ids, and each email we know."""
    ids = [{"id": i} for i in dict.fromkeys((person.distinct_id, distinct_id))]
    emails = (person.email_sent, person.email, *(i for i in (person.distinct_id, distinct_id) if is_email(i)))
    seen: set[str] = set()
    for email in emails:
        if email and email.lower() not in seen:
            seen.add(email.lower())
            ids.append({"email": email})
    return ids
