"""A published client library of headscale's REST API, used as a user would, against oxiscale.

The library is hsapi-client (PyPI, pinned in requirements.txt): `User`, `PreAuthKey`,
`APIKey`, `Node` and `Policy` objects configured with a server URL and an API key, speaking
`/api/v1` with Bearer auth and parsing the answers into pydantic models. It was written for
headscale 0.23-0.25; where headscale changed the API since (0.26 to 0.29), the comments say
so and the test checks what a user of the library then sees against headscale 0.29 as well:
an answer the library cannot parse because headscale's shape changed is not an oxiscale bug.

One test: a server with the policy in the database (so the library can set it), an API key
made with the CLI, and one real tsnet node (caddy-tailscale) that logs in interactively and
is registered to a user, so the node calls act on a real node.
"""

from __future__ import annotations

import datetime as dt
import importlib.abc
import importlib.machinery
import json
import re
import sys

import pydantic
import pytest

from harness import Server, wait_for


# hsapi-client says it supports Python 3.11 but two of its f-strings span lines, which only
# Python 3.12 parses (PEP 701). On 3.11 its modules are compiled with those f-strings joined
# onto one line: the same code, nothing else changed. On 3.12+ it is imported as published.
class _JoinedFStringLoader(importlib.machinery.SourceFileLoader):
    def source_to_code(self, data, path, *, _optimize=-1):
        source = data.decode("utf-8") if isinstance(data, bytes) else data
        return compile(re.sub(r"\{\n\s*", "{", source), path, "exec", dont_inherit=True,
                       optimize=_optimize)


