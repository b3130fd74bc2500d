"""Configuration: embedded defaults, the TOML file, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from signserver.config import load_config
from signserver.errors import ConfigurationError
from signserver.secret import Secret

pytestmark = pytest.mark.one_store  # touches no store


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "signserver.toml"
    path.write_text(text)
    return path


def test_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./signserver.toml here
    config = load_config(environ={})
    assert config.state_dir == Path("var")
    assert config.hsm.token_label == "signserver"
    assert config.hsm.module is not None and config.hsm.module.name == "libsofthsm2.so"
    assert config.hsm.user_pin_file == Path("var/hsm/user-pin")
    assert config.server.listen == "127.0.0.1:50051" and config.server.plaintext is False
    assert config.server.batch_scheduling is True
    assert config.tls.cert_file == Path("var/tls/server.pem") and not config.tls.explicit
    assert config.source is None


def test_file_values_relative_to_the_file(tmp_path):
    path = write(tmp_path, 'state_dir = "state"\n[hsm]\ntoken_label = "prod"\n'
                           '[server]\nlisten = "[::1]:7000"\nplaintext = true\n')
    config = load_config(path, environ={})
    assert config.state_dir == tmp_path / "state"
    assert config.hsm.user_pin_file == tmp_path / "state" / "hsm" / "user-pin"
    assert config.hsm.token_label == "prod"
    assert (config.server.host, config.server.port, config.server.plaintext) == ("::1", 7000, True)


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, '[hsm]\ntoken_label = "from-file"\n')
    config = load_config(path, environ={"SIGNSERVER_HSM_TOKEN_LABEL": "from-env",
                                        "SIGNSERVER_STATE_DIR": "/srv/signserver"})
    assert config.hsm.token_label == "from-env"
    assert config.state_dir == Path("/srv/signserver")


def test_the_transport_key_size_is_3072_bits_unless_set(tmp_path):
    assert load_config(environ={"SIGNSERVER_STATE_DIR": str(tmp_path)}).hsm.transport_key_bits == 3072
    path = write(tmp_path, '[hsm]\ntransport_key_bits = 4096\n')
    assert load_config(path, environ={}).hsm.transport_key_bits == 4096
    assert load_config(path, environ={"SIGNSERVER_HSM_TRANSPORT_KEY_BITS": "2048"}).hsm.transport_key_bits == 2048


def test_workers_keep_the_default_scheduling_when_told(tmp_path):
    config = load_config(environ={"SIGNSERVER_SERVER_BATCH_SCHEDULING": "false", "SIGNSERVER_STATE_DIR": str(tmp_path)})
    assert config.server.batch_scheduling is False


def test_config_file_from_environment(tmp_path):
    path = write(tmp_path, '[hsm]\ntoken_label = "named"\n')
    assert load_config(environ={"SIGNSERVER_CONFIG": str(path)}).hsm.token_label == "named"


@pytest.mark.parametrize("text,key,reason", [
    ('[server]\nlisten = "nonsense"\n', "server.listen", "HOST:PORT"),
    ('[server]\nlisten = "127.0.0.1:99999"\n', "server.listen", "out of range"),
    ('[server]\nlisten = "0.0.0.0:50051"\nplaintext = true\n', "server.plaintext", "loopback"),
    ('[server]\nplaintext = "maybe"\n', "server.plaintext", "true or false"),
    ('[server]\nbatch_scheduling = "sometimes"\n', "server.batch_scheduling", "true or false"),
    ('[hsm]\nmodule = "/nowhere/libpkcs11.so"\n', "hsm.module", "no PKCS#11 module"),
    ('[hsm]\ntoken_label = ""\n', "hsm.token_label", "non-empty"),
    ('[hsm]\ntoken_label = "' + "x" * 33 + '"\n', "hsm.token_label", "32 bytes"),
    ('[hsm]\nuser_pin = "1234"\n', "hsm.user_pin", "secrets do not belong"),
    ('[hsm]\ntoken_lable = "typo"\n', "hsm.token_lable", "unknown key"),
    ('[hsm]\ntransport_key_bits = 1024\n', "hsm.transport_key_bits", "one of 2048, 3072, 4096, not 1024"),
    ('[hsm]\ntransport_key_bits = "large"\n', "hsm.transport_key_bits", "whole number"),
    ('[tls]\ncert_file = "/nowhere/cert.pem"\n', "tls.key_file", "go together"),
    ('[tls]\ncert_file = "c.pem"\nkey_file = "k.pem"\n', "tls.cert_file", "no file"),
    ('[tls]\nclient_ca_file = "ca.pem"\n', "tls.client_ca_file", "no file"),
    ('state_dir = [1, 2]\n', "state_dir", "string"),
    ('[http]\ntsa_rate_per_second = 0\n', "http.tsa_rate_per_second", "between 1 and"),
    ('[http]\ntsa_burst = "many"\n', "http.tsa_burst", "whole number"),
    ('[http]\nocsp_rate_per_second = 0\n', "http.ocsp_rate_per_second", "between 1 and"),
    ('[http]\nocsp_burst = 1.5\n', "http.ocsp_burst", "whole number"),
    ('[http]\nmax_connections = 0\n', "http.max_connections", "between 1 and"),
    ('[http]\nrequest_timeout_seconds = 0\n', "http.request_timeout_seconds", "between 1 and"),
    ('[http]\nthreads = 1000\n', "http.threads", "between 1 and"),
    ('[http]\ntsa_threads = 0\n', "http.tsa_threads", "between 1 and"),
    ('[database]\nurl = "sqlite://"\n', "database.url", "SQLite needs a file"),
    ('[database]\nurl = "sqlite:///:memory:"\n', "database.url", "SQLite needs a file"),
    ('[database]\nurl = "mysql://db/signserver"\n', "database.url", "sqlite:/// or a postgresql+psycopg://"),
    ('[database]\nurl = "sqlite+pysqlcipher:///var/x.db"\n', "database.url", "sqlite:/// or a postgresql+psycopg://"),
    ('[pades]\ntime_zone = "Mars/Olympus"\n', "pades.time_zone", "unknown time zone"),
    ('[pades]\ntime_zone = "America"\n', "pades.time_zone", "unknown time zone"),
    ('[pades]\ntime_zone = "' + "x" * 300 + '"\n', "pades.time_zone", "unknown time zone"),
])
def test_invalid_values_name_the_key_and_reason(tmp_path, text, key, reason):
    with pytest.raises(ConfigurationError) as caught:
        load_config(write(tmp_path, text), environ={})
    assert caught.value.key == key
    assert reason in str(caught.value)


def test_invalid_toml_is_reported(tmp_path):
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config(write(tmp_path, "[server\n"), environ={})


def test_invalid_environment_value_names_the_key():
    with pytest.raises(ConfigurationError, match="server.plaintext"):
        load_config(environ={"SIGNSERVER_SERVER_LISTEN": "10.1.2.3:50051",
                             "SIGNSERVER_SERVER_PLAINTEXT": "true"})


def test_user_pin_from_environment_or_private_file(tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text("s3cret\n")
    pin_file.chmod(0o600)
    config = load_config(write(tmp_path, f'[hsm]\nuser_pin_file = "{pin_file}"\n'), environ={})
    assert config.hsm.user_pin(environ={}) == Secret("s3cret")
    assert config.hsm.user_pin(environ={"SIGNSERVER_HSM_USER_PIN": "other"}) == Secret("other")

    pin_file.chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by other users"):
        config.hsm.user_pin(environ={})
    pin_file.unlink()
    with pytest.raises(ConfigurationError, match="hsm.user_pin_file: no file"):
        config.hsm.user_pin(environ={})


def test_a_user_pin_in_the_environment_that_is_not_text_is_a_configuration_error(tmp_path):
    """A byte in another encoding reaches Python as a lone surrogate, which python-pkcs11 fails to
    encode at the login (`signserver serve` ended with a traceback)."""
    config = load_config(write(tmp_path, ""), environ={})
    with pytest.raises(ConfigurationError, match="SIGNSERVER_HSM_USER_PIN: not valid UTF-8") as refused:
        config.hsm.user_pin(environ={"SIGNSERVER_HSM_USER_PIN": "\udcff1234"})
    assert "1234" not in str(refused.value)


def test_secrets_never_show_in_repr():
    secret = Secret("1234-pin")
    assert "1234" not in repr(secret) and "1234" not in str(secret) and "1234" not in f"{secret}"
    assert secret.reveal() == "1234-pin"


def test_profile_settings(tmp_path):
    path = write(tmp_path, '[ca.profiles.cloud-signature-government]\nvalidity_days = 730\n'
                           'policy_oid = "1.3.6.1.4.1.99999.1.2"\n')
    settings = load_config(path, environ={}).ca.profile_settings
    assert settings == {"cloud-signature-government": {"validity_days": 730, "policy_oid": "1.3.6.1.4.1.99999.1.2"}}
    with pytest.raises(ConfigurationError, match="dotted object identifier"):
        load_config(write(tmp_path, '[ca.profiles.standard-corporate]\npolicy_oid = "not-an-oid"\n'), environ={})
    with pytest.raises(ConfigurationError, match="a profile setting is one of"):
        load_config(write(tmp_path, '[ca.profiles.standard-corporate]\ncolour = "blue"\n'), environ={})


def test_http_limits_defaults_file_and_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    defaults = load_config(environ={}).http
    assert (defaults.threads, defaults.tsa_threads, defaults.tsa_rate_per_second, defaults.tsa_burst) == (4, 1, 20, 40)
    assert (defaults.ocsp_rate_per_second, defaults.ocsp_burst) == (10, 30)
    assert defaults.max_connections == 2048 and defaults.request_timeout_seconds == 10
    path = write(tmp_path, '[http]\nlisten = "127.0.0.1:8081"\ntsa_rate_per_second = 5\ntsa_burst = 10\n'
                           'tsa_threads = 2\nthreads = 8\nmax_connections = 500\nrequest_timeout_seconds = 30\n'
                           'ocsp_rate_per_second = 3\nocsp_burst = 6\n')
    config = load_config(path, environ={"SIGNSERVER_HTTP_TSA_BURST": "12", "SIGNSERVER_HTTP_OCSP_BURST": "7"})
    assert (config.http.ocsp_rate_per_second, config.http.ocsp_burst) == (3, 7)
    assert config.http_listen == "127.0.0.1:8081"
    assert (config.http.tsa_rate_per_second, config.http.tsa_burst, config.http.tsa_threads) == (5, 12, 2)
    assert (config.http.threads, config.http.max_connections, config.http.request_timeout_seconds) == (8, 500, 30)


def test_settings_whose_default_is_empty_may_be_written_empty(tmp_path):
    """The file may say what the defaults say (README's example writes ``username = ""``)."""
    path = write(tmp_path, '[smtp]\nusername = ""\n[csc]\npublic_url = ""\n[pades]\ntsa_url = ""\n')
    config = load_config(path, environ={})
    assert config.smtp.username == ""
    assert config.csc.public_url == "" and config.csc.base_url() == "https://127.0.0.1:8443"
    assert config.pades.tsa_url is None
    from_environment = load_config(environ={"SIGNSERVER_SMTP_USERNAME": "", "SIGNSERVER_STATE_DIR": str(tmp_path)})
    assert from_environment.smtp.username == ""


@pytest.mark.parametrize("text,key", [
    ('[server]\nlisten = "127.0.0.1:9000"\n[http]\nlisten = "127.0.0.1:9000"\n', "http.listen"),
    ('[server]\nlisten = "127.0.0.1:9000"\n[csc]\nlisten = "0.0.0.0:9000"\n', "csc.listen"),
    ('[http]\nlisten = "[::]:9000"\n[csc]\nlisten = "127.0.0.1:9000"\n', "csc.listen"),
    ('[csc]\nlisten = "localhost:9000"\n[metrics]\nlisten = "127.0.0.1:9000"\n', "metrics.listen"),
    ('[server]\nlisten = "127.0.0.1:8443"\n', "csc.listen"),  # the CSC front's default port
])
def test_two_fronts_on_one_address_are_refused(tmp_path, text, key):
    """Every front binds its port with SO_REUSEPORT: two on one address would each take a share of
    the other's connections."""
    with pytest.raises(ConfigurationError) as caught:
        load_config(write(tmp_path, text), environ={})
    assert caught.value.key == key
    assert "its own" in str(caught.value)


def test_fronts_on_one_port_of_different_addresses_or_on_free_ports_are_accepted(tmp_path):
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:9000"\n[http]\nlisten = "127.0.0.2:9000"\n'
                           '[csc]\nlisten = "127.0.0.1:0"\n[metrics]\nlisten = "127.0.0.1:0"\n')
    config = load_config(path, environ={"SIGNSERVER_CSC_LISTEN": "127.0.0.1:0"})
    assert (config.server.listen, config.http_listen, config.csc.listen) == ("127.0.0.1:9000", "127.0.0.2:9000",
                                                                             "127.0.0.1:0")


