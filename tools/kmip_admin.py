#!/usr/bin/env python3
"""PyKMIP's own client, as an independent peer of sstable-rekey's KMIP client in tests.

Run it with the venv that tools/kmip-server.sh made:  DIR/venv/bin/python tools/kmip_admin.py DIR OP ...
It prints one JSON object per call.

  create [--bits 128|192|256] [--name NAME] [--pre-active] [--usage MASKS]
                                              create an AES key and (unless --pre-active) activate
                                              it: {"id", "key_hex"}. --usage: PyKMIP's usage mask
                                              names, comma-separated (default encrypt,decrypt), or
                                              none; other than the default, the key is registered
                                              (PyKMIP's Create always adds Encrypt|Decrypt)
  scylla-locate [--bits N] [--namespace NS]   ScyllaDB's Locate for a new key (FORMAT.md 4.4: AES,
                                              the length, Active, usage Encrypt|Decrypt, and
                                              x-key-namespace when given): {"ids"} newest first, or
                                              {"error": PyKMIP's result message} when it fails
  key ID                                      the raw key bytes: {"id", "key_hex"}
  state ID                                    {"id", "state"} with PyKMIP's State name, e.g. COMPROMISED
  states                                      {"states": {id: state}} for every key this client owns
  revoke ID [--reason compromise|superseded]  revoke it
  destroy ID                                  destroy it
  capture                                     hex of PyKMIP's own encoding of a few messages (codec tests)
"""
import argparse
import json
import os
import sys

from kmip.core import enums
from kmip.pie.client import ProxyKmipClient


def client(server_dir):
    return ProxyKmipClient(config="client", config_file=os.path.join(server_dir, "client.conf"))


def capture():
    """PyKMIP's encoding of requests and responses like ours, to pin the codec against a peer."""
    from kmip.core import attributes, objects, primitives, utils
    from kmip.core.messages import contents, messages, payloads

    def hexof(obj):
        s = utils.BytearrayStream()
        obj.write(s)
        return s.buffer.hex()

    get = payloads.GetRequestPayload(
        unique_identifier="42", key_format_type=enums.KeyFormatType.RAW)
    item = messages.RequestBatchItem(
        operation=contents.Operation(enums.Operation.GET), request_payload=get)
    header = messages.RequestHeader(
        protocol_version=contents.ProtocolVersion(1, 2),
        batch_count=contents.BatchCount(1))
    request = messages.RequestMessage(request_header=header, batch_items=[item])

    key = objects.KeyBlock(
        key_format_type=objects.KeyFormatType(enums.KeyFormatType.RAW),
        key_value=objects.KeyValue(objects.KeyMaterial(bytes(range(16)))),
        cryptographic_algorithm=attributes.CryptographicAlgorithm(
            enums.CryptographicAlgorithm.AES),
        cryptographic_length=attributes.CryptographicLength(128))
    from kmip.core.secrets import SymmetricKey
    resp_payload = payloads.GetResponsePayload(
        object_type=enums.ObjectType.SYMMETRIC_KEY, unique_identifier="42",
        secret=SymmetricKey(key))
    ritem = messages.ResponseBatchItem(
        operation=contents.Operation(enums.Operation.GET),
        result_status=contents.ResultStatus(enums.ResultStatus.SUCCESS),
        response_payload=resp_payload)
    rheader = messages.ResponseHeader(
        protocol_version=contents.ProtocolVersion(1, 2),
        time_stamp=contents.TimeStamp(0x5E0BE100),
        batch_count=contents.BatchCount(1))
    response = messages.ResponseMessage(response_header=rheader, batch_items=[ritem])

    fail = messages.ResponseBatchItem(
        operation=contents.Operation(enums.Operation.GET),
        result_status=contents.ResultStatus(enums.ResultStatus.OPERATION_FAILED),
        result_reason=contents.ResultReason(enums.ResultReason.ITEM_NOT_FOUND),
        result_message=contents.ResultMessage("Could not locate object: 42"))
    failed = messages.ResponseMessage(response_header=rheader, batch_items=[fail])
    return {"get_request": hexof(request), "get_response": hexof(response),
            "not_found_response": hexof(failed),
            "long": hexof(primitives.LongInteger(123456789000000000)),
            "boolean": hexof(primitives.Boolean(True)),
            "interval": hexof(primitives.Interval(864000))}


