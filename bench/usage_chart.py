"""The usage chart in docs/usage.md, drawn from what ``GET /v1/usage`` answers.

    python -m bench.usage_chart   # writes docs/assets/usage.png and docs/assets/usage.json

Serves a fresh Keyplane (SQLite, counts written every second), gives four customers a
key each, verifies them as an API would (with its verifier key), waits for the
counts to be written, asks ``GET /v1/usage`` for them by customer and code, and
draws that answer, which is kept beside the chart.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.run import BIN, PASSWORD, REPOSITORY, SECRET, Contender, Request, send, serving
from bench.seed import seed

ASSETS = REPOSITORY / "docs" / "assets"
# (customer, what their key is given, verifies sent, what each asks)
TRAFFIC: list[tuple[str, dict[str, Any], int, dict[str, Any]]] = [
    ("cus_acme", {"permissions": ["readApplications"]}, 120, {}),
    ("cus_globex", {"permissions": ["readApplications"]}, 60, {}),
    ("cus_globex", {}, 20, {"permissions": ["writeApplications"]}),
    ("cus_initech", {"credits": {"remaining": 50}}, 80, {}),
    ("cus_umbrella", {}, 15, {}),  # revoked before it is used
]
COLOURS = {
    "VALID": "#2e7d32",
    "INSUFFICIENT_PERMISSIONS": "#f9a825",
    "USAGE_EXCEEDED": "#ef6c00",
    "REVOKED": "#c62828",
}


def collect() -> dict[str, Any]:
    """Serve, verify, and answer what ``GET /v1/usage`` says about it."""
    with tempfile.TemporaryDirectory(prefix="kpusage-") as folder:
        url = f"sqlite:///{folder}/usage.db"
        seeded = seed(url, SECRET, 1, "bench", PASSWORD)
        keyplane = Contender(
            "Keyplane",
            [str(BIN / "keyplane"), "serve", "--workers", "2", "--port", "{port}"],
            {
                "KEYPLANE_DATABASE_URL": url,
                "KEYPLANE_SECRET_KEY": SECRET,
                "KEYPLANE_LAST_USED_RESOLUTION_SECONDS": "1",
            },
            "/healthz",
        )
        admin, verifier = f"Bearer {seeded.token}", f"Bearer {seeded.verifier}"
        with serving(keyplane):
            for customer, given, count, asked in TRAFFIC:
                body = json.dumps({"external_id": customer, **given})
                status, key = send(keyplane, Request("POST", "/v1/api-keys", body, admin))
                assert status == 201, key
                if customer == "cus_umbrella":
                    send(keyplane, Request("DELETE", f"/v1/api-keys/{key['id']}", "", admin))
                verify = json.dumps({"key": key["full_key"], **asked})
                for _ in range(count):
                    send(keyplane, Request("POST", "/v1/keys/verify", verify, verifier))
            time.sleep(3)  # each worker writes its counts every second
            question = "/v1/usage?group_by=external_id,code&granularity=day"
            status, report = send(keyplane, Request("GET", question, "", admin))
            assert status == 200, report
    return dict(report)


def draw(report: dict[str, Any], out: Path) -> None:
    customers = sorted({i["external_id"] for i in report["items"]})
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    left = [0] * len(customers)
    for code, colour in COLOURS.items():
        counts = [
            sum(i["count"] for i in report["items"] if (i["external_id"], i["code"]) == (c, code))
            for c in customers
        ]
        ax.barh(customers, counts, left=left, color=colour, label=code)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("verifies today")
    ax.set_title("GET /v1/usage?group_by=external_id,code&granularity=day")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSETS, help="folder for the files")
    folder = parser.parse_args(argv).out
    report = collect()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "usage.json").write_text(json.dumps(report, indent=1) + "\n")
    draw(report, folder / "usage.png")
    totals: dict[str, int] = {}
    for item in report["items"]:
        totals[item["code"]] = totals.get(item["code"], 0) + item["count"]
    print(json.dumps(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
