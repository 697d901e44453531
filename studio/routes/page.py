"""The page and the Vue build it imports (the static files are mounted by create_app)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parents[1] / "static"
#: Vue's prebuilt ES-module browser build, installed by ``npm ci --prefix studio``.
VUE = Path(__file__).resolve().parents[1] / "node_modules" / "vue" / "dist" / "vue.esm-browser.prod.js"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index():
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/vendor/vue.js")
async def vue():
    return FileResponse(VUE, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})