class _HsapiClientFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "hsapi_client" and not name.startswith("hsapi_client."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            spec.loader = _JoinedFStringLoader(name, spec.origin)
        return spec


if sys.version_info < (3, 12):
    sys.meta_path.insert(0, _HsapiClientFinder())

from hsapi_client import APIKey, Node, Policy, PreAuthKey, User  # noqa: E402
from hsapi_client.apikeys import v1CreateApiKeyRequest, v1ExpireApiKeyRequest  # noqa: E402
from hsapi_client.config import APISettings, HTTPException  # noqa: E402
from hsapi_client.nodes import v1MoveNodeRequest, v1SetTagsNodeRequest  # noqa: E402
from hsapi_client.preauthkeys import (  # noqa: E402
    v1CreatePreAuthKeyRequest, v1ListPreAuthKeyRequest)
from hsapi_client.schemas import v1PreAuthKey  # noqa: E402
from hsapi_client.users import v1CreateUserRequest  # noqa: E402

# The library calls pydantic's deprecated `.dict()` on every request: not this test's concern.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince20")

POLICY = {
    "tagOwners": {"tag:ci": ["alice@"]},
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}


class _ById(pydantic.BaseModel):
    """headscale 0.28+'s ExpirePreAuthKeyRequest: the key's id (see the pre-auth key part)."""
    id: str


@pytest.fixture(autouse=True)
def server_settings(monkeypatch):
    # Autouse: set before the `server` fixture reads the environment. In file mode (the
    # default) headscale and oxiscale both refuse to set the policy through the API.
    monkeypatch.setenv("OXISCALE_POLICY_MODE", "database")
    # Nodes get a key expiry (node.expiry). Without one a node's `expiry` is null, as
    # headscale 0.29 writes it too, and the library's node model (which expects a time, or
    # the year-1 time older headscale stored) cannot read any node answer.
    monkeypatch.setenv("OXISCALE_NODE_EXPIRY", "180d")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def status_of(call) -> int:
    with pytest.raises(HTTPException) as err:
        call()
    return err.value.status_code


def test_headscale_api_client_library(server: Server, caddy_node):
    # The new key alone, as a JSON string: what headscale's CLI prints under -o json.
    token = server.cli("apikeys", "create", "-e", "1h")
    assert isinstance(token, str) and token.startswith("oxskey-api-"), token
    settings = APISettings(server=server.url, api_token=token)
    users, keys, apikeys = User(settings), PreAuthKey(settings), APIKey(settings)
    nodes, policy = Node(settings), Policy(settings)
    first = apikeys.list().apiKeys
    assert len(first) == 1 and not first[0].expired
    assert dt.timedelta(minutes=55) < first[0].expiration - utcnow() <= dt.timedelta(hours=1)
    cli_key_id = first[0].id

    # --- Authentication: a wrong key is refused, as headscale refuses it (401).
    bad = APISettings(server=server.url, api_token="hskey-api-nope-nope")
    assert status_of(lambda: User(bad).list()) == 401

    # --- Users. headscale 0.23 moved delete and rename from names to ids: the library's
    # `name` arguments take the user's id.
    alice = users.create(v1CreateUserRequest(name="alice")).user
    bob = users.create(v1CreateUserRequest(name="bob")).user
    assert (alice.name, bob.name) == ("alice", "bob")
    assert isinstance(alice.id, int) and bob.id != alice.id
    assert abs(utcnow() - alice.createdAt) < dt.timedelta(minutes=5)
    listed = users.list().users
    assert [(u.id, u.name) for u in listed] == [(alice.id, "alice"), (bob.id, "bob")]
    # Creating a name twice: headscale's AlreadyExists (409) reaches the caller.
    assert status_of(lambda: users.create(v1CreateUserRequest(name="alice"))) == 409
    renamed = users.rename(str(bob.id), "robert").user
    assert (renamed.id, renamed.name) == (bob.id, "robert")
    users.delete(str(bob.id))
    assert [u.name for u in users.list().users] == ["alice"]
    # `get` is GET /api/v1/user/{name}, which headscale no longer has (0.23: the list takes
    # id/name/email filters). grpc-gateway answers a known path with another method 405 as
    # Unimplemented: 501.
    assert status_of(lambda: users.get("alice")) == 501

    # --- Policy (database mode). The library parses the policy text (HuJSON) into a dict.
    stored = policy.put(json.dumps(POLICY))
    assert stored.policy == POLICY
    assert abs(utcnow() - stored.updatedAt) < dt.timedelta(minutes=5)
    got = policy.get()
    assert (got.policy, got.updatedAt) == (POLICY, stored.updatedAt)
    # An invalid policy is refused (InvalidArgument: 400) and the stored one stays.
    bad_policy = {"acls": [{"action": "allow", "src": ["*"], "dst": ["*:*"]}]}
    assert status_of(lambda: policy.put(json.dumps(bad_policy))) == 400
    assert policy.get().policy == POLICY

    # --- Pre-auth keys. The library sends every field of its request model, unset ones as
    # null ("ephemeral": null), which protojson reads as unset. Since headscale 0.26 a
    # key's `user` is a User message, where the library's model has a string: the request
    # succeeds (an HTTP error would raise HTTPException) and only the answer's user fails to
    # parse, against headscale 0.29 as against oxiscale.
    assert keys.list(v1ListPreAuthKeyRequest(user=str(alice.id))).preAuthKeys == []
    with pytest.raises(pydantic.ValidationError) as err:
        keys.create(v1CreatePreAuthKeyRequest(user=str(alice.id), reusable=True,
                                              aclTags=["ci"]))
    assert {e["loc"] for e in err.value.errors()} == {("preAuthKey", "user")}
    with pytest.raises(pydantic.ValidationError):
        keys.create(v1CreatePreAuthKeyRequest(
            user=str(alice.id), expiration=(utcnow() + dt.timedelta(hours=2)).isoformat()))
    # What the keys look like, read with the library's own transport and key model (the
    # user flattened to its name, as the library expected it).
    raw = keys.call("get").json()["preAuthKeys"]
    assert all(k["user"]["id"] == str(alice.id) for k in raw)
    pak = [v1PreAuthKey.model_validate({**k, "user": k["user"]["name"]}) for k in raw]
    assert [(k.user, k.reusable, k.ephemeral, k.used, k.expired) for k in pak] == [
        ("alice", True, False, False, False), ("alice", False, False, False, False)]
    assert pak[0].aclTags == ["tag:ci"]  # the library adds "tag:" to its tags
    assert dt.timedelta(minutes=110) < pak[1].expiration - utcnow() < dt.timedelta(minutes=130)
    # The library's `expire` posts {user, key} to /api/v1/preauthkey (the create route) and
    # headscale 0.28 made ExpirePreAuthKeyRequest an id: expire through its transport.
    keys.call("post", "expire", data=_ById(id=str(pak[1].id)))
    raw = {k["id"]: k for k in keys.call("get").json()["preAuthKeys"]}
    expired = v1PreAuthKey.model_validate({**raw[str(pak[1].id)], "user": "alice"})
    assert expired.expired and expired.expiration <= utcnow()
    assert not v1PreAuthKey.model_validate({**raw[str(pak[0].id)], "user": "alice"}).expired

    # --- Nodes: one real tsnet node, logged in interactively and registered to alice (a
    # node registered with a pre-auth key carries that key, whose `user` the library's model
    # cannot read since 0.26, in every node answer).
    assert nodes.list().nodes == []
    web = caddy_node("web", None, serve_text="web")
    url = wait_for("web's tsnet to log an AuthURL", web.auth_url, 60)
    auth_id = url.rstrip("/").rsplit("/", 1)[-1]
    server.cli("auth", "register", "--user", "alice", "--auth-id", auth_id)
    server.wait_node("web")
    listed = nodes.list().nodes
    assert len(listed) == 1
    node = listed[0]
    assert (node.name, node.givenName, node.user.id, node.user.name) == (
        "web", "web", alice.id, "alice")
    assert node.registerMethod.value == "REGISTER_METHOD_CLI"
    assert len(node.ipAddresses) == 2 and node.machineKey.startswith("mkey:")
    assert node.nodeKey.startswith("nodekey:") and node.preAuthKey is None
    assert node.online is True
    assert dt.timedelta(days=179) < node.expiry - utcnow() < dt.timedelta(days=181)
    assert not node.expired and node.expireDate == node.expiry
    assert nodes.get(node.id).id == node.id  # the library's get reads the list
    assert nodes._get(node.id).machineKey == node.machineKey  # GET /api/v1/node/{id}
    assert [n.id for n in nodes.byUser("alice").nodes] == [node.id]
    assert status_of(lambda: nodes._get(node.id + 1000)) == 404

    assert nodes.rename(node.id, "web-renamed").node.givenName == "web-renamed"
    assert nodes.list().nodes[0].givenName == "web-renamed"

    # `move` is POST /api/v1/node/{id}/user, which headscale 0.28 removed: Not Found.
    assert status_of(lambda: nodes.move(node.id, v1MoveNodeRequest(user=str(alice.id)))) == 404
    # backfillips: the library sends ?confirmed=True, which Go's ParseBool reads.
    assert nodes.backfillips().changes == []

    nodes.expire(node.id)
    after = nodes._get(node.id)
    assert after.expired and after.expiry <= utcnow()

    # setTags (the library adds "tag:"). A tag the policy has no owner for is refused.
    assert status_of(lambda: nodes.setTags(node.id, v1SetTagsNodeRequest(tags=["nope"]))) == 400
    # Since headscale 0.28 a tagged node is owned by its tags: no user, and no expiry
    # (tagged nodes do not expire); the library's node model requires both, and has no
    # `tags` (0.28 replaced forcedTags/validTags/invalidTags by it). So the tags are set,
    # and the answer is read with the library's transport.
    with pytest.raises(pydantic.ValidationError) as err:
        nodes.setTags(node.id, v1SetTagsNodeRequest(tags=["ci"]))
    assert {e["loc"] for e in err.value.errors()} == {("node", "user"), ("node", "expiry")}
    raw = nodes.call("get", node.id).json()["node"]
    assert (raw["tags"], raw["user"], raw["expiry"]) == (["tag:ci"], None, None)
    assert raw["givenName"] == "web-renamed"

    nodes.delete(node.id)
    assert nodes.list().nodes == []  # (with the tagged node listed, it would not parse)
    assert status_of(lambda: nodes.delete(node.id)) == 404

    # --- API keys: list, create, use, expire, delete.
    listed = apikeys.list().apiKeys
    assert [k.id for k in listed] == [cli_key_id]
    fresh = apikeys.create(v1CreateApiKeyRequest()).apiKey
    assert fresh and fresh != token
    as_fresh = APISettings(server=server.url, api_token=fresh)
    assert [u.name for u in User(as_fresh).list().users] == ["alice"]
    listed = apikeys.list().apiKeys
    assert len(listed) == 2
    new = next(k for k in listed if k.id != cli_key_id)
    # Without an expiration, a key lasts 90 days (headscale's default).
    assert dt.timedelta(days=89) < new.expiration - utcnow() < dt.timedelta(days=91)
    apikeys.expire(v1ExpireApiKeyRequest(prefix=new.prefix))
    assert next(k for k in apikeys.list().apiKeys if k.id == new.id).expired
    assert status_of(lambda: User(as_fresh).list()) == 401
    apikeys.delete(new.prefix)
    assert [k.id for k in apikeys.list().apiKeys] == [cli_key_id]
