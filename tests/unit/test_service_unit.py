"""The jail_launcher role's unit template and service.UNIT are one text (issue 19)."""

from __future__ import annotations

from jailtest import REPO
from jailyard.service import UNIT

TEMPLATE = REPO / "roles/jail_launcher/templates/etc/systemd/system/jailyard@.service.j2"


def test_the_roles_unit_template_is_service_unit() -> None:
    """The role renders the unit without importing Python: its template must say what UNIT says."""
    first, _, body = TEMPLATE.read_text().partition("\n")
    assert first == "{{ ansible_managed | comment }}"
    rendered = body.replace("{{ jail_launcher_lib_dir }}", "/LIB").replace("{{ jail_launcher_config_path }}", "/CONF")
    assert "{{" not in rendered and "{%" not in rendered
    assert rendered == UNIT.format(lib_dir="/LIB", config="/CONF")
