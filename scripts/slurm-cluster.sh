#!/usr/bin/env bash
# Placeholder until the Slurm issue lands: installs nothing, so Slurm tests skip.
exit 1
