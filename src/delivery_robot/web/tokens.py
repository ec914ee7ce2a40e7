"""`python -m delivery_robot.web.tokens new`: a fresh API token and the hash for the config.

Give the token to the shop (or operator) once; put only the hash in config/shop_api.yaml.
"""

from __future__ import annotations

import sys

from delivery_robot.api_auth import hash_token, new_token


def main(argv: list[str]) -> int:
    if argv[:1] != ["new"]:
        print("usage: python -m delivery_robot.web.tokens new", file=sys.stderr)
        return 2
    token = new_token()
    print(f"token:        {token}")
    print(f"token_sha256: {hash_token(token)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
