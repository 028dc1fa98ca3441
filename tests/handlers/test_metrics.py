"""``/metrics``: Prometheus counters, in one process and summed over several."""

from __future__ import annotations

import subprocess

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import METRICS_TOKEN, TEST_SECRET
from tests.servers import KEYPLANE, free_port, keyplane_env, serving, wait_until_up


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


class TestGet:
    def test_200_counts_requests_by_operation_and_verify_outcomes(self, client, verifier):
        before = _samples(client.get("/metrics", headers=SCRAPER).text)
        for _ in range(3):
            client.post("/v1/keys/verify", json={"key": "kp_not_a_key"}, headers=verifier)
        client.get("/v1/users/me")
        response = client.get("/metrics", headers=SCRAPER)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        after = _samples(response.text)

        def grew(name: str, **labels: str) -> float:
            return _value(after, name, **labels) - _value(before, name, **labels)

        assert grew("keyplane_requests_total", operation="keys.verify", status="200") == 3
        assert grew("keyplane_requests_total", operation="users.me", status="401") == 1
        assert grew("keyplane_verifications_total", code="NOT_FOUND") == 3
        assert grew("keyplane_request_duration_seconds_count", operation="keys.verify") == 3

    def test_401_without_the_metrics_token(self, client, factory):
        admin = factory.user(factory.account())
        for headers in ({}, {"Authorization": "Bearer not-the-token"}, factory.auth(admin)):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "keyplane_requests_total" not in response.text

    def test_404_when_metrics_are_off(self, fresh_database_url):
        env = keyplane_env(
            fresh_database_url, KEYPLANE_SECRET_KEY=TEST_SECRET, KEYPLANE_METRICS="off"
        )
        with serving(env) as (base, _):
            wait_until_up(base)
            response = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer any"})
        assert response.status_code == 404
        assert response.json() == {"detail": "Metrics are not served here"}


def test_several_workers_are_summed_on_a_separate_port(fresh_database_url):
    metrics_port = free_port()
    env = keyplane_env(
        fresh_database_url,
        KEYPLANE_SECRET_KEY=TEST_SECRET,
        KEYPLANE_ADMIN_PASSWORD="metrics-password",
        KEYPLANE_METRICS=str(metrics_port),
    )
    subprocess.run([*KEYPLANE, "db", "upgrade"], env=env, capture_output=True, check=True)
    with serving(env, workers=2) as (base, _):
        wait_until_up(base)
        signed_in = httpx.post(
            f"{base}/v1/auth/token",
            data={"grant_type": "password", "username": "admin", "password": "metrics-password"},
        )
        verifier = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        with httpx.Client() as http:  # new connections, spread over both workers
            for _ in range(40):
                http.post(
                    f"{base}/v1/keys/verify",
                    json={"key": "kp_nope"},
                    headers={"Connection": "close"} | verifier,
                )
        not_here = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer any"})
        assert not_here.status_code == 404  # not on the API's port
        samples = _samples(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
    assert _value(samples, "keyplane_verifications_total", code="NOT_FOUND") == 40
    assert _value(samples, "keyplane_requests_total", operation="keys.verify", status="200") == 40
