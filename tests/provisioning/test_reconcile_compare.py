"""How reconciliation tells drift from what the API server adds on its own (pure)."""

from __future__ import annotations

import pytest

from provisioning.reconcile import contains, drifted


@pytest.mark.parametrize(
    ("have", "want"),
    [
        ({"a": 1, "defaulted": "x"}, {"a": 1}),  # fields the server adds are not drift
        ({"hard": {"limits.memory": "1Gi"}}, {"hard": {"limits.memory": "1024Mi"}}),
        ({"cpu": "1"}, {"cpu": "1000m"}),
        ({"ports": [{"port": 80, "protocol": "TCP"}]}, {"ports": [{"port": 80}]}),
        ({"labels": {"mine": "1", "kubernetes.io/metadata.name": "x"}}, {"labels": {"mine": "1"}}),
        ({"x": None}, {"x": []}),  # an empty list the server dropped
    ],
)
def test_server_side_additions_and_canonical_quantities_are_not_drift(have, want):
    assert contains(have, want)


@pytest.mark.parametrize(
    ("have", "want"),
    [
        ({"hard": {"requests.nvidia.com/gpu": "99"}}, {"hard": {"requests.nvidia.com/gpu": "3"}}),
        ({"replicas": 0}, {"replicas": 1}),
        ({"ports": [{"port": 80}]}, {"ports": [{"port": 80}, {"port": 443}]}),
        ({}, {"annotations": {"hub-on-demand.io/config-checksum": "abc"}}),
        ({"readOnly": False}, {"readOnly": True}),
        ({"name": "hub"}, {"name": "hub2"}),
    ],
)
def test_changed_or_missing_values_are_drift(have, want):
    assert not contains(have, want)


def test_drifted_ignores_api_version_and_kind_of_the_listed_object():
    desired = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a"},
        "data": {"k": "v"},
    }
    live = {"metadata": {"name": "a", "resourceVersion": "7"}, "data": {"k": "v"}}
    assert not drifted(desired, live)
    assert drifted(desired, {**live, "data": {"k": "changed"}})
