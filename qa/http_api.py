"""The JSON API beside the web chat: plain HTTP over the same engine, with the same limits as the page.

    POST   /api/v1/ask               a question (and earlier ones) in, the answer as data out
    GET    /api/v1/articles          the shared articles
    GET    /api/v1/articles/{name}   one article, its sentences numbered, with their spans
    POST   /api/v1/articles          the operator adds a shared article (Bearer $QA_API_TOKEN)
    DELETE /api/v1/articles/{name}   the operator removes one (Bearer $QA_API_TOKEN)
    GET    /healthz                  for a load balancer
    GET    /openapi.json, /docs      the schema and its page (Swagger UI, served from this machine)

The replies are qa's own dataclasses (:class:`qa.Answer`, :class:`qa.Citation`, :class:`qa.ArticleInfo`,
:class:`qa.Document`): FastAPI derives the schema from them, so a field added there is in the API and
its schema at once. Gradio's server serves the API (:func:`beside_gradio`): one port, one process.
"""

import asyncio
import hmac
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Annotated, Any, Callable, TypeVar

from fastapi import Depends, FastAPI, Path, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

import qa

from .documents import DocumentError, TooLarge
from .ingest import MAX_FILE_BYTES, from_bytes, from_text, from_url

PATHS = ("/api/v1", "/healthz", "/openapi.json", "/docs")
"""What the API serves; every other path is Gradio's."""
MAX_ASK_BYTES = 64_000
"""Largest body of a question (the question itself is cut at qa.MAX_QUESTION_CHARS, as everywhere)."""
MAX_ADD_BYTES = MAX_FILE_BYTES + 64_000
"""Largest body that adds an article: a file at qa's per-file limit, plus the form's own bytes."""
MAX_TOP_K = 20
RETRY_AFTER_SECONDS = 1
"""Told to a client refused because the answering pool is full, or the model is still loading."""

T = TypeVar("T")


class Busy(Exception):
    """Every worker is busy and the waiting room is full: try again in a moment."""


class WorkPool:
    """At most ``workers`` jobs at once and ``waiting`` more queued; one more is refused at once with
    :class:`Busy`, so a burst of requests never builds an unbounded backlog."""

    def __init__(self, workers: int, waiting: int, *, name: str) -> None:
        self.workers, self.waiting = workers, waiting
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._room = threading.BoundedSemaphore(workers + waiting)

    async def run(self, job: Callable[[], T]) -> T:
        if not self._room.acquire(blocking=False):
            raise Busy(f"the server is answering {self.workers} requests and {self.waiting} more are waiting; "
                       f"retry in {RETRY_AFTER_SECONDS} s")
        try:
            future = self._executor.submit(job)
        except BaseException:
            self._room.release()
            raise
        # released when the job ends, not when the request does: a client that hangs up frees no room early
        future.add_done_callback(lambda _: self._room.release())
        return await asyncio.wrap_future(future)


