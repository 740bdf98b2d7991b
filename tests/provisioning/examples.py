"""Example hub specs that tests render, dry-run and keep golden files of."""

from __future__ import annotations

from provisioning.render import HubSecrets
from provisioning.spec import (
    ExternalVolume,
    GpuRequest,
    GroupGrantSpec,
    HubSpec,
    ImageChoice,
    ServerOption,
    TierSpec,
)

SMALL = ServerOption("small", "Small", 0.5, 1, 1, 2)
MEDIUM = ServerOption("medium", "Medium", 1, 2, 4, 8)
LARGE = ServerOption("large", "Large", 2, 8, 16, 32)
SCIPY = ImageChoice(
    "scipy", "Scientific Python", "quay.io/jupyter/scipy-notebook:python-3.11", "jupyterlab", "/lab"
)
RSTUDIO = ImageChoice("rstudio", "RStudio", "docker.io/rocker/binder:4.4.2", "rstudio", "/rstudio")
A100 = GpuRequest("nvidia.com/gpu", "NVIDIA-A100-SXM4-80GB", 1, display_name="NVIDIA A100 80 GB")

# Fixed secrets so that golden files do not change from run to run.
FIXED_SECRETS = HubSecrets(
    cookie_secret="c" * 64,
    proxy_token="p" * 64,
    crypt_key="k" * 64,
    portal_token="t" * 64,
    oauth_client_secret="o" * 64,
)

EXAMPLES: dict[str, HubSpec] = {
    # A course: CPU only, two sizes, two images, homes only.
    "cpu-course": HubSpec(
        hub_id=101,
        slug="stats-101",
        owner="ada",
        hubs_domain="hubs.example.org",
        expected_users=40,
        server_options=(SMALL, MEDIUM),
        images=(SCIPY, RSTUDIO),
        home_size_gib=5,
        idle_timeout_minutes=30,
        members=("ta-1", "ta-2"),
        # The TAs' tier may pick the medium size; students come in through an IdP group.
        tiers=(
            TierSpec("students", server_options=("small",), images=("scipy",), default=True),
            TierSpec("tas"),
        ),
        member_tiers=(("ta-1", "tas"), ("ta-2", "tas")),
        group_grants=(GroupGrantSpec("stats-101-2027"),),
    ),
    # A research group: GPUs, named servers, a read-write shared volume, batch jobs.
    "gpu-research": HubSpec(
        hub_id=202,
        slug="vision-lab",
        owner="grace",
        hubs_domain="hubs.example.org",
        expected_users=6,
        notebooks_per_user=3,
        server_options=(LARGE,),
        gpu=A100,
        images=(SCIPY,),
        home_size_gib=50,
        shared_size_gib=500,
        shared_mode="rw",
        jobs_access=True,
        idle_timeout_minutes=240,
        co_owners=("alan",),
    ),
    # A workshop: a custom image, wipe-home, a read-only shared volume and external NFS data.
    "custom-image-workshop": HubSpec(
        hub_id=303,
        slug="genomics-ws",
        owner="barbara",
        hubs_domain="hubs.example.org",
        expected_users=25,
        server_options=(SMALL,),
        images=(SCIPY,),
        custom_image="ghcr.io/genomics/workshop:2027.1",
        allowed_registries=("quay.io", "ghcr.io"),
        wipe_home_allowed=True,
        shared_size_gib=20,
        shared_mode="ro",
        external_volumes=(
            ExternalVolume(
                "reference-genomes",
                "nfs",
                "/mnt/reference",
                read_only=True,
                server="nfs.example.org",
                path="/exports/genomes",
            ),
        ),
    ),
}
