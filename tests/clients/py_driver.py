"""Drives one unmodified Python SDK against a collector and prints what the client saw, as JSON.

Run as a subprocess (``python py_driver.py '<json args>'``) by tests/clients/test_python_sdks.py, with
the interpreter that has the SDK: the project's venv for segment-analytics-python and
rudder-sdk-python, .cache/clients/py14 for analytics-python 1.4 (its pinned backoff conflicts).

args: module (``segment.analytics`` | ``rudderstack.analytics`` | ``analytics``), host, write_key,
run (an id prefix), sync (one request per call) and gzip.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any


def main() -> None:
    args = json.loads(sys.argv[1])
    client_cls = importlib.import_module(args["module"] + ".client").Client
    errors: list[dict[str, Any]] = []

    def on_error(exc: Exception, batch: list[dict[str, Any]]) -> None:
        errors.append(
            {
                "type": type(exc).__name__,
                "status": getattr(exc, "status", None),
                "code": getattr(exc, "code", None),
                "message": str(getattr(exc, "message", exc)),
                "events": len(batch),
            }
        )

    client = client_cls(
        args["write_key"],
        host=args["host"],
        on_error=on_error,
        gzip=args["gzip"],
        sync_mode=args["sync"],
        max_retries=args.get("max_retries", 10),
    )
    run, user, anon = args["run"], f"u-{args['run']}", f"a-{args['run']}"
    sent: list[dict[str, Any]] = []

    def keep(result: Any) -> None:
        ok, msg = result
        sent.append(
            {
                "messageId": msg["messageId"],
                "type": msg["type"],
                "timestamp": msg.get("timestamp") or msg.get("originalTimestamp"),
                "ok": ok,
            }
        )

    started = time.time()
    keep(
        client.identify(
            user,
            {"firstName": "Ann", "lastName": "Lee", "email": f"ann-{run}@acme.io"},
            anonymous_id=anon,
            context={"traits": {"plan": "pro"}, "locale": "de-DE"},
        )
    )
    time.sleep(0.3)  # distinct client times, held by the client until its batch goes
    keep(
        client.track(
            user,
            "Order Completed",
            {"revenue": 42.5, "currency": "EUR"},
            anonymous_id=anon,
            integrations={"All": False, "Mixpanel": True},
        )
    )
    keep(
        client.page(
            user,
            "Docs",
            "Install",
            {"url": "https://shop.example/docs/install", "path": "/docs/install"},
            anonymous_id=anon,
        )
    )
    keep(client.screen(user, "Settings", "Billing", {"tab": "invoices"}, anonymous_id=anon))
    keep(
        client.group(
            user,
            f"g-{run}",
            {"name": "Acme Inc", "website": "https://www.acme.io", "employees": 120},
            anonymous_id=anon,
        )
    )
    keep(client.alias(f"old-{run}", user))
    client.flush()
    if not args["sync"]:  # sync mode has no consumer thread to join
        client.join()
    print(json.dumps({"sent": sent, "errors": errors, "seconds": time.time() - started}))


if __name__ == "__main__":
    main()
