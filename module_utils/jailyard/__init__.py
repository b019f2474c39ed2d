"""jailyard: the one Python implementation of tenant jails (stdlib only).

Imported as ``ansible.module_utils.jailyard`` by the Ansible modules and as
``jailyard`` by the node CLI (jailctl) and the launcher's mount helper.
"""
