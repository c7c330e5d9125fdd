"""The provider agent's operator input: key file, payout address, coordinates, registration."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import base58
import pytest

from proofs.messages import MAX_REGISTRATION_BYTES, Registration, decode_message
from proofs.signing import public_key
from tests.factories import seed_for
from validator.provider import (ProviderConfigError, ProviderOptions, build_registration,
                                load_or_create_key, microdegrees, open_data_listener,
                                parse_payout)


def test_key_is_created_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "provider.key"
    seed = load_or_create_key(path)
    assert len(seed) == 32
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == seed


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "provider.key"
    load_or_create_key(path)
    os.chmod(path, mode)
    with pytest.raises(ProviderConfigError, match="chmod 600"):
        load_or_create_key(path)


def test_malformed_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "provider.key"
    path.write_text("not hex\n")
    os.chmod(path, 0o600)
    with pytest.raises(ProviderConfigError, match="64 hex"):
        load_or_create_key(path)


def test_payout_defaults_to_the_provider_key_and_checks_base58() -> None:
    key = public_key(seed_for("p"))
    assert parse_payout(None, key) == key
    address = bytes(range(32))
    assert parse_payout(base58.b58encode(address).decode(), key) == address
    for bad in ("0OIl", "abc", base58.b58encode(bytes(31)).decode()):
        with pytest.raises(ProviderConfigError, match="--payout"):
            parse_payout(bad, key)


def test_coordinates_in_microdegrees() -> None:
    assert microdegrees(48.8566, 90, "lat") == 48_856_600
    assert microdegrees(-180.0, 180, "lon") == -180_000_000
    for bad in (90.5, float("nan"), float("inf")):
        with pytest.raises(ProviderConfigError, match="--lat"):
            microdegrees(bad, 90, "lat")


def test_registration_is_signed_and_decodes(tmp_path: Path) -> None:
    seed = seed_for("provider")
    options = ProviderOptions(tmp_path / "k", region="eu-west", lat=48.85, lon=2.35)
    addr = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWExample"
    registration = build_registration(seed, "testnet", options, addr, 9000, 1_700_000_000)
    registration.verify()
    assert registration.provider == public_key(seed) == registration.payout
    assert (registration.lat_microdeg, registration.lon_microdeg) == (48_850_000, 2_350_000)
    assert (registration.data_host, registration.data_port) == ("127.0.0.1", 9000)
    encoded = registration.encode()
    assert len(encoded) <= MAX_REGISTRATION_BYTES
    decoded = decode_message(encoded, MAX_REGISTRATION_BYTES)
    assert isinstance(decoded, Registration) and decoded == registration


def test_data_port_in_use_is_an_operator_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ProviderConfigError, match="choose another --data-port"):
            open_data_listener("127.0.0.1", port)
    finally:
        taken.close()
