#!/bin/sh
# The demo package's program: `jailrun hello` runs it (config.json's program), as the tenant.
echo "$GREETING: I am $(id -un) in $(hostname), home $HOME"
