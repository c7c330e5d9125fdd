"""`validator claim` / `pool` / `provide --auto-claim` argument checks: addresses, URLs, hashes,
key files in both formats, and the payout/payer rule. Every mistake is one UsageError line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from solders.keypair import Keypair

from validator import cli, keys
from validator.cli import UsageError
from validator.cli_pool import (
    load_keypair,
    parse_address,
    parse_hash,
    parse_u64,
    parse_url,
    payout_and_payer,
)

KP = Keypair()


def hex_key(path: Path, kp: Keypair = KP) -> Path:
    keys.write_key(path, bytes(kp)[:32])
    return path


def keygen(path: Path, kp: Keypair = KP, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(list(bytes(kp))))
    path.chmod(mode)
    return path


def test_parse_address_canonical_base58_only() -> None:
    assert parse_address(str(KP.pubkey()), "--x") == KP.pubkey()
    for text in ("", "abc", "0" * 44, "1" + str(KP.pubkey()), str(KP.pubkey()) + "1", "z" * 44, "é" * 40):
        with pytest.raises(UsageError, match="--x"):
            parse_address(text, "--x")


@pytest.mark.parametrize("text", ["http://127.0.0.1:8001", "https://rpc.example.org/", "http://h"])
def test_parse_url_accepts_http(text: str) -> None:
    assert parse_url(text, "--v") == text


@pytest.mark.parametrize("text", ["", "127.0.0.1:8001", "ftp://h", "http://", "http://[::1", "localhost"])
def test_parse_url_refuses_others(text: str) -> None:
    with pytest.raises(UsageError, match="http"):
        parse_url(text, "--v")


def test_parse_hash_and_u64() -> None:
    assert parse_hash("Ab" * 32, "--h") == b"\xab" * 32
    for text in ("", "ab" * 31, "ab" * 33, "zz" * 32, "0x" + "ab" * 31):
        with pytest.raises(UsageError):
            parse_hash(text, "--h")
    assert parse_u64(2**64 - 1, "--n") == 2**64 - 1
    for value, minimum in ((-1, 0), (2**64, 0), (0, 1)):
        with pytest.raises(UsageError):
            parse_u64(value, "--n", minimum)


def test_load_keypair_reads_both_formats(tmp_path: Path) -> None:
    assert load_keypair(hex_key(tmp_path / "a.key"), "--k").pubkey() == KP.pubkey()
    assert load_keypair(keygen(tmp_path / "b.json"), "--k").pubkey() == KP.pubkey()


@pytest.mark.parametrize("content, needle", [
    ("[1, 2, 3]", "64 bytes"), ("[" + ",".join(["256"] * 64) + "]", "64 bytes"),
    ("[" + ",".join(["true"] * 64) + "]", "64 bytes"), ("[not json", "64 bytes"),
    ("zz" * 32, "not a key file"), ("", "not a key file"),
])
def test_load_keypair_refuses_malformed(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "k"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(UsageError, match=needle):
        load_keypair(path, "--k")


def test_load_keypair_refuses_loose_missing_and_mismatched(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="chmod 600"):
        load_keypair(keygen(tmp_path / "loose.json", mode=0o644), "--k")
    loose_hex = hex_key(tmp_path / "loose.key")
    loose_hex.chmod(0o640)
    with pytest.raises(UsageError, match="chmod 600"):
        load_keypair(loose_hex, "--k")
    with pytest.raises(UsageError, match="no such key file"):
        load_keypair(tmp_path / "missing", "--k")
    mixed = list(bytes(KP)[:32]) + list(bytes(Keypair().pubkey()))
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(mixed))
    path.chmod(0o600)
    with pytest.raises(UsageError, match="does not match"):
        load_keypair(path, "--k")


def test_payout_and_payer(tmp_path: Path) -> None:
    key = hex_key(tmp_path / "payout.key")
    other = Keypair()
    payer_file = keygen(tmp_path / "payer.json", other)
    assert payout_and_payer(str(key), None) == (KP.pubkey(), load_keypair(key, "x"))
    payout, payer = payout_and_payer(str(KP.pubkey()), str(payer_file))
    assert (payout, payer.pubkey()) == (KP.pubkey(), other.pubkey())
    payout, payer = payout_and_payer(str(key), str(payer_file))
    assert (payout, payer.pubkey()) == (KP.pubkey(), other.pubkey())
    with pytest.raises(UsageError, match="--payer"):
        payout_and_payer(str(KP.pubkey()), None)
    with pytest.raises(UsageError, match="neither"):
        payout_and_payer(str(tmp_path / "nope"), None)
    with pytest.raises(UsageError, match="--payer"):
        payout_and_payer(str(key), str(tmp_path / "nope.json"))


def test_claim_and_pool_commands_are_registered() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["claim", "--payout", "x", "--validator", "http://v"])
    assert (args.rpc_url, args.payer, args.json) == ("", None, False)
    args = parser.parse_args(["pool", "show", "--rpc-url", "u", "--program-id", "p", "--pool", "q"])
    assert args.pool_command == "show"
    args = parser.parse_args(["pool", "init", "--rpc-url", "u", "--program-id", "p", "--network", "n",
                              "--authority", "a", "--mint", "m", "--epoch-budget", "1", "--claim-window", "1"])
    assert (args.start_after, args.pool_keypair) == ("0" * 64, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["pool"])


def test_main_turns_usage_errors_into_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["claim", "--payout", str(KP.pubkey()), "--validator", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("validator claim: ") and "--payer" in err and len(err.splitlines()) == 1


# -- provide --auto-claim ------------------------------------------------------------------------
def _provide_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["provide", "--network", "n.toml", "--key", "k", *argv])


def test_provide_auto_claim_flags_and_defaults() -> None:
    from validator.cli_provider import _check_auto_claim

    args = _provide_args()
    assert (args.auto_claim, args.validator, args.rpc_url) == (False, "", "")
    _check_auto_claim(args)
    _check_auto_claim(_provide_args("--auto-claim", "--validator", "http://127.0.0.1:8001"))
    _check_auto_claim(_provide_args("--auto-claim", "--validator", "http://v", "--rpc-url", "http://r"))


@pytest.mark.parametrize("argv, needle", [
    (("--auto-claim",), "needs --validator"),
    (("--rpc-url", "http://r"), "add --auto-claim"),
    (("--auto-claim", "--validator", "v:8001"), "http(s) URL"),
    (("--auto-claim", "--validator", "http://v", "--rpc-url", "x"), "--rpc-url"),
])
def test_provide_auto_claim_mistakes(argv: tuple[str, ...], needle: str) -> None:
    from validator.cli_provider import _check_auto_claim, _Usage

    with pytest.raises(_Usage, match=needle.replace("(", r"\(").replace(")", r"\)")):
        _check_auto_claim(_provide_args(*argv))


def test_auto_claimer_needs_a_validator_url() -> None:
    from tests.factories import make_spec
    from validator.provider import AutoClaimer, ProviderConfigError

    with pytest.raises(ProviderConfigError, match="--validator"):
        AutoClaimer(make_spec()[0], bytes(32), bytes(32), "")
