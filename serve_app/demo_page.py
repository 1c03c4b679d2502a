"""The live demo page's files, shipped inside the package (no build step, nothing fetched from elsewhere),
read once, and the answers the ingress's page routes give (serve_app/ingress.py)."""

import html
from pathlib import Path

from fastapi.responses import HTMLResponse, JSONResponse, Response

STATIC = Path(__file__).parent / "static"
PAGE = (STATIC / "demo.html").read_text(encoding="utf-8")
STATIC_FILES = {name: ((STATIC / name).read_bytes(), kind) for name, kind in
                (("demo.js", "text/javascript; charset=utf-8"), ("demo.css", "text/css; charset=utf-8"))}
# The browser refuses anything from elsewhere (scripts, styles, fonts, calls): the page is self-contained.
# No other site may frame it either (clickjacking the feedback buttons): frame-ancestors, and X-Frame-Options
# for browsers that predate it.
PAGE_HEADERS = {"cache-control": "no-cache", "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
                "x-frame-options": "DENY"}


def page(root_path: str) -> HTMLResponse:
    """The page, its links under the app's route prefix (root_path)."""
    root = html.escape(root_path.rstrip("/"), quote=True)
    return HTMLResponse(PAGE.replace("{{root}}", root), headers=PAGE_HEADERS)


def static_file(name: str) -> Response:
    """One of the page's files (demo.js, demo.css), or 404."""
    if name not in STATIC_FILES:
        return JSONResponse(status_code=404, content={"detail": f"no static file {name!r}"})
    body, kind = STATIC_FILES[name]
    return Response(body, media_type=kind, headers={"cache-control": "no-cache"})
