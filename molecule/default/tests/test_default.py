"""Verify a node converged by site.yml: the launcher, the demo jails, expiry, the read-only image, tenant storage."""

from __future__ import annotations

import json

# A launcher that hangs must fail the test, not the whole run. `timeout`
# exits 124 on a hang; the launcher's own 124 (mount step failed) prints a line.
JAILRUN = "timeout -k 5 60 /usr/local/sbin/jailrun"


def ran(run) -> str:
    if run.rc == 124 and not run.stderr:
        return "jailrun hung for 60 s"
    return f"exit {run.rc}: {run.stderr}"


NOBODY = 65534


def test_jailrun_is_setuid_root(host):
    jailrun = host.file("/usr/local/sbin/jailrun")
    assert jailrun.user == "root" and jailrun.group == "root"
    assert jailrun.mode == 0o4755


def test_the_installed_package_is_compiled(host):
    # By the role's handler, before any cold launch (the tests below that launch come later):
    # the first mount step after an install must not compile what it imports.
    helper = "/usr/local/lib/jailyard/jailyard_mount.py"
    run = host.run(f"/usr/bin/python3 -I -c 'import importlib.util as u; print(u.cache_from_source(\"{helper}\"))'")
    pyc = host.file(run.stdout.strip())
    assert pyc.exists and pyc.user == "root", run.stdout + run.stderr
    assert pyc.mtime >= host.file(helper).mtime