def _encodable(text: str) -> str:
    """Refuse lone surrogates ("\\ud800" in JSON): Python keeps them, but no reply could be written with them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode text (a lone surrogate at character {exc.start})") from None
    return text


def _whole_number(value: Any) -> Any:
    """A JSON number, never true/false or "3": what JSON Schema calls an integer (14.0 is one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a whole number")
    return value


Text = Annotated[str, AfterValidator(_encodable)]
TopK = Annotated[int, BeforeValidator(_whole_number), Field(ge=1, le=MAX_TOP_K)]
_STRICT = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Ask:
    """A question, with the conversation's earlier questions when it may lean on them."""

    __pydantic_config__ = _STRICT
    question: Annotated[Text, Field(description="the question, in English or Dutch; cut at "
                                                f"{qa.MAX_QUESTION_CHARS} characters (the answer's notice says so)",
                                    examples=["Where is the factory?"])]
    history: Annotated[tuple[Text, ...], Field(description="the conversation's earlier questions, oldest first: "
                                                           "a follow-up ('When will it be ready?') leans on them")] = ()
    articles: Annotated[tuple[Text, ...] | None, Field(min_length=1, description="names of the articles to search "
                                                                                 "(default: all shared articles)")] = None
    top_k: Annotated[TopK | None, Field(description="how many passages to cite (default: the server's)")] = None


@dataclass(frozen=True)
class NewText:
    """An article given as its text."""

    __pydantic_config__ = _STRICT
    text: Annotated[Text, Field(min_length=1)]
    title: Text | None = None


@dataclass(frozen=True)
class NewPage:
    """An article fetched from a public web page (addresses on the server's own network are refused)."""

    __pydantic_config__ = _STRICT
    url: Annotated[Text, Field(min_length=1, examples=["https://example.org/news/article.html"])]
    title: Text | None = None


NEW_ARTICLE = TypeAdapter(NewText | NewPage)


@dataclass(frozen=True)
class Error:
    """What every refusal carries: a message a person can act on."""

    error: str


@dataclass(frozen=True)
class Health:
    """What a load balancer (or an operator) learns from /healthz."""

    status: str  # "ok"
    model: str  # the embedding model's identity: its name and, for a bundled model, its build
    index_built: str  # when the base index was built (UTC)
    index_vectors_sha256: str  # the checksum of the base index's vectors, as its manifest records it
    articles: int  # shared articles, base and added
    sentences: int


_ERRORS = {
    400: "a malformed request: an empty question, a body that is not the JSON this endpoint takes, a bad field",
    401: "no credentials: this endpoint needs the operator's token (or, with --auth, the user and password)",
    403: "wrong token, or the operator's endpoints are switched off ($QA_API_TOKEN unset on the server)",
    404: "no article of that name (the message names it)",
    409: "a base article (from seeds/ or the files given at start): it cannot be removed here",
    413: "the body, the file or the article's text is over its size limit",
    415: "neither JSON nor multipart/form-data",
    503: "busy (the answering pool is full) or still loading: retry after the seconds in Retry-After",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error responses of one endpoint, for the schema."""
    def one(code: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"model": Error, "description": _ERRORS[code]}
        if code == 503:
            entry["headers"] = {"Retry-After": {"description": "seconds to wait", "required": True,
                                                "schema": {"type": "integer"}}}
        return entry

    return {code: one(code) for code in codes}


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation errors (a 422 by default) as one sentence, for a 400."""
    parts = []
    for e in errors[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        if e.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({e.get('ctx', {}).get('error', 'cannot be parsed')})")
        elif not where and e.get("type") in ("missing", "dataclass_type", "dict_type", "model_attributes_type"):
            parts.append("send the body as a JSON object with Content-Type: application/json "
                         "(curl: --json '{\"question\": \"...\"}')")
        elif e.get("type") == "missing":
            parts.append(f"{where} is missing")
        elif e.get("type") in ("extra_forbidden", "unexpected_keyword_argument"):
            parts.append(f"{where} is not a field of this body")
        else:
            parts.append(f"{where or 'the body'}: {str(e.get('msg', 'is not valid')).removeprefix('Value error, ')}")
    return "; ".join(dict.fromkeys(parts)) + " (the schema is at /openapi.json, with examples at /docs)"


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Basic(HTTPBasic):
    """HTTP Basic with the message this API gives (FastAPI's says only "Not authenticated")."""

    def make_not_authenticated_error(self) -> HTTPException:
        return HTTPException(401, "this server asks for a user and password (HTTP Basic, curl -u user:password), "
                                  "or the operator's token (Authorization: Bearer <token>)",
                             headers=self.make_authenticate_headers())


def _same(given: str, wanted: str) -> bool:
    """Constant-time comparison: how long it takes says nothing about how much of a secret was right."""
    return hmac.compare_digest(given.encode("utf-8"), wanted.encode("utf-8"))


def _loaded(request: Request) -> qa.Engine:
    """The engine, or a 503 while it is loading."""
    if request.app.state.engine is None:
        raise HTTPException(503, "the model and the index are still loading; retry shortly",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return request.app.state.engine


Engine = Annotated[qa.Engine, Depends(_loaded)]
Name = Annotated[str, Path(description="an article's name, as /api/v1/articles lists it")]


def create(engine: qa.Engine | None, *, token: str | None, auth: tuple[str, str] | None,
           shown_source: Callable[[str], str], workers: int, waiting: int, add_workers: int) -> FastAPI:
    """The API over ``engine``'s shared articles.

    ``token`` (from $QA_API_TOKEN) opens the operator's endpoints; None switches them off. ``auth``
    (app.py's --auth) makes every /api/v1 endpoint ask for that user and password too (HTTP Basic, or
    the token). ``shown_source`` is the page's rule for showing where an article came from (a file by
    its name, not its path on the server). ``workers``/``waiting`` bound the answering like the chat's
    queue; ``add_workers`` bounds the embedding of added articles. An ``engine`` of None (not loaded
    yet) makes /healthz and the endpoints answer 503 until ``app.state.engine`` is set.
    """
    app = FastAPIOffline(title="Ask the article: JSON API", version="1", docs_url="/docs", redoc_url=None,
                         static_url="/docs/static", openapi_url="/openapi.json",
                         description="Cited answers from news articles. Every refusal is JSON "
                                     "`{\"error\": \"...\"}` with the status below.")
    app.state.engine = engine
    answering = WorkPool(workers, waiting, name="api-answer")
    adding = WorkPool(add_workers, 0, name="api-add")
    bearer = HTTPBearer(auto_error=False, description="the operator's token: $QA_API_TOKEN on the server")
    basic = _Basic(auto_error=False, realm="Ask the article", description="app.py's --auth user:password")

    def operator(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> None:
        if token is None:
            raise HTTPException(403, "adding and removing shared articles is switched off: the server was started "
                                     "without $QA_API_TOKEN (set it to a long random secret and restart)")
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "this endpoint is the operator's: send Authorization: Bearer <token>, "
                                     "the token being $QA_API_TOKEN on the server",
                                headers={"WWW-Authenticate": "Bearer"})
        if not _same(credentials.credentials, token):
            raise HTTPException(403, "the token is wrong: it must equal $QA_API_TOKEN on the server")

    def visitor(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
                login: Annotated[HTTPBasicCredentials | None, Security(basic)]) -> None:
        assert auth is not None
        if token is not None and credentials is not None and _same(credentials.credentials, token):
            return
        user, password = auth
        if login is not None and _same(login.username, user) & _same(login.password, password):
            return
        raise basic.make_not_authenticated_error()

    read = [Depends(visitor)] if auth else []
    write = [Depends(operator)]

    def shown(info: T) -> T:
        return replace(info, source=shown_source(info.source))

    def known(engine: qa.Engine, names: tuple[str, ...]) -> None:
        have = {a.name for a in engine.articles()}
        missing = [n for n in names if n not in have]
        if missing:
            raise HTTPException(404, f"no article named {', '.join(map(repr, missing))}; "
                                     f"GET /api/v1/articles lists the names")

    @app.post("/api/v1/ask", dependencies=read,
              responses=_responses(400, 401, 404, 413, 503), summary="Answer a question, citing the articles")
    async def ask(body: Ask, engine: Engine) -> qa.Answer:
        """The answer as data: `found`, the reply `text` (plain, the answering words between `**`), and
        every citation (article, title, source, sentence number, text, score, character span, and the
        spans of its answering words in `highlights`)."""
        if not qa.clean_question(body.question):
            raise HTTPException(400, "the question is empty: send {\"question\": \"Where is the factory?\"}")
        known(engine, body.articles or ())
        job = partial(engine.ask, body.question, history=body.history, articles=body.articles, top_k=body.top_k)
        try:
            answer = await answering.run(job)
        except DocumentError as exc:  # an article removed while the question waited
            raise HTTPException(404, str(exc)) from exc
        return replace(answer, citations=tuple(shown(c) for c in answer.citations))

    @app.get("/api/v1/articles", dependencies=read, responses=_responses(401, 503),
             summary="The shared articles")
    def articles(engine: Engine) -> list[qa.ArticleInfo]:
        """Every shared article: its `name` (what `articles` in a question and the other endpoints take),
        title, language, number of sentences and source."""
        return [shown(a) for a in engine.articles()]

    @app.get("/api/v1/articles/{name}", dependencies=read, responses=_responses(401, 404, 503),
             summary="One article with its sentences")
    def article(name: Name, engine: Engine) -> qa.Document:
        """The article's text and every sentence with its number, paragraph and character span in `text`:
        what a client needs to show a citation in context."""
        try:
            return shown(engine.document(name))
        except DocumentError:
            raise HTTPException(404, f"no article named {name!r}; GET /api/v1/articles lists the names") from None

    @app.post("/api/v1/articles", dependencies=write, status_code=201,
              responses={200: {"model": qa.ArticleInfo, "description": "already there (the same content)"},
                         **_responses(400, 401, 403, 413, 415, 503)},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/NewArticle"}},
                  "multipart/form-data": {"schema": {
                      "type": "object", "required": ["file"], "additionalProperties": False,
                      # no "type": a form's fields are bytes on the wire, whatever a JSON type would say
                      "properties": {"file": {"contentMediaType": "application/octet-stream",
                                              "description": "the file: .txt, .html, .pdf or .md"},
                                     "title": {"description": "the article's title (optional)"}}}}}}},
              summary="Add a shared article (the operator's)")
    async def add(request: Request, engine: Engine, response: Response) -> qa.ArticleInfo:
        """JSON `{"text", "title"?}` or `{"url", "title"?}`, or a file (multipart/form-data field `file`,
        optional `title`). Everyone sees the article at once; it is kept in the server's index folder.
        201 when added; 200 with the article already there when it has the same content."""
        read_document = await _new_document(request)
        before = {a.name for a in engine.articles()}
        try:
            document = await adding.run(lambda: engine.add_document(read_document()))
        except TooLarge as exc:
            raise HTTPException(413, str(exc)) from exc
        except DocumentError as exc:
            raise HTTPException(400, str(exc)) from exc
        if document.name in before:
            response.status_code = 200
        return shown(next(a for a in engine.articles() if a.name == document.name))

    @app.delete("/api/v1/articles/{name}", dependencies=write, status_code=204, response_class=Response,
                responses=_responses(401, 403, 404, 409, 503), summary="Remove an added article (the operator's)")
    def remove(name: Name, engine: Engine) -> None:
        """For everyone, and from the index folder. The base articles stay (their files are the operator's)."""
        known(engine, (name,))
        try:
            engine.remove(name)
        except DocumentError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get("/healthz", responses=_responses(503), summary="Ready to answer?")
    def healthz(engine: Engine) -> Health:
        """200 once the model and the index are loaded, with their identity; 503 before."""
        manifest = engine.index.manifest
        return Health(status="ok", model=engine.embedder.identity, index_built=manifest.built,
                      index_vectors_sha256=manifest.files.get("vectors.faiss", ""),
                      articles=len(engine.articles()), sentences=sum(len(d.sentences) for d in engine.documents))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.url.path} (see /docs)"
        elif exc.status_code == 405:  # Starlette's Allow names only the first route of the path; all of them here
            allowed = sorted({m for r in app.routes if isinstance(r, APIRoute) and r.matches(request.scope)[0]
                              is not Match.NONE for m in r.methods})
            message = f"{request.method} is not a method of {request.url.path}: it takes {', '.join(allowed)}"
            return _json_error(405, message, {"Allow": ", ".join(allowed)})
        return _json_error(exc.status_code, str(message), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _json_error(400, _validation_message(list(exc.errors())))

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> JSONResponse:
        return _json_error(503, str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        return _json_error(500, f"the server failed ({type(exc).__name__}); its log has the details")

    app.openapi = partial(_openapi, app)
    app.add_middleware(_BodyLimit)
    return app


async def _new_document(request: Request) -> Callable[[], qa.Document]:
    """Read the body of POST /api/v1/articles: how to make the article (run in the adding pool, it parses
    and splits the text), or a 400/415 for a body that is neither of the two kinds."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        async with request.form(max_files=1, max_fields=1) as form:
            file, title = form.get("file"), form.get("title")
            if not isinstance(file, UploadFile) or set(form) - {"file", "title"}:
                raise HTTPException(400, "send the article as the form field \"file\" (curl: -F file=@article.txt), "
                                         "and optionally a field \"title\"")
            title = _form_text(title)
            data = await file.read()
        return partial(from_bytes, data, name=file.filename or "upload", title=title)
    if media == "application/json" or media.endswith("+json"):
        try:
            new = NEW_ARTICLE.validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(400, "send {\"text\": \"...\"} or {\"url\": \"https://...\"}, each with an optional "
                                     "\"title\": " + _validation_message(exc.errors())) from None
        if isinstance(new, NewText):
            return partial(from_text, new.text, title=new.title)
        return partial(from_url, new.url, title=new.title)  # local=False: never the server's own network
    raise HTTPException(415, "send the article as JSON ({\"text\": ...} or {\"url\": ...}, Content-Type: "
                             "application/json) or as a file (multipart/form-data, field \"file\")")


def _form_text(value: str | UploadFile | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, UploadFile):
        raise HTTPException(400, "the form field \"title\" must be text, not a file")
    try:
        return _encodable(value)
    except ValueError as exc:
        raise HTTPException(400, f"title: {exc}") from None


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the 400 this API gives in place of FastAPI's 422 (never sent), and the
    JSON bodies of POST /api/v1/articles (read by hand there: one endpoint, two kinds of body)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation["responses"].pop("422", None)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        new = NEW_ARTICLE.json_schema(ref_template="#/components/schemas/{model}")
        components.update(new.pop("$defs", {}))
        components["NewArticle"] = new
        app.openapi_schema = schema
    return app.openapi_schema


class _BodyLimit:
    """413 for a body over its endpoint's limit, as JSON, before any of it is parsed (by its Content-Length)
    or as soon as the bytes read pass the limit (a body sent in chunks)."""

    LIMITS = {"/api/v1/articles": MAX_ADD_BYTES}
    """Per path; every other path takes at most MAX_ASK_BYTES."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.LIMITS.get(scope["path"], MAX_ASK_BYTES)
        message = f"the request body is over this endpoint's limit of {limit:,} bytes"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await _json_error(413, message)(scope, receive, send)
        read = 0

        async def counted():
            nonlocal read
            event = await receive()
            read += len(event.get("body", b""))
            if read > limit:
                raise HTTPException(413, message)
            return event

        await self.app(scope, counted, send)


@dataclass(frozen=True)
class _Paths(BaseRoute):
    """Hands the API's paths, untouched, to the API's own app (its errors, schema and docs stay its own)."""

    app: FastAPI

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if scope["type"] == "http" and any(path == p or path.startswith(p + "/") for p in PATHS):
            return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def beside_gradio(api: FastAPI) -> dict[str, Any]:
    """``app_kwargs`` for Gradio's ``launch()``: the API's paths are routed before Gradio's own, from the
    first request on. Gradio's own root /openapi.json (a FastAPI default, of Gradio's routes) is dropped."""
    return {"routes": [_Paths(api)], "openapi_url": None}