def test_a_mistyped_environment_variable_is_named_with_the_setting_it_is_closest_to(tmp_path, caplog):
    config = load_config(None,
                         environ={"SIGNSERVER_SERVER_LISTN": "0.0.0.0:9999", "SIGNSERVER_STATE_DIR": str(tmp_path),
                                  "SIGNSERVER_HSM_USER_PIN": "1234", "SIGNSERVER_RA_LISTEN": "127.0.0.1:1",
                                  "SIGNSERVER_NONSENSE": "secret-value"})
    assert config.server.listen != "0.0.0.0:9999"  # ignored, as before
    warned = [r.getMessage() for r in caplog.records if r.name == "signserver.config.loading"]
    assert warned == [
        "the environment variable SIGNSERVER_NONSENSE is no setting and is ignored",
        "the environment variable SIGNSERVER_SERVER_LISTN is no setting and is ignored "
        "(did you mean SIGNSERVER_SERVER_LISTEN?)"]
    assert "secret-value" not in caplog.text and "1234" not in caplog.text


def test_every_environment_variable_the_code_reads_is_known_to_the_loader():
    """So that no variable a command reads is ever warned of as a mistake."""
    import re

    from signserver.config.loading import _KEYS, OTHER_PREFIXES, OTHER_VARIABLES, env_name

    known = {env_name(key) for key in _KEYS} | OTHER_VARIABLES
    source = Path(__file__).resolve().parents[1] / "signserver"
    read = {name for path in source.rglob("*.py") for name in re.findall(r"\bSIGNSERVER_[A-Z0-9_]*[A-Z0-9]\b",
                                                                         path.read_text())}
    assert read and not sorted(n for n in read if n not in known and not n.startswith(OTHER_PREFIXES))