def test_jailrun_refuses_a_caller_that_is_not_allowed(host):
    run = host.run(f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups /usr/local/sbin/jailrun demo -- id")
    assert run.rc == 121, run.stdout + run.stderr  # contracts: 121 = caller not allowed
    assert "uid=" not in run.stdout


def test_config_is_root_owned_and_not_writable_by_others(host):
    conf = host.file("/etc/jailyard/jailyard.conf")
    assert conf.user == "root" and conf.mode == 0o644
    assert host.file("/etc/jailyard").mode == 0o755
    assert "allowed_callers = 0 33" in conf.content_string


def test_bind_jail_runs_a_command_as_its_tenant(host):
    run = host.run(f"{JAILRUN} demo -- sh -c 'id -u; id -g; hostname; cat /etc/debian_version'")
    assert run.rc == 0, ran(run)
    uid, gid, hostname, version = run.stdout.split()
    assert (uid, gid, hostname) == ("10001", "10001", "demo")
    assert version.startswith("12.")


def test_overlay_jail_runs_a_command_as_its_tenant(host):
    run = host.run(f"{JAILRUN} demo2 -- id -u")
    assert run.rc == 0, ran(run)
    assert run.stdout.strip() == "10002"


def test_launcher_mounts_an_unmounted_jail_on_demand(host):
    # What a launch after expiry does: the launcher runs the Python mount step.
    run = host.run(f"jailctl unmount demo >/dev/null && {JAILRUN} demo -- cat /etc/debian_version && jailctl --json status demo")
    assert run.rc == 0, ran(run)
    assert run.stdout.startswith("12.")
    assert json.loads(run.stdout.split("\n", 1)[1])["mounted"] is True


def test_a_cold_launch_is_served_by_the_socket_activated_mount_service(host):
    # jailyard-mount.socket listens; the first cold launch starts jailyard-mount.service, which mounts.
    assert host.run("systemctl is-active jailyard-mount.socket").stdout.strip() == "active"
    host.run("systemctl stop jailyard-mount.service")
    run = host.run(f"jailctl unmount demo >/dev/null && {JAILRUN} demo -- /bin/true")
    assert run.rc == 0, ran(run)
    assert host.run("systemctl is-active jailyard-mount.service").stdout.strip() == "active"
    if host.run("systemctl is-active systemd-journald").stdout.strip() == "active":
        log = host.run("journalctl -u jailyard-mount.service --no-pager -o cat")
        assert "jailyard-mount: mount demo:" in log.stdout, log.stdout


def test_rcu_grace_periods_are_expedited(host):
    # jail_launcher_rcu_expedited: a launch on an idle host must not wait ~20 ms in its cgroup join.
    assert host.file("/sys/kernel/rcu_expedited").content_string.strip() == "1"


def test_image_is_read_only_from_a_jail(host):
    run = host.run(f"{JAILRUN} demo -- sh -c 'echo x > /usr/tenant-was-here'")
    assert run.rc != 0
    rootfs = host.file("/var/lib/jailyard/images/current/rootfs")
    assert rootfs.is_directory
    assert not host.file("/var/lib/jailyard/images/current/rootfs/usr/tenant-was-here").exists


def test_overlay_writes_land_in_the_tenant_layer_not_the_image(host):
    # demo2 is a copy-on-write layer: its tenant may write where root put
    # writable directories (/tmp here); the base image must never see it.
    run = host.run(f"{JAILRUN} demo2 -- sh -c 'echo x > /tmp/overlay-probe && cat /tmp/overlay-probe'")
    assert run.rc == 0, ran(run)
    assert not host.file("/var/lib/jailyard/images/current/rootfs/tmp/overlay-probe").exists


def test_expiry_timer_is_installed_and_active(host):
    assert host.file("/etc/systemd/system/jailyard-expiry.service").exists
    assert host.run("systemctl is-enabled jailyard-expiry.timer").stdout.strip() == "enabled"
    assert host.run("systemctl is-active jailyard-expiry.timer").stdout.strip() == "active"
    verify = host.run("systemd-analyze verify /etc/systemd/system/jailyard-expiry.service /etc/systemd/system/jailyard-expiry.timer")
    assert "jailyard-expiry" not in verify.stdout + verify.stderr, verify.stdout + verify.stderr


def test_expiry_service_runs_clean(host):
    run = host.run("systemctl start jailyard-expiry.service && systemctl show -p Result --value jailyard-expiry.service")
    assert run.rc == 0, ran(run)
    assert run.stdout.strip() == "success"


def test_jailctl_lists_the_declared_tenants(host):
    run = host.run("jailctl --json list")
    assert run.rc == 0, ran(run)
    tenants = {t["name"]: t for t in json.loads(run.stdout)}
    assert set(tenants) == {"demo", "demo2", "capped", "hello"}  # hello: the example package (jail_packages_list)
    assert (tenants["demo"]["uid"], tenants["demo"]["layout"]) == (10001, "bind")
    assert (tenants["demo2"]["uid"], tenants["demo2"]["layout"]) == (10002, "overlay")
    assert (tenants["hello"]["package"]["name"], tenants["hello"]["package"]["result"]) == ("hello", "ok")


def test_the_example_package_runs_as_its_default_program(host):
    run = host.run(f"{JAILRUN} hello")
    assert run.rc == 0, ran(run)
    assert run.stdout.startswith("hello from a jailyard package: I am hello in hello"), run.stdout


def test_every_launch_and_refusal_is_in_the_audit_log(host):
    # The audit trail must not depend on a syslog daemon: one line per launch or refusal in the log file.
    log = host.file("/var/log/jailyard/launch.log")
    seen = len(log.content_string.splitlines()) if log.exists else 0
    marker = "audit-probe-molecule"
    run = host.run(f"{JAILRUN} demo -- /bin/echo {marker}; {JAILRUN} nosuch-{marker} -- true; true")
    assert marker in run.stdout, ran(run)
    assert (log.user, log.mode) == ("root", 0o640)
    new = log.content_string.splitlines()[seen:]
    assert any("launch: " in line and "tenant=demo " in line and "program=/bin/echo " in line for line in new), new
    assert any("refused: " in line and f"tenant=nosuch-{marker} " in line for line in new), new
    assert host.file("/etc/logrotate.d/jailyard").exists


def test_a_tenant_service_runs_under_its_systemd_unit_restarts_and_stops_at_unmount(host):
    # service: true on a systemd node: jailyard@NAME.service runs the supervisor loop, which
    # starts the program again after it is killed, and an unmount stops the unit first.
    program = '/bin/sh -c "while sleep 1; do :; done"'
    create = host.run(f"jailctl mount svc --uid 10009 --program '{program}' --service")
    try:
        assert create.rc == 0, create.stdout + create.stderr
        assert host.run("systemctl is-active jailyard@svc.service").stdout.strip() == "active"
        status = json.loads(host.run("jailctl --json status svc").stdout)
        assert status["service"] is True and status["service_status"]["running"] is True, status
        first = status["service_status"]["starts"]
        killed = host.run("pkill -KILL -u 10009 -x sh")
        assert killed.rc == 0, killed.stderr
        restarted = host.run(
            "for i in $(seq 1 60); do n=$(jailctl --json status svc | python3 -c "
            '\'import json,sys; print(json.load(sys.stdin)["service_status"].get("starts", 0))\'); '
            f'[ "$n" -gt {first} ] && exit 0; sleep 1; done; exit 1'
        )
        assert restarted.rc == 0, "the service did not start its program again within 60 s"
        down = host.run("jailctl unmount svc")
        assert down.rc == 0, down.stdout + down.stderr
        assert host.run("systemctl is-active jailyard@svc.service").stdout.strip() != "active"
    finally:
        host.run("jailctl remove svc --purge --force")


TENANTS = "/var/lib/jailyard/tenants"
# The storage role's own probe (roles/jail_storage/tasks/storage.yml): does this kernel mount an ext4
# with project quotas? (Not on a kernel built without CONFIG_QUOTA/CONFIG_QFMT_V2, as the CI VMs' is.)
QUOTA_PROBE = (
    "dir=$(mktemp -d /run/verify-quota-probe.XXXXXX) && truncate -s 320M $dir/img && mkfs.ext4 -q -O quota,project $dir/img"
    " && mkdir $dir/m && unshare --mount --propagation private sh -c 'mount -o loop,prjquota $0/img $0/m && umount $0/m' $dir;"
    " rc=$?; rm -rf $dir; exit $rc"
)


def test_the_storage_role_made_what_the_docs_say(host):
    # Quota-capable kernel: a loop-backed ext4 with prjquota at the tenants directory, in fstab.
    # Without quota support: the tenants directory left as it was (no mount, no image, no fstab
    # line), and the tenant with limits.disk got a volume of its own (docs/design.md).
    quota = host.run(QUOTA_PROBE).rc == 0
    mounted = host.run(f"findmnt -n -o FSTYPE,OPTIONS --mountpoint {TENANTS}")
    fstab = [line.split() for line in host.file("/etc/fstab").content_string.splitlines() if line.strip() and not line.startswith("#")]
    in_fstab = [f for f in fstab if f[1:2] == [TENANTS]]
    if quota:
        assert mounted.rc == 0 and "prjquota" in mounted.stdout, mounted.stdout + mounted.stderr
        assert in_fstab and in_fstab[0][0] == "/var/lib/jailyard/tenants.img", fstab
        assert host.file("/var/lib/jailyard/tenants.img").exists
        assert not host.file(f"{TENANTS}/capped/volume.img").exists
    else:
        assert mounted.rc == 1, f"{TENANTS} is a mount: {mounted.stdout}"
        assert in_fstab == [], fstab
        assert not host.file("/var/lib/jailyard/tenants.img").exists
        assert host.file(f"{TENANTS}/capped/volume.img").exists
        run = host.run(f"{JAILRUN} capped -- /bin/true")  # a cold launch attaches and mounts the volume
        assert run.rc == 0, ran(run)
        assert host.run(f"findmnt -n --mountpoint {TENANTS}/capped/vol").rc == 0  # the volume, mounted with the jail


def test_a_tenant_filling_its_disk_limit_stops_there_while_others_and_the_host_still_write(host):
    # capped (limits.disk 32M) writes 64 MiB: ENOSPC (its volume) or EDQUOT (its project quota) at
    # about 32 MiB; demo and the host then write 40 MiB each.
    fill = "dd if=/dev/zero of=/home/capped/big bs=64k count=1024; echo rc=$?; stat -c size=%s /home/capped/big"
    try:
        run = host.run(f"{JAILRUN} capped -- sh -c '{fill}'")
        assert run.rc == 0, ran(run)
        assert "rc=1" in run.stdout and ("No space left on device" in run.stderr or "Disk quota exceeded" in run.stderr), ran(run)
        size = int(run.stdout.split("size=")[1].split()[0])
        assert 16 << 20 < size <= 32 << 20, size
        stats = json.loads(host.run("jailctl stats --json capped").stdout)["capped"]
        # The limit is the quota's, or the volume's filesystem size (its metadata takes a little).
        assert 24 << 20 < stats["disk"]["limit"] <= 32 << 20 and stats["disk"]["full"] is True, stats
        other = host.run(f"{JAILRUN} demo -- sh -c 'dd if=/dev/zero of=/home/demo/more bs=64k count=640 && rm /home/demo/more'")
        assert other.rc == 0, ran(other)
        own = host.run("dd if=/dev/zero of=/var/lib/jailyard/host-probe bs=64k count=640 && rm /var/lib/jailyard/host-probe")
        assert own.rc == 0, own.stderr
    finally:
        host.run(f"{JAILRUN} capped -- rm -f /home/capped/big")
