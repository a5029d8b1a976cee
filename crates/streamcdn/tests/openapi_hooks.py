# Schemathesis hooks for tests/openapi.rs (loaded through SCHEMATHESIS_HOOKS): the
# CDNI trigger endpoints speak JSON under `application/cdni; ptype=...` (RFC 8007 §7.1),
# a media type schemathesis cannot write or read by itself. Registered with its `ptype`,
# so that is the Content-Type schemathesis sends.
import json

import schemathesis

COMMAND = "application/cdni; ptype=ci-trigger-command"


@schemathesis.serializer(COMMAND)
def cdni_command(ctx, value):
    if isinstance(value, bytes):
        return value
    return json.dumps(value).encode()


@schemathesis.deserializer("application/cdni")
def cdni_response(ctx, response):
    return json.loads(response.content)
