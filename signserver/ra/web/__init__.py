"""The RA's web pages for holders and operators, served by `signserver ra serve` beside the RA's
JSON API: server-rendered (Jinja2), translated (Babel catalogues under locale/), with server-side
sessions in the RA's database.

The framework (app, rendering, sessions, security, i18n, captcha, limits, forms) is what every
page module builds on: a page module exposes ``routes()`` made with ``rendering.page_route``."""
