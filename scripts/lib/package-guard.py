#!/usr/bin/env python3
"""Run a command with the Debian packages that a new machine lacks hidden.

    python3 scripts/lib/package-guard.py -- COMMAND [ARG...]

A package installed on this machine by hand (or pulled in by one installed
by hand) can make the build or a test pass here and fail on a new machine of
the same kind. This guard runs COMMAND in a private mount namespace in which
every installed Debian package is invisible unless it is

  * on a new machine (scripts/lib/fresh-machine-packages.txt),
  * installed by scripts/install-test-deps.sh (scripts/lib/test-packages.txt),
  * or a dependency (Depends, Pre-Depends) of one of those, as apt would
    install it with --no-install-recommends.

Hiding is done with mounts only, so nothing on the machine changes and the
namespace, with everything in it, goes away with COMMAND:

  * a directory that only hidden packages own is covered by an empty,
    read-only tmpfs, so what is in it does not exist for COMMAND;
  * every other file of a hidden package is covered (bind mount) by a small
    shell script that names the package and exits 127: running it prints
    that, and a compiler or loader that reads it fails on its text. Each
    package has its own copies, on a tmpfs mounted with `strictatime`, so the
    guard can tell afterwards which hidden packages were read.

When COMMAND fails and packages were hidden, the guard names them (those
that were read first) and says where to add one. Its exit status is
COMMAND's.

It needs root (mount namespaces) and dpkg. Without dpkg (not a Debian
machine) it runs COMMAND as it is, and says so. Set LEASEHOLD_PACKAGE_GUARD
to anything to run COMMAND without it; the guard sets it for COMMAND, so a
nested .ci/run does not guard twice.
"""

import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRESH = "scripts/lib/fresh-machine-packages.txt"
INSTALLED_BY_SCRIPTS = "scripts/lib/test-packages.txt"
INSTALL_SCRIPT = "scripts/install-test-deps.sh"
DPKG = "/var/lib/dpkg"

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2


def say(message):
    print(f"package guard: {message}", file=sys.stderr, flush=True)


def read_names(path, installed_by_scripts):
    """Package names in one of the two lists (comments and blank lines skipped)."""
    names = set()
    with open(os.path.join(ROOT, path), encoding="utf-8") as lines:
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if installed_by_scripts:
                # `WHAT: PACKAGE...`
                names.update(line.split(":", 1)[1].split())
            else:
                names.add(line)
    return names


def installed_packages():
    """{name: [stanza, ...]} of installed packages, from dpkg's status file
    (one stanza per architecture)."""
    packages = {}
    with open(os.path.join(DPKG, "status"), encoding="utf-8", errors="replace") as status:
        for stanza in status.read().split("\n\n"):
            fields = {}
            last = None
            for line in stanza.splitlines():
                if line[:1] in (" ", "\t"):
                    if last:
                        fields[last] += " " + line.strip()
                    continue
                key, _, value = line.partition(":")
                fields[key] = value.strip()
                last = key
            if fields.get("Status", "").endswith(" installed") and "Package" in fields:
                packages.setdefault(fields["Package"], []).append(fields)
    return packages


def relation_names(field):
    """Every package name in a Depends-style field, alternatives included."""
    for clause in field.split(","):
        for alternative in clause.split("|"):
            name = re.split(r"[\s(:]", alternative.strip(), maxsplit=1)[0]
            if name:
                yield name


def dependency_closure(roots, packages):
    """`roots` and what they depend on, among installed packages. Every
    installed alternative of an `a | b` dependency counts, and a virtual
    package stands for each installed package that provides it: this may
    let a package through that a new machine would not have, never the
    reverse."""
    providers = {}
    for name, stanzas in packages.items():
        for stanza in stanzas:
            for provided in relation_names(stanza.get("Provides", "")):
                providers.setdefault(provided, set()).add(name)
    seen = set()
    todo = list(roots)
    while todo:
        wanted = todo.pop()
        for name in {wanted} | providers.get(wanted, set()):
            if name in packages and name not in seen:
                seen.add(name)
                for stanza in packages[name]:
                    todo.extend(relation_names(stanza.get("Depends", "")))
                    todo.extend(relation_names(stanza.get("Pre-Depends", "")))
    return seen


