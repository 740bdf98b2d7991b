"""Forms of member management: tiers, adding users, e-mail invitations and IdP group grants.

They validate for the web pages and the API alike (the API passes form-shaped data); tiers,
hardware options and images are referenced by name and must belong to the hub.
"""

from django import forms
from django.contrib.auth import get_user_model

from portal.hubs.models import GroupGrant, Hub, Member, MemberTier

ROLE_CHOICES = Member.Role.choices


class TierChoiceField(forms.ModelChoiceField):
    """A tier of the hub, by name; empty means the hub's default tier."""

    def __init__(self, hub: Hub, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("empty_label", "Default tier")
        kwargs.setdefault("help_text", "Co-owners get everything whatever their tier.")
        super().__init__(queryset=hub.tiers.all(), to_field_name="name", **kwargs)


class MemberTierForm(forms.ModelForm):
    """Define or edit a tier: a subset of the hub's server options and images, GPU access,
    shared volume access and the jobs role."""

    class Meta:
        model = MemberTier
        fields = [
            "name",
            "description",
            "hardware_options",
            "gpu_access",
            "images",
            "shared_access",
            "jobs_access",
        ]
        widgets = {
            "hardware_options": forms.CheckboxSelectMultiple,
            "images": forms.CheckboxSelectMultiple,
        }

    def __init__(self, *args, hub: Hub, **kwargs):
        super().__init__(*args, **kwargs)
        self.hub = hub
        self.instance.hub = hub
        options = self.fields["hardware_options"]
        options.queryset = hub.hardware_options.all()
        options.to_field_name = "name"
        options.label = "Server options"
        images = self.fields["images"]
        images.queryset = hub.images.all()
        images.to_field_name = "name"
        if not hub.gpu_type_id or not hub.gpus_per_user:
            self.fields["gpu_access"].help_text = "The hub has no GPUs; this has no effect."
        if not hub.jobs_access:
            self.fields["jobs_access"].help_text = "The hub has no jobs access; no effect."
        if self.instance.pk and self.instance.is_default:
            self.fields["name"].disabled = True
        self.fields["shared_access"].required = False
        if hub.shared_volume_mode == Hub.SharedVolumeMode.NONE:
            self.fields["shared_access"].help_text = "The hub has no shared volume; no effect."

    def clean_shared_access(self):
        return self.cleaned_data.get("shared_access") or MemberTier.SharedAccess.READ_ONLY

    def clean_name(self):
        name = self.cleaned_data["name"]
        clash = self.hub.tiers.filter(name=name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError("This hub already has a tier of that name.")
        return name


class AddMemberForm(forms.Form):
    """Add an existing portal user to the hub by username."""

    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Member.Role.MEMBER)

    def __init__(self, *args, hub: Hub, **kwargs):
        super().__init__(*args, **kwargs)
        self.hub = hub
        self.fields["tier"] = TierChoiceField(hub)

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(
                "No portal user has this username; invite them by e-mail instead."
            )
        if user.pk == self.hub.owner_id:
            raise forms.ValidationError("This user owns the hub.")
        if self.hub.members.filter(user=user).exists():
            raise forms.ValidationError("This user is already a member of the hub.")
        return user


class ChangeMemberForm(forms.Form):
    """Change a member's role or tier."""

    role = forms.ChoiceField(choices=ROLE_CHOICES)

    def __init__(self, *args, hub: Hub, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tier"] = TierChoiceField(hub)


class InvitationForm(forms.Form):
    """Invite someone by e-mail; they accept the link after signing in with an account whose
    identity provider verified that address, unless the inviter lets anyone with the link."""

    email = forms.EmailField()
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Member.Role.MEMBER)
    anyone_with_link = forms.BooleanField(
        required=False,
        initial=False,
        label="Anyone with the link",
        help_text="Anyone signed in who holds the link may accept it, whatever their e-mail "
        "address. Off: only someone whose identity provider verified this address.",
    )

    def __init__(self, *args, hub: Hub, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tier"] = TierChoiceField(hub)


class GroupGrantForm(forms.Form):
    """Give every member of an IdP group access to the hub."""

    group = forms.CharField(max_length=200, help_text="The group's name as the IdP sends it.")
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Member.Role.MEMBER)

    def __init__(self, *args, hub: Hub, grant: GroupGrant | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hub, self.grant = hub, grant
        self.fields["tier"] = TierChoiceField(hub)
        if grant is not None:
            self.fields["group"].disabled = True
            self.fields["group"].required = False

    def clean_group(self):
        if self.grant is not None:
            return self.grant.group
        group = self.cleaned_data["group"].strip()
        if not group or any(ch in group for ch in "\r\n\t"):
            raise forms.ValidationError("Give the group's name, on one line.")
        if self.hub.group_grants.filter(group=group).exists():
            raise forms.ValidationError("This group already has access to the hub.")
        return group
