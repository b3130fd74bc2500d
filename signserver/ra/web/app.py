"""The RA's web application: the JSON API's routes and the pages in one Starlette app, behind the
security headers and the RA's own request log.

The framework's own pages are here (home, the language switch, the captcha image, signing out);
each page module adds its routes (``routes()``, made with rendering.page_route)."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from signserver.ra.web import (account_pages, holder_pages, operator_enrolment, operator_pages, operator_sign_in,
                               renewal_pages)
from signserver.ra.web.context import WebContext
from signserver.ra.web.i18n import LANGUAGE_COOKIE, LANGUAGES
from signserver.ra.web.rendering import (BadForm, MethodNotAllowed, PageNotFound, error_page, local_path, page_route,
                                         read_form, redirect, render, serve_page)
from signserver.ra.web.security import RequestLog, SecurityHeaders
from signserver.ra.web.sessions import session_of, sign_out

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
LANGUAGE_COOKIE_SECONDS = 365 * 86400
# The page modules, each with routes() made with page_route.
PAGE_MODULES = (account_pages, holder_pages, renewal_pages, operator_sign_in, operator_pages, operator_enrolment)


async def home(request: Request, ctx: WebContext) -> Response:
    return render(request, "home.html")


async def switch_language(request: Request, ctx: WebContext) -> Response:
    """POST /lang: lang (zh-Hant, pt or en) into the ra_lang cookie; 303 back to ``next``."""
    form = await read_form(request)
    chosen = form.get("lang")
    response = redirect(local_path(form.get("next") if isinstance(form.get("next"), str) else None))
    if isinstance(chosen, str) and chosen in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, chosen, max_age=LANGUAGE_COOKIE_SECONDS, secure=True, httponly=True,
                            samesite="lax", path="/")
    return response


async def captcha_image(request: Request, ctx: WebContext) -> Response:
    """GET /captcha.png: the image of the session's current challenge (never cached); it changes
    nothing, so that a foreign page's <img> cannot end a visitor's challenge.

    Raises: PageNotFound: the session has no challenge (no form showed one)."""
    image = await run_in_threadpool(ctx.captcha.image, session_of(request))
    if image is None:
        raise PageNotFound("no captcha in this session")
    return Response(image, media_type="image/png", headers={"Cache-Control": "no-store"})


async def new_captcha_image(request: Request, ctx: WebContext) -> Response:
    """POST /captcha/new (with the session's CSRF token, as every POST): a new challenge in place
    of the session's own, as an image (the form's "new image" link, with JavaScript; without it,
    the link reloads the form, which makes a new challenge too)."""
    ctx.captcha.new(session_of(request))
    image = await run_in_threadpool(ctx.captcha.image, session_of(request))
    return Response(image, media_type="image/png", headers={"Cache-Control": "no-store"})


async def sign_out_page(request: Request, ctx: WebContext) -> Response:
    sign_out(request)
    return redirect("/")


def framework_routes() -> list[BaseRoute]:
    return [
        page_route("/", home, name="home"),
        page_route("/lang", switch_language, methods=("POST",), name="switch_language"),
        page_route("/captcha.png", captcha_image, name="captcha_image"),
        page_route("/captcha/new", new_captcha_image, methods=("POST",), name="new_captcha_image"),
        page_route("/sign-out", sign_out_page, methods=("POST",), name="sign_out"),
        Mount("/static", app=StaticFiles(directory=str(STATIC_DIR)), name="static"),
    ]


def web_routes(ctx: WebContext) -> list[BaseRoute]:
    """Every page's route: the framework's and those of each page module present."""
    routes = framework_routes()
    for module in PAGE_MODULES:
        routes.extend(module.routes())
    return routes


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route, a method a route does not take) as pages."""
    status = getattr(exc, "status_code", 404)
    if status == 404:
        error: Exception = PageNotFound("no such page")
    elif status == 405:
        error = MethodNotAllowed("method not allowed")
    else:
        error = BadForm("the request cannot be read")

    async def page(request, ctx):
        return error_page(request, error)

    if request.method in ("GET", "HEAD"):
        return await serve_page(request, page)
    return error_page(request, error)  # no session is read or kept for a request the site does not take


async def _server_error(request: Request, exc: Exception) -> Response:
    """An error no page turned into one (outside page_route: the JSON API, a middleware): the
    error page, logged; never the exception's text."""
    return error_page(request, exc)


class Site(Starlette):
    """Starlette with the request log and the security headers outside its own error handling, so
    that a 500 from anywhere carries the headers and is logged with its status."""

    def build_middleware_stack(self):
        return RequestLog(SecurityHeaders(super().build_middleware_stack()))


def build_site(ctx: WebContext, api_routes: list[BaseRoute] | None = None,
               pages: list[BaseRoute] | None = None) -> Starlette:
    """The RA's ASGI app: ``api_routes`` (the JSON API) and the pages (default: web_routes)."""
    app = Site(routes=[*(api_routes or []), *(web_routes(ctx) if pages is None else pages)],
               exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.state.web_context = ctx
    return app
