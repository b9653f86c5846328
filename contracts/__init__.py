"""The shared vocabulary of Ketnoi: enums, the event envelope and every event that crosses a
service boundary. Imports only pydantic and the standard library, so any service (or any
agency's own code) can decode any Ketnoi log knowing only this package.
"""

from contracts import audit as audit  # registers the audit events
from contracts import casework as casework  # registers the intake log's case work events
from contracts import consent as consent  # registers the consent events
from contracts import directory as directory  # registers the directory events
from contracts import erasure as erasure  # registers the erasure events
from contracts import intake as intake  # registers the intake events
from contracts import plan as plan  # registers the reintegration plan's events
from contracts import referral as referral  # registers the referral events
from contracts.envelope import (
    Actor,
    AgencyRef,
    CommandRecorded,
    Event,
    UnknownEventTypeError,
    event_types,
    resolve,
)

__all__ = [
    "Actor",
    "AgencyRef",
    "CommandRecorded",
    "Event",
    "UnknownEventTypeError",
    "audit",
    "casework",
    "consent",
    "directory",
    "erasure",
    "event_types",
    "intake",
    "plan",
    "referral",
    "resolve",
]
