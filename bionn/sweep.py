"""`bionn-sweep resume DIR [override ...]`: launch the sweep in DIR again with its own recorded command.

The launcher (hydra_plugins/bionn_launcher) then submits only the jobs that have not
finished; extra overrides are added to the command (e.g. hydra.launcher.wait=false).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from bionn.sweep_folder import SweepFolder, SweepFolderError

SWEEP_DIR_KEYS = ("hydra.sweep.dir=", "+hydra.sweep.dir=", "++hydra.sweep.dir=")


def resume_command(folder: Path, extra: list[str]) -> tuple[list[str], Path]:
    """The recorded command with hydra.sweep.dir pointing at `folder`, and the folder it ran in."""
    record = SweepFolder(folder).record()
    command = record["command"]
    argv = [str(a) for a in command.get("argv") or []]
    cwd = Path(str(command.get("cwd") or ""))
    if not argv or not cwd.is_dir():
        raise SweepFolderError(
            f"{SweepFolder(folder) / 'sweep.json'}: its command ({' '.join(argv) or 'none'}) or the folder "
            f"it ran in ({cwd}) is missing; run the sweep's command again by hand with "
            f"hydra.sweep.dir={folder.resolve()}"
        )
    executable = command.get("executable") or sys.executable
    if not Path(executable).exists():
        executable = sys.executable
    args = [a for a in argv[1:] if not a.startswith(SWEEP_DIR_KEYS)]
    if "-m" not in args and "--multirun" not in args:
        args.insert(0, "-m")
    return [executable, argv[0], *args, f"hydra.sweep.dir={folder.resolve()}", *extra], cwd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bionn-sweep", description="Resume a sweep in its folder.")
    sub = parser.add_subparsers(dest="command", required=True)
    resume = sub.add_parser("resume", help="submit the sweep's unfinished jobs again (its recorded command)")
    resume.add_argument("folder", help="the sweep folder (it holds sweep.json)")
    resume.add_argument("overrides", nargs="*", help="added to the command, e.g. hydra.launcher.wait=false")
    resume.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    args = parser.parse_args(argv)
    try:
        cmd, cwd = resume_command(Path(args.folder), args.overrides)
    except SweepFolderError as err:
        print(f"bionn-sweep: error: {err}", file=sys.stderr)
        return 2
    print(f"bionn-sweep: in {cwd}: {shlex.join(cmd)}", flush=True)
    if args.dry_run:
        return 0
    return subprocess.run(cmd, cwd=cwd).returncode


if __name__ == "__main__":
    sys.exit(main())
