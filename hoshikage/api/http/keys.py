"""Every object the app shares, declared once with its type."""

from __future__ import annotations

from aiohttp import web

from hoshikage.activity import Activity
from hoshikage.api.http.connections import ConnectionGuard
from hoshikage.api.http.identity import Access
from hoshikage.config import Settings
from hoshikage.engine.cpu_weights import RepackDecision
from hoshikage.engine.models import ModelPool
from hoshikage.memory.service import Memory
from hoshikage.metrics import Metrics
from hoshikage.registry import Registry

SETTINGS = web.AppKey("settings", Settings)
ACCESS = web.AppKey("access", Access)
REGISTRY = web.AppKey("registry", Registry)
POOL = web.AppKey("pool", ModelPool)
ACTIVITY = web.AppKey("activity", Activity)
CONNECTIONS = web.AppKey("connections", ConnectionGuard)
MEMORY = web.AppKey("memory", Memory)
METRICS = web.AppKey("metrics", Metrics)
CPU_WEIGHTS = web.AppKey("cpu_weights", RepackDecision)
CPU_BACKEND = web.AppKey("cpu_backend", dict)  # the variant and features, asked once
