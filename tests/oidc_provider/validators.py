"""The provider's claims: username, e-mail, name and the user's groups."""

from oauth2_provider.oauth2_validators import OAuth2Validator


class GroupsValidator(OAuth2Validator):
    """Adds `groups` and `eduperson_entitlement` (the user's Django groups) to the claims."""

    oidc_claim_scope = {
        **OAuth2Validator.oidc_claim_scope,
        "groups": "profile",
        "eduperson_entitlement": "profile",
    }

    def get_additional_claims(self, request):
        user = request.user
        groups = sorted(user.groups.values_list("name", flat=True))
        return {
            "preferred_username": user.username,
            "name": user.get_full_name() or user.username,
            "email": user.email,
            "email_verified": bool(user.email) and _email_verified(user),
            "groups": groups,
            "eduperson_entitlement": groups,
        }


def _email_verified(user) -> bool:
    from tests.oidc_provider.models import EmailStatus

    status = EmailStatus.objects.filter(user=user).first()
    return status is None or status.verified
