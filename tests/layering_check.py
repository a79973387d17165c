#!/usr/bin/env python3
"""Checks the tree's floors: each engine module includes internal headers only of the modules
below it (docs/architecture.md's table), front ends (nbd-server, api, vm) include no engine
internals, and the NBD server sees the engine only through strata/export.h and the I/O types it
names. Exits 1 naming every include that runs the wrong way.

  tests/layering_check.py [SOURCE_DIR]
"""
import os
import re
import sys

# Module -> the modules it may include (besides itself). Mirrors engine/CMakeLists.txt.
ENGINE = {
    "util": set(),
    "io": {"util"},
    "rados": {"util", "io"},
    "meta": {"util", "io", "rados"},
    "chunk": {"util", "io", "rados", "meta"},
    "crypto": {"util"},
    "qos": {"util"},
    "archive": {"util", "io"},
    "volume": {"util", "io", "rados", "meta", "chunk", "crypto", "qos"},
    "region": {"util", "io", "rados", "meta", "chunk", "crypto", "qos", "archive", "volume"},
    "image": {"util", "io", "rados", "meta", "chunk", "crypto", "qos", "archive", "volume", "region"},
    "copy": {"util", "io", "rados", "meta", "chunk", "crypto", "qos", "archive", "volume", "region", "image"},
    "store": {"util", "io", "rados", "meta", "chunk", "crypto", "qos", "archive", "volume", "region", "image",
              "copy"},
}
# Public headers the NBD server may include: the export interface and what it names, and the
# psktool key-file reader its TLS shares with the transfer protocol (no engine types).
NBD_PUBLIC = {"strata/export.h", "strata/io_ring.h", "strata/volume.h", "strata/env.h",
              "strata/io_limiter.h", "strata/psk_file.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def includes(path):
    with open(path, encoding="utf-8") as f:
        return INCLUDE.findall(f.read())


def sources(folder):
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            if name.endswith((".h", ".cc")):
                yield os.path.join(root, name)


def main():
    top = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    wrong = []
    engine_dir = os.path.join(top, "engine")
    present = {d for d in os.listdir(engine_dir) if os.path.isdir(os.path.join(engine_dir, d))}
    unknown = present - set(ENGINE) - {"include"}
    if unknown:
        wrong.append(f"engine/{sorted(unknown)}: modules missing from this check's table")
    for module, allowed in ENGINE.items():
        for path in sources(os.path.join(engine_dir, module)):
            for inc in includes(path):
                head = inc.split("/")[0]
                if head in ENGINE and head != module and head not in allowed:
                    wrong.append(f"{os.path.relpath(path, top)}: {inc} (a higher floor)")
    for path in sources(os.path.join(engine_dir, "include")):
        for inc in includes(path):
            if inc.split("/")[0] in ENGINE:
                wrong.append(f"{os.path.relpath(path, top)}: {inc} (a public header includes "
                             "an engine internal)")
    for front in ("nbd-server", "api", "vm"):
        for path in sources(os.path.join(top, front)):
            for inc in includes(path):
                if inc.split("/")[0] in ENGINE:
                    wrong.append(f"{os.path.relpath(path, top)}: {inc} (a front end reaches "
                                 "into the engine)")
                if front == "nbd-server" and inc.startswith("strata/") and inc not in NBD_PUBLIC:
                    wrong.append(f"{os.path.relpath(path, top)}: {inc} (the NBD server sees "
                                 "only strata/export.h)")
    for line in wrong:
        print("layering:", line)
    print(f"layering: {'clean' if not wrong else f'{len(wrong)} wrong includes'}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
