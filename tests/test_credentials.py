"""Key credentials: format, checksum, and compatibility with the documented hashData digest."""

from __future__ import annotations

import shutil
import subprocess

from keyhouse.auth import credentials


def test_secret_has_prefix_entropy_and_checksum() -> None:
    secrets = {credentials.generate_key_secret() for _ in range(200)}
    assert len(secrets) == 200
    for secret in secrets:
        assert secret.startswith("khs_")
        assert credentials.secret_checksum_ok(secret)
    # 43 characters of base62: log2(62) * 43 > 255 bits, well over the 200 asked for.
    assert credentials.SECRET_RANDOM_LENGTH * 5.95 > 200


def test_checksum_catches_a_changed_character() -> None:
    secret = credentials.generate_key_secret()
    flipped = secret[:10] + ("A" if secret[10] != "A" else "B") + secret[11:]
    assert not credentials.secret_checksum_ok(flipped)
    assert not credentials.secret_checksum_ok("khs_short")
    assert not credentials.secret_checksum_ok("ghp_" + secret[4:])


def test_digest_matches_the_documented_shell_pipeline() -> None:
    value = "yourpassword"
    assert shutil.which("sha256sum")
    pipeline = subprocess.run(  # noqa: S602 - a fixed command, the documented recipe
        "printf %s yourpassword | sha256sum | cut -d' ' -f1 | "
        "python3 -c 'import sys,base64,binascii;"
        "print(base64.b64encode(binascii.unhexlify(sys.stdin.read().strip())).decode())'",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert credentials.sha256_b64(value) == pipeline


def test_pepper_changes_the_stored_hash() -> None:
    assert credentials.hash_value(b"a", "x") != credentials.hash_value(b"b", "x")
    assert credentials.is_sha256_b64(credentials.sha256_b64("x"))
    assert not credentials.is_sha256_b64("not base64!")
