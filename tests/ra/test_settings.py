"""The [ra] section: defaults, the file, the environment, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from signserver.config import load_config
from signserver.ra.errors import SettingsError
from signserver.ra.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "signserver.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(tmp_path):
    settings = load_settings(write(tmp_path, ""), environ={})
    assert settings.listen == "127.0.0.1:8450" and (settings.host, settings.port) == ("127.0.0.1", 8450)
    assert settings.database == "sqlite:///var/ra/ra.sqlite"  # under the state directory, as the core's
    assert (settings.notice_days, settings.code_seconds, settings.code_attempts, settings.reuse_days) == (30, 300, 5, 30)
    assert (settings.code_sends, settings.code_failures, settings.registry_lookups, settings.face_comparisons) == \
        (5, 10, 5, 5)


def test_the_file_and_the_environment(tmp_path):
    path = write(tmp_path, 'state_dir = "state"\n[ra]\nlisten = "0.0.0.0:9000"\nclient_cert = "ra.pem"\n'
                           'face_threshold = 0.75\nregistry_url = "https://registry.example.mo/api/"\n')
    settings = load_settings(path, environ={"SIGNSERVER_RA_CODE_SECONDS": "120"})
    assert settings.listen == "0.0.0.0:9000" and settings.client_cert == tmp_path / "ra.pem"
    assert settings.face_threshold == 0.75 and settings.code_seconds == 120
    assert settings.registry_url == "https://registry.example.mo/api"
    assert settings.database.endswith("state/ra/ra.sqlite")


def test_the_core_reads_the_same_file_and_ignores_the_ra_section(tmp_path):
    path = write(tmp_path, 'state_dir = "state"\n[ra]\nlisten = "127.0.0.1:8450"\n')
    assert load_config(path, environ={}).state_dir == load_settings(path, environ={}).state_dir == tmp_path / "state"


@pytest.mark.parametrize("line, named", [
    ('listen = "nowhere"', "ra.listen"),
    ("face_threshold = 1.5", "ra.face_threshold"),
    ("code_attempts = 0", "ra.code_attempts"),
    ("code_failures = 0", "ra.code_failures"),
    ('face_comparisons = "many"', "ra.face_comparisons"),
    ('code_seconds = "soon"', "ra.code_seconds"),
    ('database_url = "mysql://x"', "ra.database_url"),
    ('registry_url = "ftp://registry"', "ra.registry_url"),
    ("colour = 3", "ra.colour"),
])
def test_a_bad_setting_is_named(tmp_path, line, named):
    with pytest.raises(SettingsError, match=named.replace(".", r"\.")):
        load_settings(write(tmp_path, f"[ra]\n{line}\n"), environ={})


def test_a_missing_or_broken_file(tmp_path):
    with pytest.raises(SettingsError, match="no configuration file"):
        load_settings(tmp_path / "absent.toml", environ={})
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(write(tmp_path, "[ra\n"), environ={})


def test_tls_for_the_api_and_the_registry_are_read(tmp_path):
    path = write(tmp_path, '[ra]\nlisten = "0.0.0.0:8450"\ntls_cert = "api.pem"\ntls_key = "api-key.pem"\n'
                           'registry_ca = "registry-ca.pem"\nregistry_client_cert = "ra-registry.pem"\n'
                           'registry_client_key = "ra-registry-key.pem"\n')
    settings = load_settings(path, environ={})
    assert settings.api_tls == (tmp_path / "api.pem", tmp_path / "api-key.pem")
    assert settings.registry_ca == tmp_path / "registry-ca.pem"
    assert settings.registry_client_files == (tmp_path / "ra-registry.pem", tmp_path / "ra-registry-key.pem")


@pytest.mark.parametrize("listen", ["127.0.0.1:8450", "localhost:8450", "[::1]:8450", "127.0.0.2:8450"])
def test_the_api_may_be_plain_http_on_loopback(tmp_path, listen):
    assert load_settings(write(tmp_path, f'[ra]\nlisten = "{listen}"\n'), environ={}).api_tls is None


@pytest.mark.parametrize("listen", ["0.0.0.0:8450", "[::]:8450", "192.0.2.10:8450", "ra.example.mo:8450"])
def test_a_listen_beyond_loopback_without_tls_is_refused(tmp_path, listen):
    settings = load_settings(write(tmp_path, f'[ra]\nlisten = "{listen}"\n'), environ={})
    with pytest.raises(SettingsError, match=r"ra\.listen.*ra\.tls_cert"):
        settings.api_tls


def test_half_a_tls_pair_is_refused(tmp_path):
    with pytest.raises(SettingsError, match=r"ra\.tls_cert and ra\.tls_key"):
        load_settings(write(tmp_path, '[ra]\ntls_cert = "api.pem"\n'), environ={}).api_tls
    with pytest.raises(SettingsError, match=r"ra\.registry_client_cert and ra\.registry_client_key"):
        load_settings(write(tmp_path, '[ra]\nregistry_client_key = "k.pem"\n'), environ={}).registry_client_files


def test_any_operator_when_none_is_listed(tmp_path):
    settings = load_settings(write(tmp_path, ""), environ={})
    assert settings.check_operator(" anyone ") == "anyone"
    with pytest.raises(SettingsError, match="operator name is required"):
        settings.check_operator("  ")


def test_only_the_listed_operators_when_some_are(tmp_path):
    settings = load_settings(write(tmp_path, '[ra]\noperators = ["ho-ka", "leong-s"]\n'),
                             environ={"SIGNSERVER_RA_OPERATORS": "ho-ka, leong-s"})
    assert settings.check_operator("leong-s") == "leong-s"
    with pytest.raises(SettingsError, match=r"'mallory' is not one of ra\.operators"):
        settings.check_operator("mallory")


def test_the_operators_password_costs(tmp_path):
    assert (load_settings(write(tmp_path, ""), environ={}).operator_argon2_memory_kib,
            load_settings(write(tmp_path, ""), environ={}).operator_argon2_time_cost) == (19_456, 2)  # OWASP's
    path = write(tmp_path, "[ra]\noperator_argon2_memory_kib = 65536\noperator_argon2_time_cost = 3\n")
    settings = load_settings(path, environ={})
    assert (settings.operator_argon2_memory_kib, settings.operator_argon2_time_cost) == (65_536, 3)
    with pytest.raises(SettingsError, match=r"ra\.operator_argon2_time_cost"):
        load_settings(path, environ={"SIGNSERVER_RA_OPERATOR_ARGON2_TIME_COST": "0"})
    with pytest.raises(SettingsError, match=r"ra\.operator_argon2_memory_kib"):
        load_settings(path, environ={"SIGNSERVER_RA_OPERATOR_ARGON2_MEMORY_KIB": "4"})


def test_the_core_timeout(tmp_path):
    assert load_settings(write(tmp_path, ""), environ={}).core_timeout_seconds == 30.0
    path = write(tmp_path, "[ra]\ncore_timeout_seconds = 12.5\n")
    assert load_settings(path, environ={}).core_timeout_seconds == 12.5
    with pytest.raises(SettingsError, match=r"ra\.core_timeout_seconds"):
        load_settings(path, environ={"SIGNSERVER_RA_CORE_TIMEOUT_SECONDS": "0"})


@pytest.mark.parametrize("listen, tls, public_url", [
    ("127.0.0.1:8450", "", "http://localhost:8450"),
    ("127.0.0.1:9000", "", "http://localhost:9000"),  # the e-mails' links reach the port listened on
    ("0.0.0.0:9443", 'tls_cert = "api.pem"\ntls_key = "api-key.pem"\n', "https://localhost:9443"),
])
def test_public_url_follows_the_address_listened_on_unless_set(tmp_path, listen, tls, public_url):
    settings = load_settings(write(tmp_path, f'[ra]\nlisten = "{listen}"\n{tls}'), environ={})
    assert settings.public_url == public_url
    assert load_settings(write(tmp_path, f'[ra]\nlisten = "{listen}"\npublic_url = "https://ra.example.mo"\n'),
                         environ={}).public_url == "https://ra.example.mo"


def test_a_listen_on_port_0_learns_its_port_once_bound(tmp_path):
    settings = load_settings(write(tmp_path, '[ra]\nlisten = "127.0.0.1:0"\n'), environ={})
    assert settings.port == 0 and settings.public_url == ""  # not known before the port is bound
    bound = settings.listening_on(43210)
    assert bound.listen == "127.0.0.1:43210" and bound.public_url == "http://localhost:43210"
    assert load_settings(write(tmp_path, '[ra]\nlisten = "[::1]:0"\n'), environ={}).listening_on(43210).listen == \
        "[::1]:43210"


def test_with_port_0_the_links_take_the_address_the_running_ra_recorded(tmp_path):
    from signserver.ra.serving_address import recorded

    settings = load_settings(write(tmp_path, 'state_dir = "state"\n[ra]\nlisten = "127.0.0.1:0"\n'), environ={})
    with pytest.raises(SettingsError, match=r"ra\.public_url: not set") as refused:
        settings.pages_url()  # no RA runs: its port is not known
    assert "serving.json" in str(refused.value) and "Nothing was done" in str(refused.value)
    bound = settings.listening_on(43210)
    with recorded(settings.state_dir, bound.listen, bound.public_url) as path:
        assert settings.pages_url() == "http://localhost:43210"
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
        path.chmod(0o622)  # writable by others: whoever wrote it could send holders elsewhere
        with pytest.raises(SettingsError, match=r"ra\.public_url"):
            settings.pages_url()
        path.chmod(0o600)
    assert not path.exists()  # removed when the RA stops
    assert load_settings(write(tmp_path, 'state_dir = "state"\n[ra]\nlisten = "127.0.0.1:0"\n'
                                         'public_url = "https://ra.example.mo"\n'), environ={}).pages_url() == \
        "https://ra.example.mo"
