"""``diffuspeech plugins``: every registered component, its provider, and failed plugins."""

from __future__ import annotations

import json

from ..registry import KINDS, get_registry


def configure(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    registry = get_registry()
    if args.json:
        out = {
            kind: [r.as_dict() for r in registry.registrations(kind)] for kind in KINDS
        }
        out["failed"] = [f.as_dict() for f in registry.failures]
        print(json.dumps(out, indent=2))
        return 0
    for kind in KINDS:
        regs = registry.registrations(kind)
        print(f"{kind}:")
        if not regs:
            print("  (none)")
        for r in regs:
            print(f"  {r.name:<20} {r.package} {r.version}  [{r.as_dict()['class']}]")
    if registry.failures:
        print("failed plugins:")
        for f in registry.failures:
            print(f"  {f.plugin} ({f.package} {f.version}): {f.error}")
    return 0
