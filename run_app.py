"""Stage 10: start the face app (Edit / Select / Label tabs) on a loopback address."""

from __future__ import annotations

import argparse

from common.errors import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="embedded")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--seed", type=int, default=0, help="face shown first when no selection exists")
    args = parser.parse_args()
    from face_app.launch import launch_from_repo

    launch_from_repo(args.profile, args.host, args.port, args.seed)


if __name__ == "__main__":
    run_main(main)
