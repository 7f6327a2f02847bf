"""The event types WorkOS sends (its "Event types" reference), so a misspelt trigger fails at start-up.

A type WorkOS adds later than this list is accepted when it is listed in ``WORKOS_EVENTS`` (the types
requested): naming it there says it is meant (see ``known_types``).
"""

from __future__ import annotations

from collections.abc import Mapping

from syncd.settings import get_list

_FAMILIES: dict[str, tuple[str, ...]] = {
    "authentication": ("email_verification_succeeded", "magic_auth_failed", "magic_auth_succeeded",
                       "mfa_succeeded", "oauth_failed", "oauth_succeeded", "passkey_failed", "passkey_succeeded",
                       "password_failed", "password_succeeded", "radar_risk_detected", "sso_failed",
                       "sso_succeeded"),
    "connection": ("activated", "deactivated", "deleted", "saml_certificate_renewal_required",
                   "saml_certificate_renewed"),
    "dsync": ("activated", "deleted", "group.created", "group.deleted", "group.updated", "group.user_added",
              "group.user_removed", "user.created", "user.deleted", "user.updated"),
    "email_verification": ("created",),
    "invitation": ("accepted", "created", "resent", "revoked"),
    "magic_auth": ("created",),
    "organization": ("created", "deleted", "updated"),
    "organization_domain": ("created", "deleted", "updated", "verification_failed", "verified"),
    "organization_membership": ("created", "deleted", "updated"),
    "organization_role": ("created", "deleted", "updated"),
    "password_reset": ("created", "succeeded"),
    "role": ("created", "deleted", "updated"),
    "session": ("created", "revoked"),
    "user": ("created", "deleted", "updated"),
}

KNOWN_TYPES: frozenset[str] = frozenset(f"{family}.{name}" for family, names in _FAMILIES.items() for name in names)


def known_types(environ: Mapping[str, str]) -> frozenset[str]:
    """``KNOWN_TYPES`` plus the types listed in ``WORKOS_EVENTS``."""
    return KNOWN_TYPES | frozenset(get_list(environ, "WORKOS_EVENTS"))


__all__ = ["KNOWN_TYPES", "known_types"]
