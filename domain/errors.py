"""The one vocabulary of failure types that cross processes (Temporal `ApplicationError.type`).

Activities and the workflow raise them; the API maps each to a GraphQL code in one table
(`api/errors.py`), so a rename is a type error rather than a silent change of meaning.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    # Refusals of a request, decided by the workflow before anything changes.
    INVALID_INPUT = "InvalidInput"  # e.g. a blank reason
    ILLEGAL_TRANSITION = "IllegalTransition"  # the customer's state refuses the move
    EMAIL_MISMATCH = "EmailMismatch"  # a registration for an id whose customer has another email now
    EMAIL_CONFLICT = "EmailConflict"  # an email change refused (taken, or refused by Keycloak/Sumsub)
    REGISTRATION_REFUSED = "RegistrationRefused"  # the workflow of a registration nothing was created for
    # A request the workflow could not carry out now because a dependency did not answer: retry later.
    DEPENDENCY_UNAVAILABLE = "DependencyUnavailable"
    # Permanent failures of a side effect (activities): retrying would fail the same way.
    CUSTOMER_CONFLICT = "CustomerConflict"  # email or telegram handle owned by another customer
    NO_DEPOSIT_ACCOUNT = "NoDepositAccount"
    KEYCLOAK_REJECTED = "KeycloakRejected"
    KEYCLOAK_USER_CONFLICT = "KeycloakUserConflict"
    SUMSUB_REJECTED = "SumsubRejected"
