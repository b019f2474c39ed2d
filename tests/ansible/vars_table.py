"""Print docs/variables.md from the roles' meta/argument_specs.yml.

Regenerate with: python tests/ansible/vars_table.py > docs/variables.md
(tests/ansible/test_roles.py fails while the file differs from this output).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ORDER = ("jail_base_image", "jail_launcher", "jail_expiry", "jail_tenants", "jail_cluster", "jail_storage", "jail_packages")

HEADER = """\
# Role variables

Every variable of the roles, with its default: set them in the inventory
(`inventory/local/group_vars/jail_hosts.yml`, or your own inventory's
`group_vars/jail_hosts.yml`). Generated from the roles'
`meta/argument_specs.yml` by `python tests/ansible/vars_table.py > docs/variables.md`;
`tests/ansible/test_roles.py` fails when this file and the specs differ.
"""

FOOTER = """\

Each item of `jail_tenants_list` takes the `jail` module's options: `name`,
`uid`, `gid`, `layout` (`bind`|`overlay`), `image` (an id or `current`),
`hostname`, `limits` (`cpu`, `mem`, `procs`, `fsize`, `nofile`, `wall`),
`net`, `program`, `packages`, `service`, `shared_gid`, `admin`, and its own `state`,
`purge`, `force` (`ansible-doc -M library jail` describes each). A tenant
whose program runs as a service sets `service: true` and its own
`state: mounted` (the service runs only in a mounted jail, and `present`
leaves it as it is); expiry keeps such a jail mounted while the service runs,
so a second run changes nothing.
"""

# Ansible's documentation markup (as ansible-doc renders it) to Markdown.
MARKUP = (
    (re.compile(r"\b[COVEM]\(([^()]*)\)"), r"`\1`"),  # code, option, value, env var, module
    (re.compile(r"\bI\(([^()]*)\)"), r"*\1*"),
    (re.compile(r"\bB\(([^()]*)\)"), r"**\1**"),
    (re.compile(r"\bU\(([^()]*)\)"), r"<\1>"),
    (re.compile(r"\bL\(([^(),]*),\s*([^()]*)\)"), r"[\1](\2)"),
)


def markdown(text: str) -> str:
    """Ansible doc markup (C(...), O(...), V(...), I(...), ...) rendered as Markdown."""
    for pattern, replacement in MARKUP:
        text = pattern.sub(replacement, text)
    return text


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        value = json.dumps(value, separators=(", ", ": "))
    elif isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`" if str(value) else '`""`'


def specs() -> list[tuple[str, dict[str, dict[str, object]]]]:
    """(role, options) for every role with argument specs, in the order a host is provisioned."""
    roles = sorted(
        (p.parent.parent.name for p in REPO.glob("roles/*/meta/argument_specs.yml")),
        key=lambda r: (r not in ORDER, ORDER.index(r) if r in ORDER else 0, r),
    )
    result = []
    for role in roles:
        spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
        result.append((role, spec["argument_specs"]["main"].get("options", {})))
    return result


def table() -> str:
    lines = []
    for role, options in specs():
        lines += ["", f"## {role}", "", "| variable | default | description |", "| --- | --- | --- |"]
        for name, option in options.items():
            description = option.get("description", "")
            if isinstance(description, list):
                description = " ".join(description)
            description = markdown(description).replace("|", "\\|").replace("\n", " ")
            default = cell(option.get("default")).replace("|", "\\|")
            lines.append(f"| `{name}` | {default} | {description} |")
    return "\n".join(lines)


def document() -> str:
    return HEADER + table() + "\n" + FOOTER


if __name__ == "__main__":
    print(document(), end="")
