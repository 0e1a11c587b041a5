"""Prints the demo credentials that ``make run`` bootstrapped, with a ready-to-paste curl line."""

from __future__ import annotations

import json
import sys


def main(base_url: str) -> None:
    """Reads ``keyhouse bootstrap --json`` output on stdin (so no secret touches the disk)."""
    data = json.loads(sys.stdin.read())
    print(
        f"""
Keyhouse demo organization "{data["organizationName"]}" ({data["organizationId"]})

  Admin user      {data["email"]}
  Password        {data["password"] or "(existing account, unchanged)"}
  API key ID      {data["keyId"]}
  API key secret  {data["keySecret"]}

  Console         {base_url}/console  (sign in with the email and password above)

These are shown once; store them now. Try:

  curl --user {data["keyId"]}:{data["keySecret"]} {base_url}/v1/organizations
"""
    )
    if data.get("serviceId"):
        print(
            f"""A demo service ({data["serviceId"]}) starts with the server; its `default` user's
password is {data["servicePassword"]}. Query it with the official CLI once the server is up:

  CLICKHOUSE_CLOUD_QUERY_HOST={base_url} DO_NOT_TRACK=1 clickhousectl cloud \\
      --url {base_url}/v1 --api-key {data["keyId"]} --api-secret {data["keySecret"]} \\
      service query {data["serviceId"]} -q "SELECT version()"
"""
        )
    if data.get("serviceAddress"):
        host, port = data["serviceAddress"].removeprefix("https://").rsplit(":", 1)
        ca = data["caFile"]
        print(
            f"""Its ClickHouse HTTP interface is {data["serviceAddress"]} (user default, from this
machine only), over HTTPS with a certificate signed by Keyhouse's own CA ({ca}).
With the official Python client:

  .venv/bin/python -c "import clickhouse_connect; print(clickhouse_connect.get_client(\\
      host='{host}', port={port}, username='default', password='{data["servicePassword"]}', \\
      secure=True, ca_cert='{ca}').query('SELECT version()').result_rows)"
"""
        )


if __name__ == "__main__":
    main(sys.argv[1])
