"""Stage 10: start the face app (Edit / Select / Label tabs) on a loopback address.

    python run_app.py [--profile embedded] [--check] [--port 7860] [--schema stage2|v8] [--images-dir DIR] [--labels-csv CSV]

Options come from the profile's [app] section; every key is also a flag (see --help).
"""

from __future__ import annotations

import argparse

from common.config import add_config_arguments, config_to_dict, resolve_config
from common.errors import run_main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from face_app.launch import AppConfig, launch_from_repo

    parser.add_argument("--check", action="store_true",
                        help="load the generator, directions and faces, build the app, then exit without serving")
    add_config_arguments(parser, AppConfig, "app")
    args = parser.parse_args()
    config = resolve_config(AppConfig, "app", args)
    if args.dry_run:
        print(config_to_dict(config))
        return 0
    if args.check:
        from face_app.launch import build_from_repo

        _, editor = build_from_repo(config, strict=True)
        print(f"app ready: {len(editor.direction_sets)} direction set(s); not serving (--check)")
        return 0
    launch_from_repo(config)
    return 0


if __name__ == "__main__":
    run_main(main, lock_outputs=False)  # a reader: it may run beside the pipeline
