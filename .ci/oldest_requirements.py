"""Print the oldest release of every dependency that setup.cfg allows, as pip requirements: one home for each floor.

Each ``NAME>=X`` of ``[options] install_requires`` becomes ``NAME==X``; a dependency without a floor is an error, so
every floor setup.cfg states is one CI installs and tests (.ci/run, after the main suite). Upper bounds are dropped:
the floor is what is pinned.

    python .ci/oldest_requirements.py --skip torch torchvision --as-declared pytest pytest-xdist

--skip NAME: leave a dependency out (CI installs torch and torchvision itself, from this machine's disk).
--as-declared NAME: add a requirement of an extra as setup.cfg declares it, unpinned (the test runner).
Standard library only: it runs before anything is installed.
"""
from __future__ import annotations

import argparse
import configparser
import re
import sys
from pathlib import Path

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"
# NAME[extras] SPECIFIERS ; MARKER  (PEP 508 without URLs, which setup.cfg does not use)
REQUIREMENT = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<extras>\[[^\]]*\])?\s*"
                         r"(?P<specs>[^;]*?)\s*(?P<marker>;.*)?$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(value: str) -> list[str]:
    """The requirements of a multi-line setup.cfg value: configparser already drops full-line comments."""
    return [line.split(" #", 1)[0].strip() for line in value.splitlines() if line.strip()]


def pinned(line: str) -> str:
    """``name>=X,<Y`` -> ``name==X`` (extras and markers kept)."""
    match = REQUIREMENT.match(line)
    if not match:
        raise SystemExit(f"setup.cfg: cannot read the requirement {line!r}")
    floors = [spec.strip()[2:].strip() for spec in match["specs"].split(",") if spec.strip().startswith(">=")]
    if len(floors) != 1:
        raise SystemExit(f"setup.cfg: {line!r} needs exactly one floor (>=X) for CI to install and test")
    return f"{match['name']}{match['extras'] or ''}=={floors[0]}{' ' + match['marker'] if match['marker'] else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", nargs="*", default=[], metavar="NAME")
    parser.add_argument("--as-declared", nargs="*", default=[], metavar="NAME")
    parser.add_argument("--setup-cfg", default=str(SETUP_CFG))
    args = parser.parse_args(argv)
    cfg = configparser.ConfigParser()
    if not cfg.read(args.setup_cfg):
        raise SystemExit(f"no {args.setup_cfg}")
    skip = {normalize(n) for n in args.skip}
    out = []
    for line in requirement_lines(cfg["options"]["install_requires"]):
        name = normalize(REQUIREMENT.match(line)["name"])
        if name not in skip:
            out.append(pinned(line))
        skip.discard(name)
    if skip:
        raise SystemExit(f"--skip names what install_requires lacks: {sorted(skip)}")
    declared = {}
    for extra in cfg["options.extras_require"].values():
        for line in requirement_lines(extra):
            declared.setdefault(normalize(REQUIREMENT.match(line)["name"]), line)
    for name in args.as_declared:
        if normalize(name) not in declared:
            raise SystemExit(f"--as-declared {name}: no extra of setup.cfg declares it")
        out.append(declared[normalize(name)])
    sys.stdout.write("".join(f"{line}\n" for line in out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
