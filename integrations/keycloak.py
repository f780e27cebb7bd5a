"""Keycloak: the admin client the worker provisions users with (python-keycloak, our service account)."""

from __future__ import annotations

from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

from kit.settings import Settings

# The attribute on a Keycloak user that names the customer it belongs to (and reaches tokens as a claim).
CUSTOMER_ID_ATTRIBUTE = "customer_id"
# The realm role a customer's own user carries: the API lets such a token see that customer only.
CUSTOMER_ROLE = "customer"


def keycloak_admin(settings: Settings) -> KeycloakAdmin:
    """An admin client authenticated as our service account (client_credentials)."""
    connection = KeycloakOpenIDConnection(
        server_url=settings.keycloak_url.rstrip("/") + "/",
        realm_name=settings.keycloak_realm,
        client_id=settings.keycloak_client_id,
        client_secret_key=settings.keycloak_client_secret,
        timeout=10,
    )
    return KeycloakAdmin(connection=connection)
