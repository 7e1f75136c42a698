"""The dashboard's web application (Starlette, server-rendered Jinja2 pages).

Every page is built from operator API calls made with the signed-in user's own bearer token:
what a role may not read, the page cannot show, and what it may not do (launch a round) the
coordinator refuses, whatever the page sends. The dashboard keeps the token in memory only,
behind a random session id in an HttpOnly, SameSite=Strict cookie; every form it serves
carries the session's CSRF token and every POST is checked against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pandas as pd
import plotly
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from coordinator import charts, convert, frames
from coordinator.client import OperatorClient, Progress
from coordinator.combine import PROGRAM_SCOPE
from coordinator.config import Role
from coordinator.dashboard import figures, results
from coordinator.dashboard.sessions import COOKIE, Session, Sessions
from coordinator.dashboard.settings import DashboardConfig
from coordinator.export import write_csv, write_parquet
from coordinator.store import CarrierRoundState
from fedoversight import wire
from fedoversight.dimensions import Dimension
from fedoversight.errors import InvalidRequestError, OversightError
from fedoversight.periods import Period
from fedoversight.v1 import operator_pb2

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
#: Plotly injects its own style elements; scripts come from this origin only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'"
)
#: Seconds a round page follows a round's progress at most.
WATCH_SECONDS = 3600.0
#: Most rounds (the newest) a suite's page reads the values of.
MAX_SUITE_ROUNDS = 24

ClientFactory = Callable[[str], OperatorClient]
Handler = Callable[[Request, Session], Awaitable[Response]]


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


class Dashboard:
    """The application's state: its settings, sessions and templates."""

    def __init__(
        self,
        config: DashboardConfig,
        *,
        client_factory: ClientFactory | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.sessions = (
            Sessions(idle=config.idle_minutes * 60, limit=config.max_sessions, clock=clock)
            if clock is not None
            else Sessions(idle=config.idle_minutes * 60, limit=config.max_sessions)
        )
        self._client_factory = client_factory or self._client_for
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["role_operator"] = Role.OPERATOR
        self.templates.env.filters["when"] = _when
        self.templates.env.filters["stamp"] = _stamp

    def _client_for(self, token: str) -> OperatorClient:
        return OperatorClient(
            self.config.coordinator,
            ca_cert=self.config.ca,
            server_name=self.config.server_name,
            token=token,
        )

    # --- plumbing ------------------------------------------------------------------------------

    async def session_of(self, request: Request) -> Session | None:
        return await self.sessions.get(request.cookies.get(COOKIE))

    def render(
        self,
        request: Request,
        name: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> Response:
        context.update(session=session, user=session.user if session else None)
        response = self.templates.TemplateResponse(
            request, name, context=context, status_code=status
        )
        if session is not None:
            _set_cookie(request, response, session)
        return response

    def signed_in(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """The handler for signed-in users; others go to the login page. The operator API's
        refusals become pages: an unknown (revoked) token ends the session."""

        async def endpoint(request: Request) -> Response:
            session = await self.session_of(request)
            if session is None or session.user is None or session.client is None:
                target = quote(request.url.path, safe="/")
                return RedirectResponse(f"/login?next={target}", status_code=303)
            if request.method == "POST":
                form = await request.form()
                if not session.csrf_ok(_text(form, "csrf")):
                    return self.render(
                        request,
                        "error.html",
                        session,
                        status=403,
                        title="Form expired",
                        message="The form's security token did not match this session;"
                        " reload the page and try again.",
                    )
            try:
                return await handler(request, session)
            except OversightError as exc:
                return self.refused(request, session, exc)

        return endpoint

    def refused(self, request: Request, session: Session, exc: OversightError) -> Response:
        status = getattr(exc, "status", None)
        if status is grpc.StatusCode.UNAUTHENTICATED:
            response: Response = RedirectResponse("/login?expired=1", status_code=303)
            asyncio.get_running_loop().create_task(self.sessions.end(session.id))
            response.delete_cookie(COOKIE, path="/")
            return response
        if status is grpc.StatusCode.PERMISSION_DENIED:
            return self.render(
                request,
                "error.html",
                session,
                status=403,
                title="Not allowed for your role",
                message=f"The operator API refused this (PERMISSION_DENIED): {exc.detail}.",
            )
        if status is grpc.StatusCode.NOT_FOUND:
            return self.render(
                request, "error.html", session, status=404, title="Not found", message=exc.detail
            )
        if status is grpc.StatusCode.INVALID_ARGUMENT:
            return self.render(
                request,
                "error.html",
                session,
                status=400,
                title="Not a valid request",
                message=exc.detail,
            )
        log.warning("operator API call failed: %s", exc.detail)
        return self.render(
            request,
            "error.html",
            session,
            status=502,
            title="The coordinator did not answer",
            message=exc.detail,
        )

    # --- login ---------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        session = await self.session_of(request) or await self.sessions.new()
        message = (
            "Your session ended; sign in again." if request.query_params.get("expired") else ""
        )
        return self.render(
            request,
            "login.html",
            session,
            message=message,
            next=_next(request.query_params.get("next")),
        )

    async def login(self, request: Request) -> Response:
        session = await self.session_of(request)
        form = await request.form()
        if session is None or not session.csrf_ok(_text(form, "csrf")):
            fresh = await self.sessions.new()
            return self.render(
                request,
                "login.html",
                fresh,
                status=403,
                message="The login form expired; try again.",
                next="/",
            )
        token = (_text(form, "token") or "").strip()
        target = _next(_text(form, "next"))
        if not token:
            return self.render(
                request, "login.html", session, status=400, message="Give your token.", next=target
            )
        client = self._client_factory(token)
        try:
            user = await client.whoami()
        except OversightError as exc:
            await client.close()
            status = getattr(exc, "status", None)
            text = (
                "The coordinator did not accept this token."
                if status is grpc.StatusCode.UNAUTHENTICATED
                else f"The coordinator could not be asked: {exc.detail}"
            )
            return self.render(
                request, "login.html", session, status=401, message=text, next=target
            )
        signed = await self.sessions.sign_in(session, user, client)
        log.info("dashboard sign-in: %s (%s)", user.name, user.role)
        response = RedirectResponse(target, status_code=303)
        _set_cookie(request, response, signed)
        return response

    async def logout(self, request: Request, session: Session) -> Response:
        await self.sessions.end(session.id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # --- pages ---------------------------------------------------------------------------------

    async def home(self, request: Request, session: Session) -> Response:
        return RedirectResponse("/rounds", status_code=303)

    async def carriers(self, request: Request, session: Session) -> Response:
        assert session.client is not None
        carriers = await session.client.list_carriers()
        return self.render(
            request,
            "carriers.html",
            session,
            carriers=carriers,
            policies={c.carrier_id: policy_summary(c) for c in carriers},
            connected=sum(c.connected for c in carriers),
        )

    async def rounds(self, request: Request, session: Session) -> Response:
        assert session.client is not None
        suite = request.query_params.get("suite") or None
        summaries = await session.client.list_rounds(limit=100, suite=suite)
        return self.render(
            request, "rounds.html", session, rounds=[_summary(s) for s in summaries], suite=suite
        )

    async def suite_page(self, request: Request, session: Session) -> Response:
        """A scheduled suite's months and their revisions: each revision's program value of
        the suite's first figure, how it moved from the revision before, and the trend of the
        latest revisions."""
        assert session.client is not None
        suite = request.path_params["suite"]
        found = await session.client.list_revisions(suite)
        frames_by_round: dict[str, pd.DataFrame] = {}
        for round_id in list(dict.fromkeys(r.round_id for r in found))[-MAX_SUITE_ROUNDS:]:
            outcome = await session.client.get_round(round_id)
            first = results.split_queries(outcome.tables)[:1]
            if first:
                frames_by_round[round_id] = frames.frame_of(first[0], outcome.info())
        shown = next(iter(frames_by_round.values()), None)
        metric = figure = None
        if shown is not None and not shown.empty:
            metric = str(shown["metric"].iloc[0])
            figs = shown.loc[shown["kind"] == frames.FIGURE, "statistic"]
            figure = str(figs.iloc[0]) if not figs.empty else str(shown["statistic"].iloc[0])
        months: dict[str, list[dict[str, object]]] = {}
        for revision in found:
            frame = frames_by_round.get(revision.round_id)
            value = _program_value(frame, figure, revision.month) if frame is not None else None
            entries = months.setdefault(revision.month, [])
            before = entries[-1]["value"] if entries else None
            entries.append(
                {
                    "revision": revision.revision,
                    "round_id": revision.round_id,
                    "scheduled_for": _stamp(revision.scheduled_for),
                    "finished_at": _stamp(revision.finished_at),
                    "state": convert.round_state_from_pb(revision.state),
                    "latest": revision.latest,
                    "value": value,
                    "moved": _moved(before, value),
                }
            )
        chart = None
        if frames_by_round and metric and figure:
            try:
                fig = charts.trend(frames.concat(list(frames_by_round.values())), metric, figure)
                chart = figures.to_json(figures.for_page(fig))
            except ValueError:
                chart = None
        return self.render(
            request,
            "suite.html",
            session,
            suite=suite,
            months=months,
            metric=metric,
            figure=figure,
            chart=chart,
        )

    async def round_page(self, request: Request, session: Session) -> Response:
        assert session.client is not None
        round_id = request.path_params["round_id"]
        outcome = await session.client.get_round(round_id)
        sections = results.sections(outcome.tables, outcome.info())
        chosen = request.query_params.get("figure")
        shown = []
        for section in sections:
            figure = chosen if chosen in section.figures else None
            figure = figure or (section.figures[0] if section.figures else None)
            charts = figures.charts(section, figure) if figure else []
            shown.append(
                {
                    "section": section,
                    "figure": figure,
                    "charts": [(kind, figures.to_json(fig)) for kind, fig in charts],
                }
            )
        return self.render(
            request,
            "round.html",
            session,
            outcome=outcome,
            open=outcome.state.is_open,
            sections=shown,
            min_events=frames.UNRELIABLE_MIN_EVENTS,
            min_members=frames.UNRELIABLE_MIN_MEMBERS,
            disclosure=[
                t for t in outcome.tables if t.scope != PROGRAM_SCOPE and t.disclosure is not None
            ],
        )

    async def round_events(self, request: Request, session: Session) -> Response:
        """Server-sent events: the round's progress as WatchRound streams it, then ``done``."""
        client = session.client
        assert client is not None
        round_id = request.path_params["round_id"]
        if not wire.ID_RE.fullmatch(round_id):
            raise InvalidRequestError("round id is not of the expected form")

        async def stream() -> AsyncIterator[str]:
            try:
                async for progress in client.watch(round_id, timeout=WATCH_SECONDS):
                    yield f"event: progress\ndata: {json.dumps(_progress(progress))}\n\n"
                yield "event: done\ndata: {}\n\n"
            except OversightError as exc:
                yield f"event: failed\ndata: {json.dumps({'message': exc.detail})}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def download(self, request: Request, session: Session) -> Response:
        assert session.client is not None
        round_id = request.path_params["round_id"]
        suffix = request.path_params["format"]
        writer = {"csv": write_csv, "parquet": write_parquet}.get(suffix)
        if writer is None:
            return self.render(
                request,
                "error.html",
                session,
                status=404,
                title="Not found",
                message="downloads are CSV or Parquet",
            )
        outcome = await session.client.get_round(round_id)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{round_id}.{suffix}"
            await asyncio.to_thread(writer, outcome.tables, path, outcome.info())
            body = path.read_bytes()
        media = "text/csv; charset=utf-8" if suffix == "csv" else "application/vnd.apache.parquet"
        return Response(
            body,
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{round_id}.{suffix}"'},
        )

    async def launch_page(self, request: Request, session: Session) -> Response:
        return await self._launch_form(request, session)

    async def _launch_form(
        self,
        request: Request,
        session: Session,
        *,
        status: int = 200,
        message: str = "",
        form: FormData | None = None,
    ) -> Response:
        assert session.client is not None and session.user is not None
        if session.user.role is not Role.OPERATOR:
            return self.render(
                request,
                "launch.html",
                session,
                status=403 if message else 200,
                may_launch=False,
                message=message,
            )
        catalogue = await session.client.list_metrics()
        carriers = await session.client.list_carriers()
        purposes = await session.client.list_purposes()
        dims = sorted(
            {wire.dimension_from_pb(d) for m in catalogue.metrics for d in m.dimensions},
            key=list(Dimension).index,
        )
        return self.render(
            request,
            "launch.html",
            session,
            status=status,
            may_launch=True,
            message=message,
            metrics=catalogue.metrics,
            dimensions=[d for d in dims if d is not Dimension.CARRIER],
            carriers=carriers,
            purposes=[p for p in purposes.purposes if p.entitled],
            default_purpose=purposes.default_purpose,
            chosen={
                "purpose": _text(form, "purpose") if form else "",
                "justification": _text(form, "justification") if form else "",
                "metric": form.getlist("metric") if form else [],
                "by": form.getlist("by") if form else [],
                "carriers": form.getlist("carrier") if form else [],
                "period": _text(form, "period") if form else "",
            },
        )

    async def launch(self, request: Request, session: Session) -> Response:
        """Create the round as the user asked; the operator API decides whether they may."""
        assert session.client is not None
        from coordinator.cli import parse_queries

        form = await request.form()
        try:
            metrics = [str(m) for m in form.getlist("metric")]
            if not metrics:
                raise InvalidRequestError("choose at least one metric")
            period = Period.parse(_text(form, "period") or "")
            queries = parse_queries(",".join(metrics), ",".join(str(b) for b in form.getlist("by")))
            quorum = int(_text(form, "quorum") or 0)
            deadline = int(_text(form, "deadline") or 0)
        except OversightError as exc:
            return await self._launch_form(
                request, session, status=400, message=exc.detail, form=form
            )
        except ValueError:
            return await self._launch_form(
                request,
                session,
                status=400,
                message="quorum and deadline are whole numbers",
                form=form,
            )
        try:
            round_id = await session.client.create_round(
                period,
                queries,
                carriers=[str(c) for c in form.getlist("carrier")],
                quorum=max(0, quorum),
                deadline_seconds=max(0, deadline),
                purpose=_text(form, "purpose") or "",
                justification=_text(form, "justification") or "",
            )
        except OversightError as exc:
            status = getattr(exc, "status", None)
            if status is grpc.StatusCode.PERMISSION_DENIED:
                return await self._launch_form(
                    request,
                    session,
                    status=403,
                    message="The operator API refused to launch this round for your role"
                    f" (PERMISSION_DENIED: {exc.detail}).",
                    form=form,
                )
            if status is grpc.StatusCode.INVALID_ARGUMENT:
                return await self._launch_form(
                    request, session, status=400, message=exc.detail, form=form
                )
            raise
        log.info("round %s launched from the dashboard by %s", round_id, session.user)
        return RedirectResponse(f"/rounds/{round_id}", status_code=303)

    async def plotly_js(self, request: Request) -> Response:
        return FileResponse(
            PLOTLY_JS,
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    # --- the application -----------------------------------------------------------------------

    def app(self) -> Starlette:
        s = self.signed_in
        routes = [
            Route("/", s(self.home)),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", s(self.logout), methods=["POST"]),
            Route("/carriers", s(self.carriers)),
            Route("/rounds", s(self.rounds)),
            Route("/rounds/{round_id}", s(self.round_page)),
            Route("/suites/{suite}", s(self.suite_page)),
            Route("/rounds/{round_id}/events", s(self.round_events)),
            Route("/rounds/{round_id}/export.{format}", s(self.download)),
            Route("/launch", s(self.launch_page), methods=["GET"]),
            Route("/launch", s(self.launch), methods=["POST"]),
            Route("/static/plotly.min.js", self.plotly_js),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(SecurityHeaders)],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self.sessions.close()


def create_app(
    config: DashboardConfig, *, client_factory: ClientFactory | None = None
) -> Starlette:
    return Dashboard(config, client_factory=client_factory).app()


# --- helpers -----------------------------------------------------------------------------------


def _set_cookie(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        session.id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _text(form: FormData | None, name: str) -> str | None:
    if form is None:
        return None
    value = form.get(name)
    return value if isinstance(value, str) else None


def _next(target: str | None) -> str:
    """A local path to return to after login (anything else: the start page)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _stamp(value: Any) -> str:
    """A protobuf Timestamp as text ("" when unset)."""
    if value is None or not (value.seconds or value.nanos):
        return ""
    return _when(value.ToDatetime(dt.UTC))


def _program_value(
    frame: pd.DataFrame, statistic: str | None, month: str
) -> dict[str, object] | None:
    """The program's value of ``statistic`` in ``month`` and its marks (None: no such cell)."""
    if statistic is None or "month" not in frame.columns:
        return None
    hit = frame[
        (frame["scope"] == PROGRAM_SCOPE)
        & (frame["statistic"] == statistic)
        & (frame["month"] == pd.Timestamp(month))
    ]
    if len(hit) != 1:
        return None
    row = hit.iloc[0]
    number = row["value"]
    return {
        "number": None if pd.isna(number) else float(number),
        "withheld": bool(row["withheld"]),
        "incomplete": bool(row["incomplete"]),
        "unreliable": False if pd.isna(row["unreliable"]) else bool(row["unreliable"]),
    }


def _moved(before: object, now: dict[str, object] | None) -> str:
    """How a month's value moved from the revision before ("" for the first)."""
    if not isinstance(before, dict) or now is None:
        return ""
    old, new = before.get("number"), now.get("number")
    if not isinstance(old, float) or not isinstance(new, float):
        return ""
    change = new - old
    share = f" ({change / old:+.1%})" if old else ""
    return f"{change:+,.2f}{share}"


def _summary(s: operator_pb2.RoundSummary) -> dict[str, object]:
    return {
        "suite": s.suite,
        "scheduled_for": _stamp(s.scheduled_for) if s.HasField("scheduled_for") else "",
        "round_id": s.round_id,
        "state": convert.round_state_from_pb(s.state),
        "period": wire.period_from_pb(s.period) if s.HasField("period") else "",
        "metrics": ", ".join(dict.fromkeys(q.metric for q in s.queries)),
        "asked": s.carriers_asked,
        "answered": s.carriers_answered,
        "created": s.created_at.ToDatetime(dt.UTC) if s.HasField("created_at") else None,
        "finished": s.finished_at.ToDatetime(dt.UTC) if s.HasField("finished_at") else None,
    }


def _progress(p: Progress) -> dict[str, object]:
    return {
        "state": str(p.state),
        "open": p.state.is_open,
        "asked": p.asked,
        "answered": p.answered,
        "carriers": [
            {"carrier_id": c, "state": str(s), "answered": s is CarrierRoundState.ANSWERED}
            for c, s in p.carriers
        ],
    }


def policy_summary(carrier: operator_pb2.CarrierInfo) -> dict[str, str] | None:
    """A carrier's policy in force as its latest answer described it, in words (None before
    one): method, floor, noise parameters and the policy's digest."""
    if not carrier.HasField("disclosure"):
        return None
    d = wire.disclosure_from_pb(
        carrier.disclosure, [n.statistic for n in carrier.disclosure.noise_scales]
    )
    noise = ""
    if d.perturbation is not None:
        p = d.perturbation
        noise = (
            f"counts ±{p.count_max_noise} (variance {p.count_variance:g}); dollars"
            f" {p.p_percent:g}–{p.p_percent * (1 + p.spread):g}% of the largest member"
        )
    elif d.noise_mechanism:
        noise = d.noise_mechanism
    return {
        "method": str(d.method),
        "floor": f"{d.min_cell_size} members",
        "noise": noise,
        "digest": d.policy_digest[:12],
        "round_id": carrier.disclosure_round_id,
        "at": carrier.disclosure_at.ToDatetime(tzinfo=dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
