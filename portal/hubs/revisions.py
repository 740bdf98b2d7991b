"""A revision's JSON spec, and the diffs a change shows before it is submitted.

A revision's spec holds every field of Hub.SPEC_FIELDS (catalogue entries by name, dates as
ISO strings) plus co_owners and members (usernames): what the database stores for each
version of a hub. `portal/hubs/hubspec.py` turns it into provisioning's `HubSpec`; the
objects rendered from both sides of a change are compared as YAML.
"""

import datetime
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from portal.hubs import hubspec
from portal.hubs.cluster import render_settings
from portal.hubs.forms import HubRequestForm
from portal.hubs.models import HardwareOption, Hub, Image, Member, StorageOption
from provisioning.render import HubSecrets, render_hub
from provisioning.spec import HubSpec

M2M_FIELDS = {"hardware_options": HardwareOption, "images": Image, "storage_options": StorageOption}
PEOPLE_FIELDS = ("co_owners", "members")
SPEC_KEYS = (*Hub.SPEC_FIELDS, *PEOPLE_FIELDS)
DATE_FIELDS = ("start_date", "end_date")
BOOLEAN_FIELDS = ("wipe_home_allowed", "jobs_access")
ROLE_OF = {"co_owners": Member.Role.CO_OWNER, "members": Member.Role.MEMBER}

# Fixed stand-ins: diffs are rendered with these, so no real secret can ever reach a page.
REDACTED = "<redacted>"


# --- The spec as JSON ---------------------------------------------------------------------------


def spec_of_hub(hub: Hub) -> dict[str, Any]:
    """The spec a hub row holds now."""
    spec: dict[str, Any] = {}
    for name in Hub.SPEC_FIELDS:
        if name in M2M_FIELDS:
            spec[name] = sorted(getattr(hub, name).values_list("name", flat=True))
        elif name == "gpu_type":
            spec[name] = hub.gpu_type.name if hub.gpu_type_id else None
        else:
            spec[name] = _plain(getattr(hub, name))
    people = hub.members.select_related("user")
    for key, role in ROLE_OF.items():
        spec[key] = sorted(c.user.get_username() for c in people if c.role == role)
    return spec


def spec_from_cleaned(data: Mapping[str, Any]) -> dict[str, Any]:
    """The spec of a valid HubRequestForm's cleaned_data."""
    spec: dict[str, Any] = {}
    for name in Hub.SPEC_FIELDS:
        value = data.get(name)
        if name in M2M_FIELDS:
            spec[name] = sorted(entry.name for entry in value or [])
        elif name == "gpu_type":
            spec[name] = value.name if value else None
        else:
            spec[name] = _plain(value)
    for key in PEOPLE_FIELDS:
        spec[key] = sorted(user.get_username() for user in data.get(key) or [])
    return spec


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime.date) else value


def form_data(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as the HTML form posts it (for HubChangeForm(data=...))."""
    data: dict[str, Any] = {}
    for key in SPEC_KEYS:
        value = spec.get(key)
        if key in M2M_FIELDS:
            data[key] = list(value or [])
        elif key in PEOPLE_FIELDS:
            data[key] = " ".join(value or [])
        elif key in BOOLEAN_FIELDS:
            data[key] = "true" if value else "false"
        elif value is None:
            data[key] = ""
        else:
            data[key] = str(value)
    return data


def form_initial(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as initial values of an unbound HubChangeForm."""
    initial = dict(form_data(spec))
    for key in BOOLEAN_FIELDS:
        initial[key] = bool(spec.get(key))
    return initial


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Spec keys whose values differ, in form order."""
    return [key for key in SPEC_KEYS if old.get(key) != new.get(key)]


# --- Diffs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldChange:
    """One spec field before and after, as shown to people."""

    field: str
    label: str
    old: str
    new: str


@dataclass(frozen=True)
class ObjectChange:
    """One rendered Kubernetes object that a change adds, removes or modifies."""

    kind: str
    name: str
    namespace: str
    change: str  # "added", "removed" or "changed"
    diff: str  # unified diff of the object's YAML


def _label(key: str) -> str:
    return str(HubRequestForm.base_fields[key].label or key.replace("_", " ").capitalize())


def _display(value: Any) -> str:
    if value is None or value == [] or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def spec_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldChange]:
    """The fields a change modifies: field, label, old and new value."""
    return [
        FieldChange(key, _label(key), _display(old.get(key)), _display(new.get(key)))
        for key in changed_fields(old, new)
    ]


class _BlockDumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (jupyterhub_config.py) as literal blocks."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def _yaml(manifest: Mapping[str, Any]) -> str:
    return yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=True, default_flow_style=False)


def rendered_objects(spec: HubSpec) -> dict[tuple[str, str, str], str]:
    """The objects provisioning would apply for a spec, as YAML by (kind, namespace, name);
    secrets are fixed stand-ins and their values redacted."""
    stand_ins = HubSecrets(**{attr: REDACTED for attr in HubSecrets.KEYS})
    objects = render_hub(spec, render_settings(preview=True), stand_ins)
    rendered: dict[tuple[str, str, str], str] = {}
    for manifest in objects:
        if manifest.get("kind") == "Secret":
            manifest = {
                **manifest,
                **{
                    key: {name: REDACTED for name in manifest[key]}
                    for key in ("data", "stringData")
                    if key in manifest
                },
            }
        meta = manifest.get("metadata", {})
        key = (manifest["kind"], meta.get("namespace", ""), meta["name"])
        rendered[key] = _yaml(manifest)
    return rendered


def _unified(old: str, new: str, label: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{label}",
        tofile=f"b/{label}",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def object_diff(
    old: Mapping[tuple[str, str, str], str], new: Mapping[tuple[str, str, str], str]
) -> list[ObjectChange]:
    """Objects that differ between two renderings, in apply order (removed ones last)."""
    changes: list[ObjectChange] = []
    keys: Iterable[tuple[str, str, str]] = [*new, *(key for key in old if key not in new)]
    for key in keys:
        kind, namespace, name = key
        before, after = old.get(key, ""), new.get(key, "")
        if before == after:
            continue
        change = "added" if key not in old else "removed" if key not in new else "changed"
        label = "/".join(part for part in (namespace, kind, name) if part)
        changes.append(ObjectChange(kind, name, namespace, change, _unified(before, after, label)))
    return changes


@dataclass(frozen=True)
class Diff:
    """What a change does: to the spec and to the rendered objects."""

    fields: list[FieldChange]
    objects: list[ObjectChange]

    @property
    def empty(self) -> bool:
        return not self.fields


def diff(hub: Hub, old_spec: Mapping[str, Any], new_spec: Mapping[str, Any]) -> Diff:
    """Compare two specs of one hub, field by field and object by object."""
    return Diff(
        fields=spec_diff(old_spec, new_spec),
        objects=object_diff(
            rendered_objects(hubspec.from_revision(hub, old_spec)),
            rendered_objects(hubspec.from_revision(hub, new_spec)),
        ),
    )
