"""The usage collector decodes only the fields it charges from the API server's lists.

The cluster path (real lists, paging, charging) is in tests/cluster/test_usage_collector.py;
these pin what a pod or claim as the API server writes it turns into, and what an answer the
collector cannot read does.
"""

import datetime
import json
from decimal import Decimal

import pytest

from provisioning import k8s, observe

POD = {
    "metadata": {
        "name": "jupyter-alice",
        "namespace": "hub-gpu",
        "uid": "428ddc90",
        "creationTimestamp": "2027-03-01T09:00:00Z",
        "labels": {"app.kubernetes.io/component": "singleuser-server"},
        "annotations": {"hub.jupyter.org/username": "alice@example.org"},
        "managedFields": [{"manager": "kubespawner", "fieldsV1": {"f:spec": {}}}],
    },
    "spec": {
        "nodeName": "gpu-1",
        "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "claim-alice"}}],
        "containers": [
            {
                "name": "notebook",
                "resources": {
                    "requests": {"cpu": "1500m", "memory": "4Gi", "nvidia.com/gpu": "2"},
                    "limits": {"cpu": "2"},
                },
            },
            {"name": "sidecar", "resources": {"requests": {"cpu": "0.5", "memory": "512Mi"}}},
            {"name": "no-requests"},
        ],
    },
    "status": {
        "phase": "Running",
        "startTime": "2027-03-01T09:00:07Z",
        "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None}],
    },
}


def page(*items, token=None):
    body = {"kind": "PodList", "metadata": {"resourceVersion": "7"}, "items": list(items)}
    if token:
        body["metadata"]["continue"] = token
    return json.dumps(body).encode()


def test_a_pod_is_read_with_its_requests_summed_over_containers():
    decoded = observe._decode(observe.Pod, "/api/v1/pods", page(POD, token="next"))
    assert decoded.metadata.continue_ == "next"
    (pod,) = decoded.items
    assert observe._username(pod.metadata) == "alice@example.org"
    assert observe._pod_component(pod.metadata) == "server"
    assert pod.spec.node_name == "gpu-1"
    assert pod.status.start_time == datetime.datetime(2027, 3, 1, 9, 0, 7, tzinfo=datetime.UTC)
    assert observe._requests(pod, ("nvidia.com/gpu",)) == (2000, Decimal(4608), 2)


def test_a_claim_keeps_its_bound_capacity_and_requested_size():
    claim = {
        "metadata": {"name": "claim-alice", "namespace": "hub-gpu"},
        "spec": {"resources": {"requests": {"storage": "10Gi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "20Gi"}},
    }
    (read,) = observe._decode(observe.Claim, "/api/v1/persistentvolumeclaims", page(claim)).items
    assert read.status.phase == "Bound"
    assert read.status.capacity["storage"] == "20Gi"
    assert read.spec.resources.requests["storage"] == "10Gi"
    assert read.metadata.creation_timestamp is None


def test_an_empty_list_and_a_list_without_items_read_as_nothing():
    empty = b'{"kind":"PodList","items":null}'
    assert observe._decode(observe.Pod, "/api/v1/pods", empty).items is None
    assert observe._decode(observe.Node, "/api/v1/nodes", b"").items is None


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        page({**POD, "spec": {"containers": [{"resources": {"requests": {"cpu": ["1"]}}}]}}),
        page({**POD, "status": {"startTime": "yesterday"}}),
    ],
    ids=["not-json", "wrong-type", "bad-timestamp"],
)
def test_an_answer_the_collector_cannot_read_is_a_cluster_error(body):
    with pytest.raises(k8s.ClusterError) as error:
        observe._decode(observe.Pod, "/api/v1/pods", body)
    assert "/api/v1/pods could not be read" in error.value.message
    assert not error.value.transient
