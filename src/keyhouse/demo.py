"""Prints the demo credentials that ``make run`` bootstrapped, with a ready-to-paste curl line."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(bootstrap_json: str, base_url: str) -> None:
    data = json.loads(Path(bootstrap_json).read_text())
    print(
        f"""
Keyhouse demo organization "{data["organizationName"]}" ({data["organizationId"]})

  Admin user      {data["email"]}
  Password        {data["password"]}
  API key ID      {data["keyId"]}
  API key secret  {data["keySecret"]}

These are shown once; store them now. Try:

  curl --user {data["keyId"]}:{data["keySecret"]} {base_url}/v1/organizations
"""
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
