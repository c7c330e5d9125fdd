"""Keys and `validator init` (issue 12, item 2): solana-keygen's JSON keypair format both ways
(checked against solders' own `Keypair.to_json` / `from_json`, the format solana-keygen
writes), `keys show`, `keys export-payer`, and what `init` refuses or asks for."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
from contextlib import redirect_stdout
from pathlib import Path

import base58
import pytest
from solders.keypair import Keypair

from p2p.host import peer_id_from_seed
from validator import cli
from validator.cli import UsageError
from validator.cli_keys import ask_location
from validator.config import load_config
from validator.keys import KeyFileError, read_key, write_key, write_solana_keypair
from validator.node import load_keys


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def keygen_file(path: Path, keypair: Keypair) -> Path:
    path.write_text(keypair.to_json())
    path.chmod(0o600)
    return path


def test_solana_keygen_json_round_trips(tmp_path: Path) -> None:
    wallet = Keypair()
    assert read_key(keygen_file(tmp_path / "wallet.json", wallet)) == bytes(wallet)[:32]
    seed = os.urandom(32)
    write_solana_keypair(tmp_path / "out.json", seed)
    written = tmp_path / "out.json"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert Keypair.from_json(written.read_text()) == Keypair.from_seed(seed)
    assert read_key(written) == seed
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_solana_keypair(written, seed)


def test_a_keygen_file_must_be_whole_and_private(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps(list(bytes(Keypair())[:32]) + list(bytes(Keypair().pubkey()))))
    mixed.chmod(0o600)
    with pytest.raises(KeyFileError, match="does not match"):
        read_key(mixed)
    loose = keygen_file(tmp_path / "loose.json", Keypair())
    loose.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_key(loose)
    short = tmp_path / "short.json"
    short.write_text("[1, 2, 3]")
    short.chmod(0o600)
    with pytest.raises(KeyFileError, match="64 bytes"):
        read_key(short)


def init(tmp_path: Path, folder: str = "v0", *extra: str) -> tuple[int, str]:
    return run("init", "--data-dir", str(tmp_path / folder), "--region", "eu-west",
               "--lat", "48.85", "--lon", "2.35", *extra)


def test_a_solana_wallet_can_be_the_payer_and_keys_show_names_it(tmp_path: Path) -> None:
    assert init(tmp_path)[0] == 0
    folder = tmp_path / "v0"
    wallet = Keypair()
    (folder / "payer.key").unlink()
    keygen_file(folder / "payer.key", wallet)
    keys = load_keys(load_config(folder / "config.toml"))
    assert keys.payer == bytes(wallet)[:32]

    code, out = run("keys", "show", "--config", str(folder / "config.toml"), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["payer"] == {"public": str(wallet.pubkey()),
                                            "file": str(folder / "payer.key")}
    assert shown["peer_id"]["public"] == peer_id_from_seed(read_key(folder / "identity.key"))
    assert base58.b58decode(shown["signing_key"]["public"]) == Keypair.from_seed(
        read_key(folder / "signing.key")).pubkey().__bytes__()
    code, text = run("keys", "show", "--config", str(folder / "config.toml"))
    assert code == 0 and str(wallet.pubkey()) in text and str(folder / "identity.key") in text

    out_path = tmp_path / "payer-export.json"
    assert run("keys", "export-payer", "--config", str(folder / "config.toml"),
               "--out", str(out_path))[0] == 0
    assert Keypair.from_json(out_path.read_text()) == wallet
    assert run("keys", "export-payer", "--config", str(folder / "config.toml"),
               "--out", str(out_path))[0] == 2  # never overwritten


def test_init_never_overwrites_config_unless_forced_and_keeps_keys(tmp_path: Path) -> None:
    assert init(tmp_path)[0] == 0
    folder = tmp_path / "v0"
    signing = read_key(folder / "signing.key")
    (folder / "config.toml").write_text("# edited by the operator\n")
    assert init(tmp_path)[0] == 2
    assert (folder / "config.toml").read_text() == "# edited by the operator\n"
    code, out = init(tmp_path, "v0", "--force", "--http-port", "9100")
    assert code == 0 and load_config(folder / "config.toml").http_port == 9100
    assert read_key(folder / "signing.key") == signing


def test_init_names_the_network_relative_to_the_data_directory(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.chdir(tmp_path)
    assert init(tmp_path, "a")[0] == 0  # default: network.toml in the data directory
    assert init(tmp_path, "b", "--network", "../shared/network.toml")[0] == 0
    elsewhere = tmp_path.parent / "spec-elsewhere.toml"
    assert init(tmp_path, "c", "--network", str(elsewhere))[0] == 0
    monkeypatch.chdir("/")  # the configs work from any working directory
    assert load_config(tmp_path / "a" / "config.toml").network == tmp_path / "a" / "network.toml"
    assert load_config(tmp_path / "b" / "config.toml").network == tmp_path / "shared" / "network.toml"
    assert 'network = "../shared/network.toml"' in (tmp_path / "b" / "config.toml").read_text()
    assert load_config(tmp_path / "c" / "config.toml").network == elsewhere


def location_args(**given: str) -> argparse.Namespace:
    return argparse.Namespace(region=given.get("region"), lat=given.get("lat"),
                              lon=given.get("lon"))


def test_init_asks_for_the_location_or_refuses_without_a_terminal(tmp_path: Path) -> None:
    def never(prompt: str) -> str:
        raise AssertionError(f"asked {prompt!r}")
    assert ask_location(location_args(region="us-east", lat="40.7", lon="-74"),
                        interactive=False, ask=never) == ("us-east", 40.7, -74.0)
    with pytest.raises(UsageError, match="missing --lat --lon") as caught:
        ask_location(location_args(region="us-east"), interactive=False, ask=never)
    assert "\n" not in str(caught.value)
    answers = {"lat (": " 35.7\n", "lon (": "139.7\n"}
    asked: list[str] = []

    def answer(prompt: str) -> str:
        asked.append(prompt)
        return next(a for p, a in answers.items() if prompt.startswith(p))
    assert ask_location(location_args(region="ap-east"), interactive=True,
                        ask=answer) == ("ap-east", 35.7, 139.7)
    assert [p.split(" ")[0] for p in asked] == ["lat", "lon"]
    for bad in (dict(lat="91"), dict(lon="-181"), dict(lat="nan"), dict(lat="north"),
                dict(region="")):
        args = {"region": "eu", "lat": "1", "lon": "2", **bad}
        with pytest.raises(UsageError):
            ask_location(location_args(**args), interactive=False, ask=never)
    # the command itself, with no terminal (pytest's stdin is not one): exit 2, nothing written
    assert run("init", "--data-dir", str(tmp_path / "x"))[0] == 2
    assert not (tmp_path / "x" / "config.toml").exists()


def test_hex_keys_still_read(tmp_path: Path) -> None:
    seed = os.urandom(32)
    write_key(tmp_path / "k", seed)
    assert read_key(tmp_path / "k") == seed
