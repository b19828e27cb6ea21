"""A local stand-in for Discord (REST API and gateway on 127.0.0.1) that the real discord.py client connects to,
and a fake knowledge base of the same shape as index.kb.KnowledgeBase for fast tests.

Use:
    async with DiscordStandIn() as discord_:            # serves, and points discord.py's Route.BASE and gateway at it
        async with discord_.running(create_bot(cfg, kb, guild_ready_timeout=0.05)):
            it = await discord_.slash("ask", {"question": "…"})            # INTERACTION_CREATE
            deferral = await discord_.wait_for("POST", it.callback_path)   # the recorded REST call
            answer = await discord_.wait_for("POST", it.webhook_path)      # the follow-up
            press = await discord_.press(answer.response, answer.custom_ids()["👍"])
            message = await discord_.post(f"<@{BOT_ID}> …", mentions=[BOT])  # MESSAGE_CREATE

What it answers: login (users/@me, applications/@me, gateway/bot), command sync (global and per server), the
gateway (HELLO, heartbeats, IDENTIFY → READY + GUILD_CREATE, shards), interaction callbacks, webhook follow-ups and
edits, channel messages (echoed back as MESSAGE_CREATE, as Discord does), threads (THREAD_CREATE), typing. It
checks the bot token (401 / close 4004), can refuse the Message Content intent (close 4014), and withholds message
content from the bot without that intent, like Discord. Anything else is answered 404 and listed in `unhandled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterable

import aiohttp
import yarl
from aiohttp import web

import discord
import discord.gateway
import discord.http

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.standin.t0ken-for-tests-only"
APP_ID = 1100000000000000001
BOT_ID = APP_ID
GUILD_ID = 1100000000000000010
GENERAL_ID = 1100000000000000020   # a text channel
ASK_ID = 1100000000000000021       # a text channel to configure as an ask-channel
DM_ID = 1100000000000000022        # a member's direct-message channel with the bot
OTHER_GUILD_ID = 1100000000000000011  # a second server (DiscordStandIn(second_guild=True))
OTHER_GENERAL_ID = 1100000000000000023  # its text channel
EVERYONE_ROLE = GUILD_ID
LIBRARIAN_ROLE = 1100000000000000030
ADMIN_ID = 1100000000000000100     # has Manage Server
MEMBER_ID = 1100000000000000101    # plain member
LIBRARIAN_ID = 1100000000000000102  # has the Librarian role
OTHER_BOT_ID = 1100000000000000103  # another bot in the server
MEMBER_PERMISSIONS = discord.Permissions(view_channel=True, send_messages=True, read_message_history=True,
                                         use_application_commands=True, send_messages_in_threads=True,
                                         create_public_threads=True, embed_links=True)
ADMIN_PERMISSIONS = MEMBER_PERMISSIONS | discord.Permissions(manage_guild=True)
DISCORD_EPOCH_MS = 1420070400000


def _json(data: Any, status: int = 200) -> web.Response:
    """A JSON response with exactly `Content-Type: application/json` (discord.py needs it exactly so)."""
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


@dataclass
class Call:
    """One REST request the client made, and what the stand-in answered."""
    method: str
    path: str                 # without the /api/v10 prefix
    query: dict[str, str]
    json: Any
    response: Any = None

    @property
    def embeds(self) -> list[dict]:
        return (self.json or {}).get("embeds") or ((self.json or {}).get("data") or {}).get("embeds") or []

    @property
    def body(self) -> dict:
        """The message fields: the JSON itself, or its 'data' for interaction callbacks."""
        data = self.json or {}
        if "type" in data and "data" in data:
            return data["data"] or {}
        return data

    def custom_ids(self) -> dict[str, str]:
        """label-or-emoji → custom_id of every button or select in the message."""
        out = {}
        for row in self.body.get("components") or []:
            for c in row.get("components", []):
                key = c.get("label") or (c.get("emoji") or {}).get("name") or c.get("placeholder") or c.get("custom_id")
                out[key] = c.get("custom_id")
        return out


@dataclass
class Interaction:
    """An interaction the stand-in delivered."""
    id: int
    token: str
    payload: dict

    @property
    def callback_path(self) -> str:
        return f"/interactions/{self.id}/{self.token}/callback"

    @property
    def webhook_path(self) -> str:
        return f"/webhooks/{APP_ID}/{self.token}"


@dataclass
class User:
    id: int
    name: str
    bot: bool = False
    roles: list[int] = field(default_factory=list)
    permissions: discord.Permissions = MEMBER_PERMISSIONS

    def payload(self) -> dict:
        return {"id": str(self.id), "username": self.name, "discriminator": "0", "global_name": self.name,
                "avatar": None, "bot": self.bot, "public_flags": 0}

    def member(self, with_user: bool = True, permissions: bool = False) -> dict:
        data = {"roles": [str(r) for r in self.roles], "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False,
                "mute": False, "flags": 0, "nick": None, "avatar": None, "premium_since": None, "pending": False}
        if with_user:
            data["user"] = self.payload()
        if permissions:
            data["permissions"] = str(self.permissions.value)
        return data


BOT = User(BOT_ID, "citebot", bot=True, permissions=ADMIN_PERMISSIONS)
ADMIN = User(ADMIN_ID, "ada-admin", permissions=ADMIN_PERMISSIONS)
MEMBER = User(MEMBER_ID, "max-member")
LIBRARIAN = User(LIBRARIAN_ID, "lin-librarian", roles=[LIBRARIAN_ROLE])
OTHER_BOT = User(OTHER_BOT_ID, "other-bot", bot=True)


class DiscordStandIn:
    """Discord's REST API and gateway, just enough of them for discord.py 2.7, on 127.0.0.1, recording every call."""

    def __init__(self, host: str = "127.0.0.1", token: str = TOKEN, allow_message_content: bool = True,
                 heartbeat_interval: int = 41250, second_guild: bool = False):
        self.host = host
        self.heartbeat_interval = heartbeat_interval        # ms, sent in HELLO (smaller for heartbeat tests)
        self.heartbeats: list[float] = []                   # time.monotonic() of each heartbeat (op 1) received
        self.token = token                                  # the one bot token accepted
        self.allow_message_content = allow_message_content  # False: as if the intent is off in the portal
        self.port = 0
        self.calls: list[Call] = []
        self.unhandled: list[Call] = []
        self.identify: list[dict] = []
        self.commands: dict[str, list[dict]] = {}
        self.messages: dict[int, dict] = {}
        self.channels: dict[int, dict] = {}
        self.users = {u.id: u for u in (BOT, ADMIN, MEMBER, LIBRARIAN, OTHER_BOT)}
        self._originals: dict[str, int] = {}   # interaction token → id of its original message
        self._where: dict[str, int] = {}       # interaction token → channel id
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = 0
        self.files: dict[str, bytes] = {}   # attachment id -> content, served at its URL
        self.downloads: list[str] = []      # attachment ids fetched by the client
        self._ids = itertools.count(1)
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._saved: tuple[str, yarl.URL] | None = None
        self.guild_ids = [GUILD_ID] + ([OTHER_GUILD_ID] if second_guild else [])
        for cid, name, gid in ((GENERAL_ID, "general", GUILD_ID), (ASK_ID, "ask-here", GUILD_ID),
                               (OTHER_GENERAL_ID, "general", OTHER_GUILD_ID)):
            if gid not in self.guild_ids:
                continue
            self.channels[cid] = {"id": str(cid), "type": 0, "name": name, "guild_id": str(gid), "position": 0,
                                  "permission_overwrites": [], "nsfw": False, "topic": None, "last_message_id": None,
                                  "rate_limit_per_user": 0, "parent_id": None}

    # ------------------------------------------------------------ lifecycle
    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    async def start(self) -> None:
        """Serve on a free port and point discord.py's REST and gateway addresses at it."""
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{aid}/{name}", self._file)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    async def stop(self) -> None:
        """Close every socket, stop serving and restore discord.py's addresses."""
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None

    async def __aenter__(self) -> "DiscordStandIn":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def ready(self, client: discord.Client, task: asyncio.Task | None = None, timeout: float = 30) -> None:
        """Wait until `client` has connected and received the guild (or its start() `task` has failed)."""
        waiter = asyncio.ensure_future(client.wait_until_ready())
        watched = {waiter} | ({task} if task is not None else set())
        done, _ = await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if task is not None and task in done:
                task.result()  # raises the client's error
                raise AssertionError("the client stopped before it was ready")
            raise AssertionError(f"the client was not ready within {timeout} s")

    @contextlib.asynccontextmanager
    async def running(self, client: discord.Client, token: str = TOKEN) -> AsyncIterator[discord.Client]:
        """Start `client` against the stand-in, wait until it is ready, and close it cleanly afterwards."""
        task = asyncio.create_task(client.start(token))
        try:
            await self.ready(client, task)
            yield client
        finally:
            await self.shutdown(client, task)

    async def identified(self, timeout: float = 30) -> dict:
        """The first IDENTIFY payload a client sent (waits for one)."""
        async def first() -> dict:
            while not self.identify:
                await asyncio.sleep(0.01)
            return self.identify[0]
        return await asyncio.wait_for(first(), timeout)

    async def shutdown(self, client: discord.Client, task: asyncio.Task, timeout: float = 30) -> None:
        """Close `client` and wait for its start() task to end."""
        await asyncio.wait_for(client.close(), timeout)
        try:
            await asyncio.wait_for(task, timeout)
        except (asyncio.CancelledError, discord.ClientException):
            pass

    # ------------------------------------------------------------ ids and payloads
    def snowflake(self) -> int:
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._ids) & 0x3FFFFF)

    def guild_payload(self, guild_id: int = GUILD_ID) -> dict:
        def role(rid: int, name: str, perms: discord.Permissions, position: int) -> dict:
            return {"id": str(rid), "name": name, "permissions": str(perms.value), "position": position,
                    "color": 0, "colors": {"primary_color": 0}, "hoist": False, "managed": False,
                    "mentionable": False, "flags": 0, "icon": None, "unicode_emoji": None}
        return {
            "id": str(guild_id), "name": "Stand-in Server" if guild_id == GUILD_ID else "Other Server", "owner_id": str(ADMIN_ID), "icon": None, "splash": None,
            "discovery_splash": None, "banner": None, "description": None, "features": [], "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
            "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US", "afk_channel_id": None,
            "afk_timeout": 300, "system_channel_id": None, "system_channel_flags": 0, "rules_channel_id": None,
            "public_updates_channel_id": None, "vanity_url_code": None, "max_members": 1000, "max_presences": None,
            "max_video_channel_users": 25, "application_id": None, "widget_enabled": False, "joined_at": _now(),
            "large": False, "unavailable": False, "member_count": len(self.users), "lazy": True,
            "roles": [role(EVERYONE_ROLE, "@everyone", MEMBER_PERMISSIONS, 0),
                      role(LIBRARIAN_ROLE, "Librarian", MEMBER_PERMISSIONS, 1)],
            "channels": [c for c in self.channels.values() if c["type"] == 0 and c["guild_id"] == str(guild_id)],
            "threads": [], "members": [BOT.member()], "voice_states": [], "presences": [], "emojis": [],
            "stickers": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        }

    def message_payload(self, channel_id: int, author: User, body: dict, **extra: Any) -> dict:
        """A stored message as Discord returns it, made from a request body."""
        mid = self.snowflake()
        data = {"id": str(mid), "channel_id": str(channel_id), "author": author.payload(),
                "content": body.get("content") or "", "embeds": body.get("embeds") or [],
                "components": body.get("components") or [], "attachments": [], "mentions": [], "mention_roles": [],
                "mention_everyone": False, "pinned": False, "tts": False, "timestamp": _now(),
                "edited_timestamp": None, "type": 0, "flags": int(body.get("flags") or 0)}
        if channel_id in self.channels:
            data["guild_id"] = self.channels[channel_id].get("guild_id", str(GUILD_ID))
        data.update(extra)
        self.messages[mid] = data
        return data

    # ------------------------------------------------------------ gateway
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval},
                                       "s": None, "t": None}))
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data["op"] == 1:
                    self.heartbeats.append(time.monotonic())
                    await ws.send_str(json.dumps({"op": 11}))
                elif data["op"] == 2:
                    await self._identified(ws, data["d"])
        finally:
            self._sockets.remove(ws)
        return ws

    async def _identified(self, ws: web.WebSocketResponse, identify: dict) -> None:
        self.identify.append(identify)
        if identify.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if identify.get("intents", 0) & (1 << 15) and not self.allow_message_content:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = identify.get("shard") or [0, 1]
        ready = {"v": 10, "user": BOT.payload(), "session_id": secrets.token_hex(8),
                 "resume_gateway_url": self.gateway_url, "application": {"id": str(APP_ID), "flags": 0},
                 "guilds": [{"id": str(g), "unavailable": True} for g in self.guild_ids] if shard[0] == 0 else [],
                 "private_channels": [], "relationships": [], "shard": shard}
        await self._send(ws, "READY", ready)
        if shard[0] == 0:
            for guild_id in self.guild_ids:
                await self._send(ws, "GUILD_CREATE", self.guild_payload(guild_id))

    async def _send(self, ws: web.WebSocketResponse, event: str, data: dict) -> None:
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def dispatch(self, event: str, data: dict) -> None:
        """Send a gateway event (op 0) to every connected client."""
        for ws in list(self._sockets):
            await self._send(ws, event, data)

    # ------------------------------------------------------------ attachments
    def attachment(self, filename: str, data: bytes, size: int | None = None) -> dict:
        """An uploaded file as Discord describes it (pass it as a slash option's value); its URL serves `data`."""
        aid = str(self.snowflake())
        self.files[aid] = data
        from urllib.parse import quote
        url = f"http://{self.host}:{self.port}/attachments/{aid}/{quote(filename, safe='')}"
        return {"id": aid, "filename": filename, "size": len(data) if size is None else size, "url": url,
                "proxy_url": url, "content_type": "application/octet-stream"}

    async def _file(self, request: web.Request) -> web.Response:
        aid = request.match_info["aid"]
        if aid not in self.files:
            return web.Response(status=404)
        self.downloads.append(aid)
        return web.Response(body=self.files[aid], content_type="application/octet-stream")

    # ------------------------------------------------------------ events tests deliver
    def _options(self, options: dict[str, Any], focused: str | None = None) -> list[dict]:
        out = []
        for name, value in options.items():
            if isinstance(value, dict) and "filename" in value:  # an attachment: its id, resolved in the payload
                out.append({"name": name, "type": 11, "value": value["id"]})
                continue
            kind = 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 3
            opt = {"name": name, "type": kind, "value": value}
            if name == focused:
                opt["focused"] = True
            out.append(opt)
        return out

    def _interaction(self, kind: int, data: dict, user: User, channel_id: int, **extra: Any) -> Interaction:
        iid, token = self.snowflake(), "itoken-" + secrets.token_urlsafe(24)
        self._where[token] = channel_id
        if channel_id == DM_ID:  # a direct message: no guild and no member, the user instead
            data.pop("guild_id", None)
            payload = {"id": str(iid), "application_id": str(APP_ID), "type": kind, "token": token, "version": 1,
                       "attachment_size_limit": 26214400, "user": user.payload(),
                       "channel": {"id": str(DM_ID), "type": 1, "last_message_id": None,
                                   "recipients": [user.payload()], "flags": 0},
                       "channel_id": str(DM_ID), "app_permissions": str(MEMBER_PERMISSIONS.value), "locale": "en-US",
                       "entitlements": [], "authorizing_integration_owners": {"0": str(GUILD_ID)}, "context": 1,
                       "data": data, **extra}
            return Interaction(iid, token, payload)
        channel = dict(self.channels[channel_id])
        channel["permissions"] = str(user.permissions.value)
        guild_id = channel.get("guild_id") or str(GUILD_ID)
        if "guild_id" in data:
            data["guild_id"] = guild_id
        payload = {"id": str(iid), "application_id": str(APP_ID), "type": kind, "token": token, "version": 1,
                   "attachment_size_limit": 26214400, "guild_id": guild_id,
                   "guild": {"id": guild_id, "locale": "en-US", "features": []}, "channel": channel,
                   "channel_id": str(channel_id), "member": user.member(permissions=True),
                   "app_permissions": str(ADMIN_PERMISSIONS.value), "locale": "en-US", "guild_locale": "en-US",
                   "entitlements": [], "authorizing_integration_owners": {"0": guild_id}, "context": 0,
                   "data": data, **extra}
        return Interaction(iid, token, payload)

    async def slash(self, name: str, options: dict[str, Any] | None = None, *, user: User = MEMBER,
                    channel_id: int = GENERAL_ID) -> Interaction:
        """Deliver INTERACTION_CREATE for `/name option=value…` used by `user`."""
        data = {"id": str(next((c["id"] for c in self.all_commands() if c["name"] == name), self.snowflake())),
                "name": name, "type": 1, "options": self._options(options or {}), "guild_id": str(GUILD_ID)}
        files = {v["id"]: v for v in (options or {}).values() if isinstance(v, dict) and "filename" in v}
        if files:
            data["resolved"] = {"attachments": files}
        it = self._interaction(2, data, user, channel_id)
        await self.dispatch("INTERACTION_CREATE", it.payload)
        return it

    async def autocomplete(self, name: str, options: dict[str, Any], focused: str, *, user: User = MEMBER,
                           channel_id: int = GENERAL_ID) -> Interaction:
        """Deliver an autocomplete interaction (type 4) with `focused` being typed."""
        data = {"id": str(self.snowflake()), "name": name, "type": 1, "options": self._options(options, focused)}
        it = self._interaction(4, data, user, channel_id)
        await self.dispatch("INTERACTION_CREATE", it.payload)
        return it

    async def press(self, message: dict, custom_id: str, *, user: User = MEMBER, values: list[str] | None = None,
                    channel_id: int | None = None) -> Interaction:
        """Deliver a button press (or a select choice, with `values`) on a message the bot sent."""
        data = {"custom_id": custom_id, "component_type": 3 if values is not None else 2}
        if values is not None:
            data["values"] = values
        channel_id = channel_id or int(message["channel_id"])
        if channel_id not in self.channels and channel_id != DM_ID:
            channel_id = GENERAL_ID
        it = self._interaction(3, data, user, channel_id, message=message)
        self._originals[it.token] = int(message["id"])
        await self.dispatch("INTERACTION_CREATE", it.payload)
        return it

    async def post(self, content: str, *, author: User = MEMBER, channel_id: int = GENERAL_ID,
                   mentions: Iterable[User] = ()) -> dict:
        """Deliver MESSAGE_CREATE: `author` posts `content` (use f"<@{BOT_ID}> …" and mentions=[BOT] to mention)."""
        mentions = list(mentions)
        intents = self.identify[-1].get("intents", 0) if self.identify else 0
        if not intents & (1 << 15) and author.id != BOT_ID and BOT not in mentions:
            content = ""  # without the Message Content intent Discord sends no content for other messages
        data = self.message_payload(channel_id, author, {"content": content})
        data["member"] = author.member(with_user=False)
        data["mentions"] = [{**u.payload(), "member": u.member(with_user=False)} for u in mentions]
        await self.dispatch("MESSAGE_CREATE", data)
        return data

    # ------------------------------------------------------------ REST
    def all_commands(self) -> list[dict]:
        return [c for cmds in self.commands.values() for c in cmds]

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            if request.content_type == "application/json":
                body = json.loads(raw or b"null")
            elif request.content_type.startswith("multipart/"):
                body = {"multipart": True}
        call = Call(request.method, path, dict(request.query), body)
        if not path.startswith(("/webhooks/", "/interactions/")) and \
                request.headers.get("Authorization") != f"Bot {self.token}":
            response = _json({"message": "401: Unauthorized", "code": 0}, 401)
        else:
            response = self._route(call)
        if response is None:
            self.unhandled.append(call)
            response = _json({"message": f"stand-in: no route {request.method} {path}", "code": 0}, 404)
        else:
            call.response = json.loads(response.body) if response.body else None  # type: ignore[arg-type]
        self.calls.append(call)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        return response

    def _route(self, call: Call) -> web.Response | None:
        m, p, body = call.method, call.path, call.json or {}
        if (m, p) == ("GET", "/users/@me"):
            return _json(BOT.payload())
        if (m, p) == ("GET", "/oauth2/applications/@me"):
            return _json({"id": str(APP_ID), "name": "citebot", "description": "", "icon": None, "bot_public": True,
                          "bot_require_code_grant": False, "owner": ADMIN.payload(), "verify_key": "0" * 64,
                          "flags": 0, "summary": "", "team": None, "interactions_endpoint_url": None})
        if m == "GET" and p in ("/gateway", "/gateway/bot"):
            return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": {
                "total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}})
        if match := re.fullmatch(rf"/applications/{APP_ID}(?:/guilds/(\d+))?/commands", p):
            scope = match.group(1) or "global"
            if m == "PUT":
                self.commands[scope] = [{**c, "id": str(self.snowflake()), "application_id": str(APP_ID),
                                         "version": str(self.snowflake()), "description": c.get("description", ""),
                                         **({"guild_id": scope} if scope != "global" else {})} for c in body]
            if m in ("PUT", "GET"):
                return _json(self.commands.get(scope, []))
        if m == "POST" and (match := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p)):
            return self._callback(int(match.group(1)), match.group(2), body)
        if match := re.fullmatch(rf"/webhooks/{APP_ID}/([^/]+)(?:/messages/([^/]+))?", p):
            return self._webhook(m, match.group(1), match.group(2), body)
        if match := re.fullmatch(r"/channels/(\d+)(/.*)?", p):
            return self._channel(m, int(match.group(1)), match.group(2) or "", body)
        return None

    def _callback(self, iid: int, token: str, body: dict) -> web.Response:
        kind, data = body.get("type"), body.get("data") or {}
        flags = int(data.get("flags") or 0)
        interaction = {"id": str(iid), "type": 2, "response_message_loading": kind == 5,
                       "response_message_ephemeral": bool(flags & 64)}
        answer: dict = {"interaction": interaction}
        if kind in (4, 5):
            msg = self.message_payload(self._where.get(token, GENERAL_ID), BOT, data if kind == 4 else {"flags": flags},
                                       webhook_id=str(APP_ID), application_id=str(APP_ID))
            self._originals[token] = int(msg["id"])
            interaction["response_message_id"] = msg["id"]
            if kind == 4:
                answer["resource"] = {"type": 4, "message": msg}
        elif kind == 7 and token in self._originals:
            msg = self.messages[self._originals[token]]
            msg.update({k: v for k, v in data.items() if k in ("content", "embeds", "components")})
            answer["resource"] = {"type": 7, "message": msg}
        return _json(answer)

    def _webhook(self, method: str, token: str, message_id: str | None, body: dict) -> web.Response | None:
        if message_id is None and method == "POST":
            channel_id = self._where.get(token, GENERAL_ID)
            msg = self.message_payload(channel_id, BOT, body, webhook_id=str(APP_ID), application_id=str(APP_ID))
            return _json(msg)
        if message_id is None:
            return None
        mid = self._originals.get(token) if message_id == "@original" else int(message_id)
        if mid is None or mid not in self.messages:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        if method == "DELETE":
            self.messages.pop(mid, None)
            return web.Response(status=204)
        msg = self.messages[mid]
        if method == "PATCH":
            msg.update({k: v for k, v in body.items() if k in ("content", "embeds", "components", "flags")})
            msg["edited_timestamp"] = _now()
        return _json(msg)

    def _channel(self, method: str, cid: int, rest: str, body: dict) -> web.Response | None:
        if (method, rest) == ("GET", ""):
            return _json(self.channels[cid]) if cid in self.channels else None
        if (method, rest) == ("POST", "/typing"):
            return web.Response(status=204)
        if (method, rest) == ("POST", "/messages"):
            msg = self.message_payload(cid, BOT, body)
            if ref := body.get("message_reference"):
                msg["message_reference"] = ref
                msg["type"] = 19
            asyncio.get_running_loop().create_task(self.dispatch("MESSAGE_CREATE", {**msg, "member": BOT.member(False)}))
            return _json(msg)
        if match := re.fullmatch(r"/messages/(\d+)/threads", rest):
            return self._thread(cid, int(match.group(1)), body)
        if match := re.fullmatch(r"/messages/(\d+)", rest):
            mid = int(match.group(1))
            if method == "DELETE":
                self.messages.pop(mid, None)
                return web.Response(status=204)
            if mid not in self.messages:
                return _json({"message": "Unknown Message", "code": 10008}, 404)
            if method == "PATCH":
                self.messages[mid].update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
                self.messages[mid]["edited_timestamp"] = _now()
            return _json(self.messages[mid])
        return None

    def _thread(self, parent: int, message_id: int, body: dict) -> web.Response:
        tid = message_id  # Discord gives a thread started from a message the message's id
        thread = {"id": str(tid), "type": 11, "guild_id": str(GUILD_ID), "parent_id": str(parent),
                  "owner_id": str(BOT_ID), "name": body.get("name", "thread"), "last_message_id": None,
                  "rate_limit_per_user": 0, "message_count": 0, "member_count": 1, "total_message_sent": 0,
                  "flags": 0, "thread_metadata": {"archived": False, "locked": False,
                                                  "auto_archive_duration": body.get("auto_archive_duration", 1440),
                                                  "archive_timestamp": _now()}}
        self.channels[tid] = thread
        asyncio.get_running_loop().create_task(self.dispatch("THREAD_CREATE", {**thread, "newly_created": True}))
        return _json(thread)

    # ------------------------------------------------------------ waiting for the client
    def find(self, method: str, path: str | re.Pattern, predicate: Callable[[Call], bool] | None = None,
             start: int = 0) -> list[Call]:
        """Recorded calls with this method whose path equals `path` (or matches it, if a pattern)."""
        def hit(c: Call) -> bool:
            ok = re.fullmatch(path, c.path) if isinstance(path, re.Pattern) else c.path == path
            return bool(ok) and c.method == method and (predicate is None or predicate(c))
        return [c for c in self.calls[start:] if hit(c)]

    async def wait_for(self, method: str, path: str | re.Pattern, predicate: Callable[[Call], bool] | None = None,
                       timeout: float = 30, start: int = 0) -> Call:
        """The first call (from index `start`) matching; waits for it up to `timeout` seconds."""
        assert self._changed is not None

        async def first() -> Call:
            async with self._changed:
                while True:
                    found = self.find(method, path, predicate, start)
                    if found:
                        return found[0]
                    await self._changed.wait()
        try:
            return await asyncio.wait_for(first(), timeout)
        except asyncio.TimeoutError:
            seen = "\n".join(f"  {c.method} {c.path}" for c in self.calls[start:])
            raise AssertionError(f"no {method} {path} within {timeout} s; calls seen:\n{seen}") from None


