"""Print the README's variables table from the roles' meta/argument_specs.yml (python tests/ansible/vars_table.py)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ORDER = ("jail_base_image", "jail_launcher", "jail_expiry", "jail_tenants", "jail_cluster")


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        value = json.dumps(value, separators=(", ", ": "))
    elif isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`" if str(value) else '`""`'


def table() -> str:
    roles = sorted(
        (p.parent.parent.name for p in REPO.glob("roles/*/meta/argument_specs.yml")),
        key=lambda r: (r not in ORDER, ORDER.index(r) if r in ORDER else 0, r),
    )
    lines = ["| variable | default | description |", "| --- | --- | --- |"]
    for role in roles:
        spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
        for name, option in spec["argument_specs"]["main"].get("options", {}).items():
            description = option.get("description", "")
            if isinstance(description, list):
                description = " ".join(description)
            description = description.replace("|", "\\|").replace("\n", " ")
            default = cell(option.get("default")).replace("|", "\\|")
            lines.append(f"| `{name}` | {default} | {description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
