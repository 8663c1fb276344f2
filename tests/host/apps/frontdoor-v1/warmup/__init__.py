"""Appends a line to the file named by the WARMUP_LOG app setting each time it runs."""

import os


def main(warmupContext) -> None:
    with open(os.environ["WARMUP_LOG"], "a") as log:
        log.write("warmed\n")