# ---------------------------------------------------------------- a fake knowledge base
def copy_of(value: Any) -> Any:
    import copy
    return copy.deepcopy(value)


class FakeKnowledgeBase:
    """The shape of index.kb.KnowledgeBase with canned answers, recording every call."""

    def __init__(self, answer: Any = None, docs: list | None = None, info: dict | None = None,
                 report: Any = None, build_gate: Any = None):
        self.answer, self.docs, self._info, self.report = answer, docs or [], info, report
        self.build_gate = build_gate  # a threading.Event the build waits on, to hold a build open
        self.calls: list[tuple] = []
        self.threads: set[int] = set()  # ids of the threads that called in: never the event loop's
        self.feedback: list[tuple] = []
        self.building = False

    def _called(self, *call: Any) -> None:
        import threading
        self.threads.add(threading.get_ident())
        self.calls.append(call)

    def ask(self, question: str, k: int | None = None, *, doc=None, after=None, before=None):
        from index.kb import clean_question
        self._called("ask", question, k, doc, after, before)
        clean_question(question)
        if isinstance(self.answer, Exception):
            raise self.answer
        import copy
        answer = copy.deepcopy(self.answer)
        answer.question = question
        return answer

    def documents(self) -> list:
        self._called("documents")
        return list(self.docs)

    def resolve_document(self, name: str):
        """The document `name` stands for, by the real matching rule over `docs` (or the answer's documents)."""
        from types import SimpleNamespace
        from index.kb import DocumentNotFound
        from index.summarize import match_documents
        docs = list(self.docs) or [SimpleNamespace(doc=p.doc, title=p.title, date=p.date)
                                   for p in getattr(self.answer, "passages", [])]
        matches, suggestions = match_documents(name, docs)
        if len(matches) == 1:
            return matches[0]
        suggestions = matches or suggestions  # several matches: the real one lists them too
        hint = f"; did you mean: {', '.join(d.doc for d in suggestions)}?" if suggestions else ""
        raise DocumentNotFound(f"no indexed document matches '{name}'{hint}", suggestions)

    def info(self) -> dict:
        self._called("info")
        if isinstance(self._info, Exception):
            raise self._info
        return dict(self._info or {})

    def context(self, chunk_id: int, chars: int = 600) -> tuple[str, str]:
        self._called("context", chunk_id, chars)
        for p in self.answer.passages:
            if p.chunk_id == chunk_id:
                return f"Text before.\n{p.text}\nText after.", f"{p.doc}, {p.location}"
        from index.kb import UserError
        raise UserError("that passage is no longer in the index; ask again")

    def confidence_threshold(self) -> float:
        return 0.29

    def save_answer(self, key: str, answer: Any) -> None:
        import copy
        self.saved = getattr(self, "saved", {})
        self.saved[key] = copy.deepcopy(answer)

    def load_answer(self, key: str) -> Any:
        return copy_of(getattr(self, "saved", {}).get(key))

    def voter_id(self, user_id: int) -> str:
        import hashlib
        import hmac
        return hmac.new(b"stand-in secret", str(user_id).encode(), hashlib.sha256).hexdigest()

    def record_feedback(self, question: str, chunk_ids: list[int], user_hash: str, vote: int) -> None:
        self._called("feedback")
        self.feedback.append((question, list(chunk_ids), user_hash, vote))

    def build(self, rebuild: bool = False, progress: Callable | None = None, hooks=None):
        self._called("build", rebuild)
        self.building = True
        try:
            if progress:
                progress("chunking", 1, 2)
                progress("embedding", 3, 10)
            if self.build_gate is not None:
                self.build_gate.wait(30)
            if isinstance(self.report, Exception):
                raise self.report
            return self.report
        finally:
            self.building = False
