"""A small Confluent-compatible schema registry for machines without Docker.

    python schema_registry.py --brokers HOST:PORT --port PORT [--host 127.0.0.1] [--topic _schemas]

It serves the REST endpoints Kafka clients use, with the status and error codes Confluent
documents, and keeps every schema in the compacted topic `_schemas` in the key/value layout
Confluent Schema Registry and Karapace use, so it survives restarts and reads a topic they
wrote (and they read one it wrote):

    key   {"keytype": "SCHEMA", "subject": S, "version": V, "magic": 1}
    value {"subject": S, "version": V, "id": ID, "schema": TEXT, "deleted": false}
          ("schemaType" too when it is not AVRO)

Endpoints: POST /subjects/{s}/versions (register; the same schema again gives its id),
POST /subjects/{s} (look up), GET /schemas/ids/{id}, GET /schemas/ids/{id}/versions,
GET /schemas/ids/{id}/subjects, GET /schemas/types, GET /subjects, GET /subjects/{s}/versions,
GET /subjects/{s}/versions/{v|latest}, GET|PUT /config, GET|PUT /config/{s}.

Written down, not hidden: it checks that an Avro schema parses (error 42201 if not) but does
not enforce compatibility levels (it stores and reports them); it runs as one process (ids
come from what it has read of `_schemas`, so two instances on one topic could race); only
AVRO schemas are parsed, JSON and PROTOBUF are stored as given; no auth. The real registry
runs in docker-compose.yml for users with Docker.
"""
import argparse
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import fastavro
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

DEFAULT_TOPIC = "_schemas"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def subject_not_found(subject):
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


