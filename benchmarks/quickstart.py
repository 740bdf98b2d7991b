"""Load the quick start as a class would: 100 hub requests through the REST API while 50
clients read the hub list, then every hub that waits for an admin (beyond the per-owner
limits) approved through the API, until all run.

    make up                          # in one terminal
    make bench-quickstart            # in another: .venv/bin/python benchmarks/quickstart.py

Talks to the portal that `make up` serves (--url, default http://127.0.0.1:8000) with API
tokens made by `scripts/manage.sh createapitoken` for the demo researcher and admin. Prints
the answers by status class, the readers' p50, p95 and 5xx, how long until every hub ran, and
every hub that did not (its state and reason). Deletes the hubs it made afterwards (--keep
leaves them).
"""

from __future__ import annotations

import argparse
import datetime
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.latency import percentiles  # noqa: E402


def token(username: str, *flags: str) -> str:
    made = subprocess.run(
        ["bash", "scripts/manage.sh", "createapitoken", username, "--name", "bench-quickstart",
         *flags],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return made.stdout.strip().splitlines()[-1]


class Readers(threading.Thread):
    def __init__(self, url: str, headers: dict, clients: int):
        super().__init__(daemon=True)
        self.url, self.headers, self.clients = url, headers, clients
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.statuses: Counter = Counter()

    def run(self) -> None:
        def read(_):
            session = requests.Session()
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    status = session.get(self.url, headers=self.headers, timeout=60).status_code
                except requests.RequestException:
                    status = 599
                self.latencies.append(time.perf_counter() - started)
                self.statuses[status // 100 * 100] += 1

        with ThreadPoolExecutor(self.clients) as pool:
            list(pool.map(read, range(self.clients)))

    def figures(self) -> str:
        p50, p95 = percentiles(self.latencies)
        return (
            f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
            f"{len(self.latencies)} reads, answers {dict(sorted(self.statuses.items()))}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--keep", action="store_true", help="keep the hubs it made")
    args = parser.parse_args()
    api = f"{args.url}/api/v1"
    researcher = {"Authorization": f"Token {token('researcher')}"}
    admin = {"Authorization": f"Token {token('admin', '--admin')}"}
    option = requests.get(f"{api}/hardware-options/", headers=admin, timeout=30).json()
    image = requests.get(f"{api}/images/", headers=admin, timeout=30).json()
    option = (option.get("results", option) or [None])[0]
    image = (image.get("results", image) or [None])[0]
    if not option or not image:
        sys.exit("The catalogue has no hardware option or image: run make up (it seeds them).")
    today = datetime.date.today()
    run = secrets.token_hex(2)
    answers: Counter = Counter()
    made: list[int] = []

    def request(n: int) -> None:
        body = {
            "display_name": f"Quick start {run} {n}",
            "slug": f"qs-{run}-{n:03d}",
            "kind": "course",
            "start_date": today.isoformat(),
            "end_date": (today + datetime.timedelta(days=30)).isoformat(),
            "expected_users": 2,
            "hardware_options": [option["name"]],
            "images": [image["name"]],
        }
        response = requests.post(f"{api}/hubs/", json=body, headers=researcher, timeout=120)
        answers[response.status_code // 100 * 100] += 1
        if response.status_code == 201:
            made.append(response.json()["id"])
        elif response.status_code >= 400:
            print(f"request {n}: {response.status_code} {response.text[:300]}")

    readers = Readers(f"{api}/hubs/", researcher, args.readers)
    readers.start()
    began = time.monotonic()
    try:
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(request, range(args.requests)))
        requested = time.monotonic() - began
    finally:
        readers.stop.set()
        readers.join()
    # The admin then approves what waits (beyond the per-owner limits), readers off.
    try:
        approved = 0
        for hub_id in made:
            hub = requests.get(f"{api}/hubs/{hub_id}/", headers=admin, timeout=60).json()
            if hub["state"] == "pending":
                answer = requests.post(f"{api}/hubs/{hub_id}/approve/", json={}, headers=admin)
                answers[answer.status_code // 100 * 100] += 1
                approved += answer.status_code == 200
        states: dict[int, dict] = {}
        while time.monotonic() - began < args.timeout:
            states = {
                hub_id: requests.get(f"{api}/hubs/{hub_id}/", headers=admin, timeout=60).json()
                for hub_id in made
            }
            if all(hub["state"] in ("running", "failed") for hub in states.values()):
                break
            time.sleep(2)
        finished = time.monotonic() - began
    except KeyboardInterrupt:
        finished = time.monotonic() - began
    counts = Counter(hub["state"] for hub in states.values())
    print(f"requests: {len(made)} of {args.requests} made in {requested:.1f} s, "
          f"{approved} approved by the admin; answers {dict(sorted(answers.items()))}")  # fmt: skip
    print(f"readers: {args.readers} clients on the hub list meanwhile: {readers.figures()}")
    print(f"all {len(made)} hubs settled after {finished:.0f} s: {dict(counts)}")
    for hub_id, hub in sorted(states.items()):
        if hub["state"] != "running":
            reason = hub.get("state_reason")
            print(f"  not running: hub {hub_id} {hub['slug']}: {hub['state']} {reason}")
    if not args.keep:
        for hub_id in made:
            requests.delete(f"{api}/hubs/{hub_id}/", headers=admin, timeout=60)
        print(f"asked to delete the {len(made)} hubs (--keep keeps them)")


if __name__ == "__main__":
    main()
