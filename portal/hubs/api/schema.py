"""OpenAPI post-processing: document the error answers every operation can give.

The exception handler, the authentication and permission classes, the throttle and the
paginator answer 400, 401, 403, 404, 409 and 429 wherever they apply; declaring them on each
view would be noise, so this hook adds them to every operation that lacks them.
"""

from typing import Any

ERROR = {
    "type": "object",
    "description": "`detail` for a general error, or field names with their messages.",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}
_UNSAFE = {"post", "put", "patch", "delete"}
_DESCRIPTIONS = {
    "400": "Invalid input: field messages, or `detail`",
    "401": "Not authenticated, or an invalid, expired or revoked token",
    "403": "Not allowed, or a token outside its scope",
    "404": "Not found, or not visible to the caller",
    "409": "The object is not in a state for this",
    "429": "Too many requests; retry after the Retry-After header's seconds",
}


def _error(code: str, media_types: set[str]) -> dict[str, Any]:
    # Errors are rendered by the operation's renderer: JSON, or text (e.g. ?format=csv).
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for media_type in media_types - {"application/json"}:
        content[media_type] = {"schema": {"type": "string"}}
    return {"description": _DESCRIPTIONS[code], "content": content}


def add_error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular POSTPROCESSING_HOOKS entry: add the shared error answers."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            if method not in _UNSAFE | {"get", "head"}:
                continue
            codes = ["401", "403", "404"]
            if operation.get("parameters") or operation.get("requestBody") or method in _UNSAFE:
                codes.append("400")
            if method in _UNSAFE:
                codes += ["409", "429"]
            responses = operation.setdefault("responses", {})
            media_types = {
                media_type
                for status, response in responses.items()
                if str(status).startswith("2")
                for media_type in response.get("content", {})
            }
            for code in codes:
                responses.setdefault(code, _error(code, media_types))
    return result