class Store:
    """The registry's state, rebuilt from `_schemas` at start and written through it."""

    def __init__(self, brokers, topic):
        self.lock = threading.Lock()
        self.brokers = brokers
        self.topic = topic
        self.schemas = {}  # id -> (schema text, schema type)
        self.subjects = {}  # subject -> {version: id}
        self.config = {None: "BACKWARD"}  # subject (None: global) -> compatibility level
        self.ensure_topic()
        self.producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True})
        self.replay()

    def ensure_topic(self):
        admin = AdminClient({"bootstrap.servers": self.brokers})
        if self.topic in admin.list_topics(timeout=30).topics:
            return
        future = admin.create_topics([NewTopic(self.topic, 1, 1, config={"cleanup.policy": "compact"})])
        try:
            future[self.topic].result(30)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise

    def replay(self):
        consumer = Consumer({"bootstrap.servers": self.brokers, "group.id": "schema-registry-replay",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=30)
        consumer.assign([TopicPartition(self.topic, 0, 0)])
        position = 0
        while position < high:
            message = consumer.poll(5)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            self.apply(message.key(), message.value())
            position = message.offset() + 1
        consumer.close()

    def apply(self, key, value):
        """Applies one `_schemas` record (as Confluent and Karapace do; unknown kinds are
        skipped)."""
        key = json.loads(key) if key else {}
        kind = key.get("keytype")
        if kind == "SCHEMA":
            subject, version = key["subject"], key["version"]
            if value is None:  # a hard delete
                self.subjects.get(subject, {}).pop(version, None)
                return
            v = json.loads(value)
            self.schemas.setdefault(v["id"], (v["schema"], v.get("schemaType", "AVRO")))
            if v.get("deleted"):
                self.subjects.get(subject, {}).pop(version, None)
            else:
                self.subjects.setdefault(subject, {})[version] = v["id"]
        elif kind == "CONFIG":
            level = json.loads(value).get("compatibilityLevel") if value else None
            if level:
                self.config[key.get("subject")] = level
            else:
                self.config.pop(key.get("subject"), None)

    def write(self, key, value):
        k, v = json.dumps(key).encode(), json.dumps(value).encode()
        self.producer.produce(self.topic, key=k, value=v)
        if self.producer.flush(30) != 0:
            raise RegistryError(500, 50001, f"could not write to the {self.topic} topic")
        self.apply(k, v)

    def register(self, subject, text, schema_type):
        canonical = canonical_form(text, schema_type)
        with self.lock:
            versions = self.subjects.get(subject, {})
            for version, schema_id in versions.items():
                if canonical_form(*self.schemas[schema_id]) == canonical:
                    return schema_id
            schema_id = next((i for i, s in self.schemas.items()
                              if canonical_form(*s) == canonical), None)
            if schema_id is None:
                schema_id = max(self.schemas, default=0) + 1
            version = max(versions, default=0) + 1
            value = {"subject": subject, "version": version, "id": schema_id,
                     "schema": text, "deleted": False}
            if schema_type != "AVRO":
                value["schemaType"] = schema_type
            self.write({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1},
                       value)
            return schema_id

    def version(self, subject, version):
        versions = self.subjects.get(subject)
        if not versions:
            raise subject_not_found(subject)
        if version in ("latest", "-1"):
            number = max(versions)
        else:
            try:
                number = int(version)
            except ValueError:
                raise RegistryError(422, 42202, "The specified version is not a valid version id.")
            if number not in versions:
                raise RegistryError(404, 40402, f"Version {version} not found.")
        return self.described(subject, number, versions[number])

    def described(self, subject, version, schema_id):
        text, schema_type = self.schemas[schema_id]
        out = {"subject": subject, "version": version, "id": schema_id, "schema": text}
        if schema_type != "AVRO":
            out["schemaType"] = schema_type
        return out

    def schema(self, schema_id):
        try:
            text, schema_type = self.schemas[int(schema_id)]
        except (KeyError, ValueError):
            raise RegistryError(404, 40403, "Schema not found")
        return text, schema_type


def canonical_form(text, schema_type):
    """The schema's JSON with sorted keys and no spaces, so the same schema written with other
    spacing is one schema; an Avro schema must parse."""
    if schema_type != "AVRO":
        return text
    try:
        parsed = json.loads(text)
        fastavro.parse_schema(parsed, _write_hint=False, _force=True)
    except Exception as e:  # fastavro raises many kinds for a bad schema
        raise RegistryError(422, 42201, f"Invalid schema: {e}")
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"))


ROUTES = []


def route(method, pattern):
    def register(handler):
        ROUTES.append((method, re.compile("^" + pattern + "$"), handler))
        return handler
    return register


@route("GET", r"/subjects")
def list_subjects(store, body):
    return sorted(s for s, versions in store.subjects.items() if versions)


@route("GET", r"/subjects/(?P<subject>[^/]+)/versions")
def list_versions(store, body, subject):
    versions = store.subjects.get(subject)
    if not versions:
        raise subject_not_found(subject)
    return sorted(versions)


@route("GET", r"/subjects/(?P<subject>[^/]+)/versions/(?P<version>[^/]+)")
def get_version(store, body, subject, version):
    return store.version(subject, version)


@route("GET", r"/subjects/(?P<subject>[^/]+)/versions/(?P<version>[^/]+)/schema")
def get_version_schema(store, body, subject, version):
    return json.loads(store.version(subject, version)["schema"])


@route("POST", r"/subjects/(?P<subject>[^/]+)/versions")
def register(store, body, subject):
    text, schema_type = schema_of(body)
    return {"id": store.register(subject, text, schema_type)}


@route("POST", r"/subjects/(?P<subject>[^/]+)")
def lookup(store, body, subject):
    text, schema_type = schema_of(body)
    canonical = canonical_form(text, schema_type)
    versions = store.subjects.get(subject)
    if not versions:
        raise subject_not_found(subject)
    for version, schema_id in sorted(versions.items()):
        if canonical_form(*store.schemas[schema_id]) == canonical:
            return store.described(subject, version, schema_id)
    raise RegistryError(404, 40403, "Schema not found")


@route("GET", r"/schemas/ids/(?P<schema_id>[^/]+)")
def get_schema(store, body, schema_id):
    text, schema_type = store.schema(schema_id)
    out = {"schema": text}
    if schema_type != "AVRO":
        out["schemaType"] = schema_type
    return out


@route("GET", r"/schemas/ids/(?P<schema_id>[^/]+)/versions")
def schema_versions(store, body, schema_id):
    store.schema(schema_id)
    return [{"subject": s, "version": v} for s, versions in sorted(store.subjects.items())
            for v, i in sorted(versions.items()) if i == int(schema_id)]


@route("GET", r"/schemas/ids/(?P<schema_id>[^/]+)/subjects")
def schema_subjects(store, body, schema_id):
    return sorted({v["subject"] for v in schema_versions(store, body, schema_id)})


@route("GET", r"/schemas/types")
def schema_types(store, body):
    return ["AVRO", "JSON", "PROTOBUF"]


@route("GET", r"/config")
def get_config(store, body):
    return {"compatibilityLevel": store.config[None]}


@route("GET", r"/config/(?P<subject>[^/]+)")
def get_subject_config(store, body, subject):
    if subject not in store.config:
        raise RegistryError(404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured")
    return {"compatibilityLevel": store.config[subject]}


@route("PUT", r"/config")
def put_config(store, body, subject=None):
    level = (body or {}).get("compatibility")
    levels = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
              "FULL", "FULL_TRANSITIVE")
    if level not in levels:
        raise RegistryError(422, 42203, "Invalid compatibility level. Valid values are none, "
                            "backward, forward, full, backward_transitive, forward_transitive, "
                            "and full_transitive")
    with store.lock:
        store.write({"keytype": "CONFIG", "subject": subject, "magic": 0},
                    {"compatibilityLevel": level})
    return {"compatibility": level}


@route("PUT", r"/config/(?P<subject>[^/]+)")
def put_subject_config(store, body, subject):
    return put_config(store, body, subject)


def schema_of(body):
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise RegistryError(422, 42201, "Invalid schema: the body needs a \"schema\" string")
    if body.get("references"):
        raise RegistryError(422, 42201, "Invalid schema: schema references are not supported here")
    return body["schema"], body.get("schemaType") or "AVRO"


class Handler(BaseHTTPRequestHandler):
    store = None
    protocol_version = "HTTP/1.1"

    def handle_any(self, method):
        path = urlparse(self.path).path.rstrip("/") or "/"
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                raise RegistryError(400, 400, "Unexpected character: the body is not JSON")
            for route_method, pattern, handler in ROUTES:
                match = pattern.match(path)
                if match and route_method == method:
                    args = {k: unquote(v) for k, v in match.groupdict().items()}
                    return self.reply(200, handler(self.store, body, **args))
            raise RegistryError(404, 404, "HTTP 404 Not Found")
        except RegistryError as e:
            self.reply(e.status, {"error_code": e.code, "message": e.message})
        except Exception as e:  # a bug here must not kill the server
            self.reply(500, {"error_code": 50001, "message": f"Error in the backend data store: {e}"})

    def reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def log_message(self, fmt, *args):
        sys.stderr.write("schema-registry: " + (fmt % args) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--topic", default=DEFAULT_TOPIC,
                        help="where schemas are kept (Confluent's kafkastore.topic)")
    args = parser.parse_args()
    Handler.store = Store(args.brokers, args.topic)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"schema registry on http://{args.host}:{args.port}, schemas in {args.topic} at "
          f"{args.brokers}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
