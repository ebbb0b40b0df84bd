"""The registry's errors, each carrying Confluent's HTTP status and ``error_code``.

Raised anywhere below the HTTP layer; :mod:`odradek.registry.app` turns every one into
Confluent's body ``{"error_code": ..., "message": ...}`` in one place.
"""

from __future__ import annotations

__all__ = [
    "FencedError",
    "RegistryError",
    "subject_not_found",
    "association_not_found",
    "association_exists",
    "association_for_subject_exists",
    "association_frozen",
    "invalid_association",
    "no_active_subject_version",
    "strong_association_exists",
    "version_not_found",
    "schema_not_found",
    "subject_soft_deleted",
    "subject_not_soft_deleted",
    "version_soft_deleted",
    "version_not_soft_deleted",
    "subject_compatibility_not_configured",
    "subject_mode_not_configured",
    "invalid_schema",
    "invalid_version",
    "invalid_compatibility_level",
    "invalid_mode",
    "incompatible_schema",
    "operation_not_permitted",
    "reference_exists",
    "bad_request",
    "context_not_empty",
    "store_error",
    "store_timeout",
    "unknown_primary",
]


class RegistryError(Exception):
    """An answer other than success: ``status`` is the HTTP status, ``error_code`` Confluent's."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


# The association codes are Confluent's (``rest/exceptions/Errors.java``, since 8.0.4/8.1.2):
# 40410 none found, 40903 the resource has that association type already, 40904 the subject
# has an association already, 40905 the subject has a STRONG one, 40907 no live version, 40908
# frozen, 42212 invalid request.


def association_not_found(resource: str) -> RegistryError:
    return RegistryError(404, 40410, f"Association for '{resource}' not found.")


def association_exists(association_type: str, resource: str) -> RegistryError:
    return RegistryError(
        409, 40903,
        f"An association of type '{association_type}' already exists for resource '{resource}'",
    )


def association_for_subject_exists(subject: str) -> RegistryError:
    return RegistryError(409, 40904, f"An association already exists for subject '{subject}'")


def strong_association_exists(subject: str) -> RegistryError:
    return RegistryError(
        409, 40905, f"A strong association already exists for subject '{subject}'"
    )


def no_active_subject_version(subject: str) -> RegistryError:
    return RegistryError(
        409, 40907, f"No active (non-deleted) version exists for subject '{subject}'"
    )


def association_frozen(association_type: str, subject: str) -> RegistryError:
    return RegistryError(
        409, 40908,
        f"The association of type '{association_type}' is frozen for subject '{subject}'",
    )


def invalid_association(prop: str, detail: str) -> RegistryError:
    return RegistryError(
        422, 42212,
        f"The association specified an invalid value for property: '{prop}', detail: {detail}",
    )


def version_not_found(subject: str, version: object) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found.")


def schema_not_found(what: str = "Schema not found") -> RegistryError:
    return RegistryError(404, 40403, what)


def subject_soft_deleted(subject: str) -> RegistryError:
    return RegistryError(
        404, 40404,
        f"Subject '{subject}' was soft deleted.Set permanent=true to delete permanently",
    )


def subject_not_soft_deleted(subject: str) -> RegistryError:
    return RegistryError(
        404, 40405, f"Subject '{subject}' was not deleted first before being permanently deleted"
    )


def version_soft_deleted(subject: str, version: int) -> RegistryError:
    return RegistryError(
        404, 40406,
        f"Subject '{subject}' Version {version} was soft deleted.Set permanent=true to delete "
        "permanently",
    )


def version_not_soft_deleted(subject: str, version: int) -> RegistryError:
    return RegistryError(
        404, 40407,
        f"Subject '{subject}' Version {version} was not deleted first before being permanently "
        "deleted",
    )


def subject_compatibility_not_configured(subject: str) -> RegistryError:
    return RegistryError(
        404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
    )


def subject_mode_not_configured(subject: str) -> RegistryError:
    return RegistryError(404, 40409, f"Subject '{subject}' does not have subject-level mode configured")


def invalid_schema(message: str) -> RegistryError:
    return RegistryError(422, 42201, message)


def invalid_version(version: object) -> RegistryError:
    return RegistryError(
        422, 42202,
        f"The specified version '{version}' is not a valid version id. Allowed values are "
        "between [1, 2^31-1] and the string \"latest\"",
    )


def invalid_compatibility_level(level: object) -> RegistryError:
    return RegistryError(
        422, 42203,
        f"Invalid compatibility level. Valid values are none, backward, forward, full, "
        f"backward_transitive, forward_transitive, and full_transitive (got {level!r})",
    )


def invalid_mode(mode: object) -> RegistryError:
    return RegistryError(
        422, 42204,
        f"Invalid mode. Valid values are READWRITE, READONLY, IMPORT (got {mode!r})",
    )


def incompatible_schema(messages: list[str]) -> RegistryError:
    detail = "; ".join(messages)
    # Confluent answers 409 with error_code 409 before 8.0.4/8.1.2 and 40901 since (the
    # release that added associations, whose codes this registry follows too).
    return RegistryError(
        409, 40901,
        f"Schema being registered is incompatible with an earlier schema for subject; {detail}",
    )


def operation_not_permitted(message: str) -> RegistryError:
    return RegistryError(422, 42205, message)


def reference_exists(message: str) -> RegistryError:
    return RegistryError(422, 42206, message)


def context_not_empty(context: str) -> RegistryError:
    return RegistryError(422, 42211, f"The specified context '{context}' is not empty.")


def bad_request(message: str) -> RegistryError:
    # Confluent answers a body that is not the expected JSON with HTTP 400 / error_code 400.
    return RegistryError(400, 400, message)


def store_error(message: str) -> RegistryError:
    return RegistryError(500, 50001, f"Error in the backend datastore: {message}")


def store_timeout(message: str) -> RegistryError:
    return RegistryError(500, 50002, f"Operation timed out: {message}")


def unknown_primary(message: str) -> RegistryError:
    return RegistryError(500, 50004, f"Unknown primary: {message}")


class FencedError(RegistryError):
    """This instance's write was refused because another instance has since claimed the
    ``_schemas`` writer (it was elected primary after this one): nothing of the write is in the
    log. The HTTP layer sends the request on to the primary (or, for a stand-alone instance,
    claims again and retries); a client only sees it when neither works out."""

    def __init__(self, message: str) -> None:
        super().__init__(500, 50004, f"Unknown primary: {message}")
