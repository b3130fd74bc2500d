"""A SIGNSERVER_RA_* variable that is no setting of the RA is named in a warning, with the
setting it is closest to (the core leaves these names to the RA); its value is never said."""

from __future__ import annotations

import logging

from signserver.ra.settings import load_settings


def test_a_mistyped_variable_is_named_with_the_closest_setting(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="signserver.ra.settings")
    settings = load_settings(path=None, environ={
        "SIGNSERVER_STATE_DIR": str(tmp_path), "SIGNSERVER_RA_LISTNE": "127.0.0.1:9999",
        "SIGNSERVER_RA_NOTHING_LIKE_IT": "a-secret-value"})
    warnings = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert len(warnings) == 2, warnings
    assert "SIGNSERVER_RA_LISTNE" in warnings[0] and "did you mean SIGNSERVER_RA_LISTEN?" in warnings[0]
    assert "SIGNSERVER_RA_NOTHING_LIKE_IT" in warnings[1] and "did you mean" not in warnings[1]
    assert "a-secret-value" not in caplog.text and "9999" not in caplog.text
    assert settings.listen != "127.0.0.1:9999"


def test_settings_and_the_operator_variable_pass_without_a_word(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="signserver.ra.settings")
    load_settings(path=None, environ={"SIGNSERVER_STATE_DIR": str(tmp_path), "SIGNSERVER_RA_LISTEN": "127.0.0.1:9999",
                                      "SIGNSERVER_RA_CODE_SECONDS": "120", "SIGNSERVER_RA_OPERATOR": "ho-ka",
                                      "SIGNSERVER_HSM_PIN": "not the RA's"})
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
