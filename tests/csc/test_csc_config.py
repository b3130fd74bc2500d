"""The [csc] section: where the front listens, or that there is none."""

from __future__ import annotations

import pytest

from signserver.config import load_config
from signserver.errors import ConfigurationError


def test_the_front_listens_on_loopback_8443_by_default_and_empty_disables_it(tmp_path):
    assert load_config(environ={"SIGNSERVER_STATE_DIR": str(tmp_path)}).csc.listen == "127.0.0.1:8443"
    off = load_config(environ={"SIGNSERVER_STATE_DIR": str(tmp_path), "SIGNSERVER_CSC_LISTEN": ""})
    assert off.csc.listen == ""
    moved = load_config(environ={"SIGNSERVER_STATE_DIR": str(tmp_path), "SIGNSERVER_CSC_LISTEN": "0.0.0.0:9443",
                                 "SIGNSERVER_CSC_ACCESS_TOKEN_SECONDS": "600"})
    assert moved.csc.listen == "0.0.0.0:9443" and moved.csc.access_token_seconds == 600


def test_a_malformed_address_names_its_key(tmp_path):
    with pytest.raises(ConfigurationError) as refused:
        load_config(environ={"SIGNSERVER_STATE_DIR": str(tmp_path), "SIGNSERVER_CSC_LISTEN": "no-port"})
    assert refused.value.key == "csc.listen"


def test_the_public_url_comes_from_configuration(tmp_path):
    environ = {"SIGNSERVER_STATE_DIR": str(tmp_path)}
    assert load_config(environ=environ).csc.base_url() == "https://127.0.0.1:8443"
    wildcard = load_config(environ={**environ, "SIGNSERVER_CSC_LISTEN": "0.0.0.0:443"})
    assert wildcard.csc.base_url() == "https://localhost"
    named = load_config(environ={**environ, "SIGNSERVER_CSC_PUBLIC_URL": "https://sign.example.mo/"})
    assert named.csc.base_url() == "https://sign.example.mo"
    for wrong in ("http://sign.example.mo", "sign.example.mo", "https://sign.example.mo/?a=b"):
        with pytest.raises(ConfigurationError) as refused:
            load_config(environ={**environ, "SIGNSERVER_CSC_PUBLIC_URL": wrong})
        assert refused.value.key == "csc.public_url"
