"""drf-spectacular: describe API-key authentication in the OpenAPI document."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "zenskar_site.accounts.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
            "description": "An API key (`Authorization: Bearer <key>` works too). The optional "
            "`organisation` header, when sent, must be the key's organisation id.",
        }