def new_key(c, a):
    """An AES key as `create` describes it; its id."""
    masks = [] if a.usage == "none" else [
        enums.CryptographicUsageMask[u.strip().upper()] for u in a.usage.split(",")]
    if set(masks) != {enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT}:
        from kmip.pie.objects import SymmetricKey
        key = SymmetricKey(enums.CryptographicAlgorithm.AES, a.bits, os.urandom(a.bits // 8),
                           masks=masks, name=a.name or "Symmetric Key")
        return c.register(key)
    return c.create(enums.CryptographicAlgorithm.AES, a.bits, name=a.name,
                    cryptographic_usage_mask=masks)


def scylla_locate(c, a):
    """The Locate ScyllaDB sends before creating a key (kmip_host.cc find_matching_keys)."""
    from kmip.core import attributes, objects
    from kmip.core.factories.attributes import AttributeFactory
    from kmip.pie.exceptions import KmipOperationFailure
    f = AttributeFactory()
    filt = [
        f.create_attribute(enums.AttributeType.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
        f.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_ALGORITHM,
                           enums.CryptographicAlgorithm.AES),
        f.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_LENGTH, a.bits),
        f.create_attribute(enums.AttributeType.STATE, enums.State.ACTIVE),
        f.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_USAGE_MASK,
                           [enums.CryptographicUsageMask.ENCRYPT,
                            enums.CryptographicUsageMask.DECRYPT]),
    ]
    if a.namespace:
        filt.append(objects.Attribute(
            attribute_name=objects.Attribute.AttributeName("x-key-namespace"),
            attribute_value=attributes.CustomAttribute(a.namespace)))
    try:
        return {"ids": c.locate(attributes=filt)}
    except KmipOperationFailure as e:
        return {"error": str(e)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("server_dir")
    ap.add_argument("op", choices=["create", "key", "state", "states", "revoke", "destroy", "capture",
                                   "scylla-locate"])
    ap.add_argument("id", nargs="?")
    ap.add_argument("--bits", type=int, default=128, choices=[128, 192, 256])
    ap.add_argument("--name")
    ap.add_argument("--reason", default="compromise", choices=["compromise", "superseded"])
    ap.add_argument("--pre-active", action="store_true")
    ap.add_argument("--usage", default="encrypt,decrypt")
    ap.add_argument("--namespace")
    a = ap.parse_args()
    if a.op == "capture":
        print(json.dumps(capture()))
        return 0
    if a.op not in ("create", "states", "scylla-locate") and not a.id:
        ap.error(a.op + " needs ID")
    with client(a.server_dir) as c:
        if a.op == "create":
            uid = new_key(c, a)
            if not a.pre_active:
                c.activate(uid)
            out = {"id": uid, "key_hex": c.get(uid).value.hex()}
        elif a.op == "scylla-locate":
            out = scylla_locate(c, a)
        elif a.op == "key":
            out = {"id": a.id, "key_hex": c.get(a.id).value.hex()}
        elif a.op == "state":
            _, attrs = c.get_attributes(a.id, ["State"])
            out = {"id": a.id, "state": attrs[0].attribute_value.value.name}
        elif a.op == "states":
            out = {"states": {}}
            for uid in c.locate():
                _, attrs = c.get_attributes(uid, ["State"])
                out["states"][uid] = attrs[0].attribute_value.value.name
        elif a.op == "revoke":
            reason = {"compromise": enums.RevocationReasonCode.KEY_COMPROMISE,
                      "superseded": enums.RevocationReasonCode.SUPERSEDED}[a.reason]
            c.revoke(reason, a.id, revocation_message="sstable-rekey test")
            out = {"id": a.id, "revoked": reason.name}
        else:
            c.destroy(a.id)
            out = {"id": a.id, "destroyed": True}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