@pytest.mark.parametrize("host, security, refused", [
    ("mail.example.mo", "none", True), ("mail.example.mo", "starttls", False), ("mail.example.mo", "tls", False),
    ("127.0.0.1", "none", False), ("localhost", "none", False)])
def test_an_smtp_login_in_the_clear_is_refused_off_this_machine(tmp_path, host, security, refused):
    environ = {"SIGNSERVER_STATE_DIR": str(tmp_path), "SIGNSERVER_SMTP_HOST": host,
               "SIGNSERVER_SMTP_SECURITY": security, "SIGNSERVER_SMTP_USERNAME": "signserver"}
    if refused:
        with pytest.raises(ConfigurationError, match="smtp.security.*in the clear"):
            load_config(None, environ=environ)
    else:
        assert load_config(None, environ=environ).smtp.username == "signserver"
    del environ["SIGNSERVER_SMTP_USERNAME"]  # no login: nothing secret crosses
    assert load_config(None, environ=environ).smtp.security == security


def test_a_pin_file_that_is_not_text_is_refused_without_quoting_it(tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_bytes(b"12\xff4-secret")
    pin_file.chmod(0o600)
    config = load_config(write(tmp_path, f'[hsm]\nuser_pin_file = "{pin_file}"\n'), environ={})
    with pytest.raises(ConfigurationError, match="not UTF-8 text") as refused:
        config.hsm.user_pin(environ={})
    assert "0xff" not in str(refused.value) and "position" not in str(refused.value)


@pytest.mark.parametrize("given, expected", [(None, "auto"), ("auto", "auto"), ("none", 0), ("0", 0), (0, 0),
                                             ("1024", 1024), (4096, 4096)])
def test_worker_memory_bound_auto_none_or_mib(tmp_path, given, expected):
    environ = {} if given is None else {"SIGNSERVER_SERVER_WORKER_MEMORY_MB": str(given)}
    assert load_config(environ=environ).server.worker_memory_mb == expected
    if given is not None and not isinstance(given, str):
        path = write(tmp_path, f"[server]\nworker_memory_mb = {given}\n")
        assert load_config(path, environ={}).server.worker_memory_mb == expected


@pytest.mark.parametrize("given", ["100", "-1", "lots", "1.5", "true", "99999999999"])
def test_a_worker_memory_bound_that_is_no_bound_is_refused_saying_what_is(given):
    with pytest.raises(ConfigurationError) as refused:
        load_config(environ={"SIGNSERVER_SERVER_WORKER_MEMORY_MB": given})
    assert "server.worker_memory_mb" in str(refused.value)
    assert '"auto"' in str(refused.value) and '"none"' in str(refused.value) and "MiB" in str(refused.value)


def test_a_streams_idle_time_is_30_s_or_as_set_within_an_uploads_time(tmp_path):
    assert load_config(environ={}).server.stream_idle_seconds == 30
    assert load_config(write(tmp_path, "[server]\nstream_idle_seconds = 90\n"), environ={}).server.stream_idle_seconds == 90
    assert load_config(environ={"SIGNSERVER_SERVER_STREAM_IDLE_SECONDS": "5"}).server.stream_idle_seconds == 5
    for given in ("0", "601", "soon", "1.5"):
        with pytest.raises(ConfigurationError) as refused:
            load_config(environ={"SIGNSERVER_SERVER_STREAM_IDLE_SECONDS": given})
        assert "server.stream_idle_seconds" in str(refused.value), given


def test_the_automatic_worker_memory_bound_follows_documents_and_the_machine(tmp_path):
    from signserver.grpc_api.worker_memory import worker_memory_bound

    config = load_config(environ={"SIGNSERVER_PADES_MAX_DOCUMENT_MB": "200"})
    assert worker_memory_bound(config, 2, machine_bytes=24 << 30) == (512 + 2 * 2 * 200) << 20
    assert worker_memory_bound(config, 8, machine_bytes=4 << 30) == 512 << 20  # the machine's share
    assert worker_memory_bound(config, 64, machine_bytes=4 << 30) == 256 << 20  # never below a worker's start
    none = load_config(environ={"SIGNSERVER_SERVER_WORKER_MEMORY_MB": "none"})
    assert worker_memory_bound(none, 2, machine_bytes=24 << 30) is None
    fixed = load_config(environ={"SIGNSERVER_SERVER_WORKER_MEMORY_MB": "700"})
    assert worker_memory_bound(fixed, 2, machine_bytes=1 << 30) == 700 << 20  # said, and kept (a warning)
