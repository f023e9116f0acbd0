"""Who sees which tenant's images: Airflow does not authenticate plugin apps, so every route of the gallery
asks Airflow's auth manager who the caller is (the UI's session cookie or an API token, as Airflow's own API
does) and allows only the tenants ``[invokeai] tenant_access`` gives that user, by name or role."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from fastapi import HTTPException, status

ALL_TENANTS = "*"


def user_name(user: Any) -> str:
    getter = getattr(user, "get_name", None)
    return str(getter() if callable(getter) else getattr(user, "username", ""))


def user_roles(user: Any) -> set[str]:
    """The user's roles, whatever the auth manager (a simple-auth-manager user has one, FAB users a list)."""
    roles = getattr(user, "roles", None) or []
    names = {str(getattr(role, "name", role)) for role in roles}
    role = getattr(user, "role", None)
    if role:
        names.add(str(role).lower())
    return names


def allowed_tenants(user: Any, access: Mapping[str, Iterable[str]]) -> set[str]:
    """The tenants (or ``*``) the user may see: those of their name's entry and of each of their roles'."""
    keys = {user_name(user), *(f"role:{role}" for role in user_roles(user))}
    return {tenant for key in keys for tenant in access.get(key, ())}


def check_tenant_access(user: Any, tenant: str, access: Mapping[str, Iterable[str]]) -> None:
    """HTTP 403 unless the user may see the tenant's images."""
    allowed = allowed_tenants(user, access)
    if ALL_TENANTS not in allowed and tenant not in allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"user {user_name(user)!r} may not see tenant {tenant!r} ([invokeai] tenant_access)")


def visible_tenants(user: Any, access: Mapping[str, Iterable[str]], existing: Iterable[str]) -> list[str]:
    allowed = allowed_tenants(user, access)
    return sorted(t for t in existing if ALL_TENANTS in allowed or t in allowed)