def canonical(path, cache={}):
    """`path` with its directory's symlinks resolved (/lib/x -> /usr/lib/x on
    a merged-/usr system), so that two spellings of one file compare equal.
    The last component is kept as it is: it may itself be a symlink."""
    path = os.path.normpath(path)
    parent, base = os.path.split(path)
    if parent not in cache:
        cache[parent] = os.path.realpath(parent)
    return os.path.join(cache[parent], base) if base else cache[parent]


def package_files(name, packages):
    """The paths dpkg recorded for `name` (every architecture), canonical."""
    paths = []
    for stanza in packages[name]:
        arch = stanza.get("Architecture", "")
        for candidate in (f"{name}:{arch}.list", f"{name}.list"):
            list_file = os.path.join(DPKG, "info", candidate)
            if os.path.exists(list_file):
                with open(list_file, encoding="utf-8", errors="surrogateescape") as lines:
                    paths.extend(canonical(line.rstrip("\n")) for line in lines if line.startswith("/"))
                break
    return paths


def diversions():
    """{path: (diverted to, diverting package)} from dpkg's diversions."""
    out = {}
    try:
        with open(os.path.join(DPKG, "diversions"), encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return out
    for index in range(0, len(lines) - 2, 3):
        out[canonical(lines[index])] = (canonical(lines[index + 1]), lines[index + 2])
    return out


def where(path, name, diverted):
    """Where package `name`'s file `path` is: moved aside to another path
    when a different package diverted it."""
    if path in diverted:
        target, diverter = diverted[path]
        if diverter != name:
            return target
    return path


def plan(hidden, packages):
    """What to cover: (directories, {package: [files]})."""
    diverted = diversions()
    visible_paths = set()
    for name in packages:
        if name not in hidden:
            for path in package_files(name, packages):
                visible_paths.add(where(path, name, diverted))
    # Every directory that holds something a visible package owns.
    visible_dirs = set()
    for path in visible_paths:
        parent = os.path.dirname(path)
        while parent not in visible_dirs and parent != "/":
            visible_dirs.add(parent)
            parent = os.path.dirname(parent)

    directories = set()
    files = {}
    for name in sorted(hidden):
        for path in package_files(name, packages):
            path = where(path, name, diverted)
            if path in visible_paths or path in visible_dirs or path == "/":
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                directories.add(path)
            elif os.path.isfile(path) and not os.path.islink(path):
                # A symlink needs no cover: what it points to is covered if
                # it is a hidden package's, and left alone if not.
                files.setdefault(name, []).append(path)
    # Cover only the outermost of nested directories; files under a covered
    # directory are gone with it.
    outermost = set()
    for path in sorted(directories, key=lambda p: p.count("/")):
        if not under_any(path, outermost):
            outermost.add(path)
    for name in list(files):
        files[name] = [p for p in files[name] if not under_any(p, outermost)]
        if not files[name]:
            del files[name]
    return sorted(outermost), files


def under_any(path, dirs):
    """Whether a proper ancestor of `path` is in `dirs`."""
    parent = os.path.dirname(path)
    while parent != "/":
        if parent in dirs:
            return True
        parent = os.path.dirname(parent)
    return False


def libc_mount():
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

    def mount(source, target, fstype, flags, data):
        encode = lambda s: None if s is None else os.fsencode(s)
        if libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"mount {target}: {os.strerror(errno)}")

    def umount(target):
        libc.umount2(os.fsencode(target), MNT_DETACH)

    return mount, umount


