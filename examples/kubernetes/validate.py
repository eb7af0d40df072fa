#!/usr/bin/env python3
"""Validates the manifests in this folder offline.

Core kinds (Deployment, Service, RBAC, ConfigMap) against the Kubernetes schemas that the
PyPI package kubernetes-validate ships; the gateway kinds (InferencePool, InferenceObjective,
Gateway, HTTPRoute) against the CRD schemas vendored in crds/. Unknown fields are errors
(as kubeconform -strict). Then the cross references: the pool selects the Deployment's pods
on its container port, the route and the objective name the pool, the pool names the
picker's Service and port.

    pip install jsonschema pyyaml kubernetes-validate
    python3 examples/kubernetes/validate.py
"""
import copy
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent
K8S_VERSION = "1.33.0"


def strict(schema):
    """Closes every object schema that lists its properties, unless it keeps unknown fields."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


def crd_schemas():
    out = {}
    for path in sorted((HERE / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            schema = strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
            # metadata is checked by the API server, not by the CRD schema.
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            out[(f"{group}/{v['name']}", kind)] = schema
    return out


def documents():
    for path in sorted(HERE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def validate_all():
    schemas = crd_schemas()
    errors, docs = [], []
    for name, doc in documents():
        where = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        docs.append(doc)
        key = (doc.get("apiVersion"), doc.get("kind"))
        try:
            if key in schemas:
                jsonschema.Draft7Validator(schemas[key]).validate(doc)
            else:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            print(f"ok    {where}")
        except Exception as e:  # each schema library raises its own error type
            errors.append(f"{where}: {getattr(e, 'message', e)}")
    return docs, errors


def cross_references(docs):
    by = {}
    for d in docs:
        by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    errs = []
    for pool_name, pool in by.get("InferencePool", {}).items():
        sel = pool["spec"]["selector"]["matchLabels"]
        ports = {p["number"] for p in pool["spec"]["targetPorts"]}
        matched = [
            d for d in by.get("Deployment", {}).values()
            if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        if not matched:
            errs.append(f"InferencePool {pool_name}: no Deployment's pods match {sel}")
        for d in matched:
            cports = {p["containerPort"] for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
            if not ports <= cports:
                errs.append(f"InferencePool {pool_name}: target ports {ports} not among {d['metadata']['name']}'s {cports}")
        epp = pool["spec"]["endpointPickerRef"]
        svc = by.get("Service", {}).get(epp["name"])
        if svc is None or epp["port"]["number"] not in {p["port"] for p in svc["spec"]["ports"]}:
            errs.append(f"InferencePool {pool_name}: no Service {epp['name']} with port {epp['port']['number']}")
    for route in by.get("HTTPRoute", {}).values():
        for rule in route["spec"]["rules"]:
            for ref in rule.get("backendRefs", []):
                if ref.get("kind") == "InferencePool" and ref["name"] not in by.get("InferencePool", {}):
                    errs.append(f"HTTPRoute {route['metadata']['name']}: no InferencePool {ref['name']}")
        for parent in route["spec"]["parentRefs"]:
            if parent["name"] not in by.get("Gateway", {}):
                errs.append(f"HTTPRoute {route['metadata']['name']}: no Gateway {parent['name']}")
    for obj in by.get("InferenceObjective", {}).values():
        if obj["spec"]["poolRef"]["name"] not in by.get("InferencePool", {}):
            errs.append(f"InferenceObjective {obj['metadata']['name']}: no InferencePool {obj['spec']['poolRef']['name']}")
    for cm in by.get("ConfigMap", {}).values():
        for key, text in cm.get("data", {}).items():
            if key.endswith(".yaml"):
                try:
                    yaml.safe_load(text)
                except yaml.YAMLError as e:
                    errs.append(f"ConfigMap {cm['metadata']['name']}/{key}: {e}")
    return errs


def main():
    docs, errors = validate_all()
    errors += cross_references(docs)
    for e in errors:
        print(f"FAIL  {e}", file=sys.stderr)
    print(f"{len(docs)} objects, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
