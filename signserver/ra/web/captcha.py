"""The captcha of the public forms (the documents' password page has one): images from the
`captcha` library's ImageCaptcha; the challenge kept in the session's data as
{"captcha": {"id": ..., "answer": ..., "expires": ...}}, never sent to the browser as text.

A challenge is made when a form that shows it is rendered (the ``forms.captcha()`` macro) or
when the page asks for a new image (POST /captcha/new, with the session's CSRF token); showing
its image (GET /captcha.png) changes nothing, so another site's <img> cannot end a visitor's
challenge. A challenge ends at its first check, right or wrong, or after CAPTCHA_SECONDS. Its
end is recorded in the database (SessionStore.spend_once), not only in the session's data, which
a request under way may write back: of submissions racing with one answer, exactly one is
checked."""

from __future__ import annotations

import secrets

from captcha.image import ImageCaptcha

from signserver.clock import Clock, epoch_seconds
from signserver.ra.web.sessions import SessionStore, WebSession

# Without the look-alikes (0/O, 1/I/L, 2/Z, 5/S, 8/B, U/V): a person reads what a machine wrote.
ALPHABET = "ACDEFGHJKMNPQRTWXY34679"
LENGTH = 5
CAPTCHA_SECONDS = 300
KEY = "captcha"


class Captcha:
    """``sessions``: where a checked challenge is spent; without it no answer is ever right."""

    def __init__(self, clock: Clock, sessions: SessionStore | None = None, width: int = 200, height: int = 70):
        self._clock = clock
        self._sessions = sessions
        self._images = ImageCaptcha(width=width, height=height)

    def new(self, session: WebSession) -> str:
        """A fresh challenge in ``session`` (the previous one ends); returns its id (not secret:
        it tells the image's address apart from the previous one)."""
        challenge = secrets.token_urlsafe(16)
        answer = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
        session.set(KEY, {"id": challenge, "answer": answer,
                          "expires": epoch_seconds(self._clock.now()) + CAPTCHA_SECONDS})
        return challenge

    def image(self, session: WebSession) -> bytes | None:
        """The PNG image of the session's current challenge (None when it has none); the
        challenge is left as it is."""
        challenge = session.get(KEY)
        if not isinstance(challenge, dict) or not isinstance(challenge.get("answer"), str):
            return None
        return self._images.generate(challenge["answer"], format="png").getvalue()

    def check(self, session: WebSession, answer: str) -> bool:
        """Whether ``answer`` is the current challenge's (case and surrounding spaces aside); the
        challenge ends whatever the answer, so each image is worth one try, and is spent in the
        database first: a submission racing with another that spent it is refused. Blocking (a
        database write): an async page calls it through run_in_threadpool.

        Raises: StoreUnavailable.
        """
        challenge = session.pop(KEY)
        if not isinstance(challenge, dict) or not all(isinstance(challenge.get(k), str) for k in ("id", "answer")):
            return False
        expires = challenge.get("expires")
        if not isinstance(expires, int) or epoch_seconds(self._clock.now()) >= expires:
            return False
        if self._sessions is None or not self._sessions.spend_once(challenge["id"], expires):
            return False
        given = answer.strip().upper().encode("utf-8", "replace")
        return secrets.compare_digest(given, challenge["answer"].encode())