def sentinel_text(name):
    advice = (
        f"this file belongs to the Debian package {name}, which a new machine does not have "
        f"and {INSTALL_SCRIPT} does not install: if the build or the tests need it, add it to "
        f"{INSTALLED_BY_SCRIPTS}"
    )
    return f"#!/bin/sh\n# package guard: {advice}\necho 'package guard: {advice}' >&2\nexit 127\n"


def inside(hidden, command):
    """In the new mount namespace: cover, run, report."""
    packages = installed_packages()
    directories, files = plan(hidden, packages)
    mount, umount = libc_mount()
    staging = tempfile.mkdtemp(prefix="leasehold-package-guard.")
    mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=0755,size=1m")
    sentinels = {}
    for name in sorted(files):
        made = []
        for executable in (False, True):
            path = os.path.join(staging, f"{name}{'.x' if executable else ''}")
            with open(path, "w", encoding="utf-8") as f:
                f.write(sentinel_text(name))
            os.chmod(path, 0o755 if executable else 0o644)
            # An access time older than the change time: the first read
            # moves it forward, whatever the mount's atime policy.
            os.utime(path, (0, os.stat(path).st_mtime))
            made.append(path)
        sentinels[name] = made
    for path in directories:
        mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755,size=4k")
    covered = 0
    for name, paths in files.items():
        for path in paths:
            executable = os.stat(path).st_mode & 0o111
            mount(sentinels[name][1 if executable else 0], path, None, MS_BIND, None)
            covered += 1
    say(
        f"hiding {len(hidden)} Debian package(s) that a new machine lacks and no install "
        f"script installs: {', '.join(sorted(hidden))} ({len(directories)} director(ies), "
        f"{covered} file(s) covered)"
    )

    child = subprocess.Popen(command)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, _frame: child.send_signal(number))
    status = child.wait()
    code = status if status >= 0 else 128 - status

    read = sorted(name for name, paths in sentinels.items() if any(os.stat(p).st_atime > 0 for p in paths))
    if code != 0:
        others = sorted(set(hidden) - set(read))
        lines = [f"the command failed (exit {code}) with these Debian packages hidden:"]
        lines += [f"  {name}  (its files were read)" for name in read]
        lines += [f"  {name}" for name in others]
        lines.append(
            f"a new machine lacks them and {INSTALL_SCRIPT} does not install them: if the build or "
            f"the tests need one, add it to {INSTALLED_BY_SCRIPTS}"
        )
        say("\n".join(lines))
    elif read:
        say(f"passed, although files of hidden package(s) were read: {', '.join(read)}")
    umount(staging)
    os.rmdir(staging)
    return code


def main():
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--inside":
        hidden = [name for name in args[1].split(",") if name]
        return inside(hidden, args[args.index("--") + 1 :])
    if not args or args[0] != "--" or len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    command = args[1:]
    env = dict(os.environ, LEASEHOLD_PACKAGE_GUARD="on")
    if not os.path.exists(os.path.join(DPKG, "status")):
        say("no dpkg here, so not a Debian machine: running without the guard")
        os.execvpe(command[0], command, env)
    packages = installed_packages()
    allowed = read_names(FRESH, False) | dependency_closure(
        read_names(INSTALLED_BY_SCRIPTS, True), packages
    )
    hidden = sorted(set(packages) - allowed)
    if not hidden:
        say("every installed Debian package is on a new machine or installed by the install script")
        os.execvpe(command[0], command, env)
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        say(
            "hiding packages needs root and unshare(1); run as root, or set "
            "LEASEHOLD_PACKAGE_GUARD=off to run without the guard"
        )
        return 2
    inner = [unshare, "--mount", "--propagation", "private", "--", sys.executable, os.path.abspath(__file__)]
    inner += ["--inside", ",".join(hidden), "--", *command]
    os.execve(unshare, inner, env)


if __name__ == "__main__":
    sys.exit(main())
